"""LVIS datasets that keep what long-tail methods need and fail clearly.

mmdet's ``LVISV05Dataset`` / ``LVISV1Dataset`` drop ``neg_category_ids`` and
``not_exhaustive_category_ids``. Their class names are fixed to the 1203 (or
1230) LVIS names, even for a file with other categories. Their errors on bad
input are generic. These subclasses change only that:

* the class names come from the annotation file's ``categories``. If
  ``metainfo=dict(classes=...)`` is given, it must match the file;
* each ``data_info`` keeps ``neg_category_ids`` and
  ``not_exhaustive_category_ids``;
* the file is checked by the one reader (``get_class_statistics``): a
  malformed entry, a missing file, a file without ``categories`` and an
  image listed but missing on disk raise errors that name the file, field and
  value; entries mmdet's loader skips are counted in one warning.
"""
import os.path as osp
from typing import List

from mmdet.datasets import LVISV05Dataset, LVISV1Dataset
from mmdet.registry import DATASETS
from .class_stats import get_class_statistics


class _LongTailLVISMixin:
    """Shared checks and extra fields of the LVIS v0.5 / v1 datasets."""

    def __init__(self, *args, check_images: bool = True, **kwargs) -> None:
        self.check_images = check_images
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'{type(self).__name__}: annotation file not found: '
                f'{self.ann_file} (see data/README.md for the layout)')
        # the one reader checks the file (once per process) and names the
        # file, entry, field and value of a malformed entry
        get_class_statistics(self.ann_file)
        self._file_classes = None
        try:
            data_list = super().load_data_list()
        except KeyError as e:
            # lvis-api indexes 'images', 'annotations' and 'categories'
            raise ValueError(f'{self.ann_file}: field {e} is missing') from e
        if not self._file_classes:
            raise ValueError(f"{self.ann_file}: field 'categories' is empty "
                             f"or no image is listed in 'images'")
        given = self._metainfo.get('classes')
        if self._metainfo_from_user and tuple(given) != self._file_classes:
            raise ValueError(
                f'{self.ann_file}: metainfo classes ({len(given)} names) do '
                f"not match the file's 'categories' "
                f'({len(self._file_classes)} names)')
        self._metainfo['classes'] = self._file_classes
        if self.check_images:
            for info in data_list:
                if not osp.isfile(info['img_path']):
                    raise FileNotFoundError(
                        f'{self.ann_file}: image id {info["img_id"]} is '
                        f'listed but its file is missing: {info["img_path"]}')
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        if self._file_classes is None:
            # self.lvis exists only while the parent loads the file
            self._file_classes = tuple(
                self.lvis.cats[c]['name'] for c in self.cat_ids)
        data_info = super().parse_data_info(raw_data_info)
        img_info = raw_data_info['raw_img_info']
        data_info['neg_category_ids'] = img_info.get('neg_category_ids', [])
        data_info['not_exhaustive_category_ids'] = img_info.get(
            'not_exhaustive_category_ids', [])
        return data_info

    @classmethod
    def _user_gave_classes(cls, metainfo) -> bool:
        return bool(metainfo) and 'classes' in metainfo


@DATASETS.register_module()
class LVISV1LTDataset(_LongTailLVISMixin, LVISV1Dataset):
    """LVIS v1 (file names from ``coco_url``) for long-tail training.

    Args:
        check_images (bool): check that every listed image exists on disk
            when the annotations are loaded. Default: True.
        **kwargs: arguments of mmdet's ``LVISV1Dataset``.
    """

    def __init__(self, *args, metainfo=None, **kwargs) -> None:
        self._metainfo_from_user = self._user_gave_classes(metainfo)
        super().__init__(*args, metainfo=metainfo, **kwargs)


@DATASETS.register_module()
class LVISV05LTDataset(_LongTailLVISMixin, LVISV05Dataset):
    """LVIS v0.5 (COCO 2017 file names) for long-tail training.

    Args:
        check_images (bool): check that every listed image exists on disk
            when the annotations are loaded. Default: True.
        **kwargs: arguments of mmdet's ``LVISV05Dataset``.
    """

    def __init__(self, *args, metainfo=None, **kwargs) -> None:
        self._metainfo_from_user = self._user_gave_classes(metainfo)
        super().__init__(*args, metainfo=metainfo, **kwargs)
