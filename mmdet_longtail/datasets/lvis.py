"""LVIS datasets that keep what long-tail methods need and fail clearly.

mmdet's ``LVISV05Dataset`` / ``LVISV1Dataset`` drop ``neg_category_ids`` and
``not_exhaustive_category_ids``. Their class names are fixed to the 1203 (or
1230) LVIS names, even for a file with other categories. Their errors on bad
input are generic. These subclasses change only that:

* the class names come from the annotation file's ``categories``. If
  ``metainfo=dict(classes=...)`` is given, it must match the file;
* each ``data_info`` keeps ``neg_category_ids`` and
  ``not_exhaustive_category_ids``;
* the file is parsed once, and checked by the one reader
  (``load_lvis_with_statistics``): a malformed entry, a missing file, a file
  without ``categories`` and an image listed but missing (or empty) on disk
  raise errors that name the file, field and value; entries mmdet's loader
  skips are counted in one warning;
* when the pipeline loads masks, an annotation without ``segmentation``
  raises such an error (mmdet fails later with ``KeyError: 'mask'``), and
  the instances mmdet ignores for want of a polygon of 6 or more coordinates
  are counted in one warning.
"""
import os.path as osp
import warnings
from collections import defaultdict
from typing import List, Optional

from mmdet.datasets import LVISV05Dataset, LVISV1Dataset
from mmdet.registry import DATASETS
from .class_stats import load_lvis_with_statistics
from .lvis_checks import has_valid_polygon


class _LongTailLVISMixin:
    """Shared checks and extra fields of the LVIS v0.5 / v1 datasets."""

    def __init__(self,
                 *args,
                 check_images: bool = True,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        self.check_images = check_images
        self._metainfo_from_user = bool(metainfo) and 'classes' in metainfo
        super().__init__(*args, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        """mmdet's LVIS data list, built from the file parsed once (mmdet's
        own ``load_data_list`` parses it again through lvis-api)."""
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'{type(self).__name__}: annotation file not found: '
                f'{self.ann_file} (see data/README.md for the layout)')
        # the one reader checks the file (once per process) and names the
        # file, entry, field and value of a malformed entry
        ann, _ = load_lvis_with_statistics(self.ann_file)
        self._set_classes(ann['categories'])
        if self.loads_masks():
            self._check_masks(ann['annotations'])
        # the index lvis-api builds: annotations per image and image ids
        # per category (one per annotation), both in file order
        anns_of_image = defaultdict(list)
        self.cat_img_map = defaultdict(list)
        for item in ann['annotations']:
            anns_of_image[item['image_id']].append(item)
            self.cat_img_map[item['category_id']].append(item['image_id'])
        data_list = []
        for img in ann['images']:
            raw_img_info = dict(
                img, img_id=img['id'], file_name=self.image_file(img))
            try:
                data_list.append(
                    self.parse_data_info(
                        dict(raw_ann_info=anns_of_image[img['id']],
                             raw_img_info=raw_img_info)))
            except KeyError as e:
                # mmdet's parser needs each image's height / width and
                # each annotation's area, which the statistics do not
                raise ValueError(
                    f'{self.ann_file}: the image with id {img["id"]} or one '
                    f'of its annotations has no field {e}') from e
        if self.check_images:
            for info in data_list:
                if not osp.isfile(info['img_path']):
                    raise FileNotFoundError(
                        f'{self.ann_file}: image id {info["img_id"]} is '
                        f'listed but its file is missing: {info["img_path"]}')
                if osp.getsize(info['img_path']) == 0:
                    # OpenCV's error on it names no file
                    raise ValueError(
                        f'{self.ann_file}: image id {info["img_id"]}: its '
                        f'file is empty: {info["img_path"]}')
        return data_list

    def loads_masks(self) -> bool:
        """Whether the pipeline loads instance masks (``LoadAnnotations``
        with ``with_mask=True``)."""
        return any(
            getattr(transform, 'with_mask', False)
            for transform in getattr(self.pipeline, 'transforms', []))

    def _check_masks(self, annotations: List[dict]) -> None:
        """Every annotation has a segmentation (checked well-formed by the
        reader); one warning counts those mmdet's ``LoadAnnotations``
        ignores, which the class statistics count."""
        without_polygon = []
        for i, item in enumerate(annotations):
            if not item.get('segmentation'):
                raise ValueError(
                    f"{self.ann_file}: annotations[{i}] (id={item['id']}) has "
                    f"no 'segmentation' (got {item.get('segmentation')!r}), "
                    f'and the pipeline loads masks (LoadAnnotations with '
                    f'with_mask=True)')
            if not has_valid_polygon(item['segmentation']):
                without_polygon.append(item['id'])
        if without_polygon:
            warnings.warn(
                f'{self.ann_file}: {len(without_polygon)} of '
                f'{len(annotations)} annotations (ids '
                f'{without_polygon[:5]}) have no polygon of an even number '
                f">= 6 of coordinates: mmdet's LoadAnnotations ignores them "
                f'when it loads masks, but the class statistics count them',
                stacklevel=2)

    def _set_classes(self, categories: List[dict]) -> None:
        """Labels in the file's category order, as mmdet's loader and
        evaluator give them; class names from the file."""
        for cat in categories:
            if not isinstance(cat.get('name'), str):
                raise ValueError(
                    f"{self.ann_file}: the category with id {cat['id']} has "
                    f"no string 'name' (got {cat.get('name')!r})")
        self.cat_ids = [cat['id'] for cat in categories]
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        file_classes = tuple(cat['name'] for cat in categories)
        given = self._metainfo.get('classes')
        if self._metainfo_from_user and tuple(given) != file_classes:
            raise ValueError(
                f'{self.ann_file}: metainfo classes ({len(given)} names) do '
                f"not match the file's 'categories' "
                f'({len(file_classes)} names)')
        self._metainfo['classes'] = file_classes

    def image_file(self, img: dict) -> str:
        """The image's path under the data prefix."""
        raise NotImplementedError

    def _image_field(self, img: dict, name: str) -> str:
        if not isinstance(img.get(name), str):
            raise ValueError(
                f"{self.ann_file}: the image with id {img['id']} has no "
                f"string '{name}' (got {img.get(name)!r}); "
                f'{type(self).__name__} finds each image through it')
        return img[name]

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        img_info = raw_data_info['raw_img_info']
        data_info['neg_category_ids'] = img_info.get('neg_category_ids', [])
        data_info['not_exhaustive_category_ids'] = img_info.get(
            'not_exhaustive_category_ids', [])
        return data_info


@DATASETS.register_module()
class LVISV1LTDataset(_LongTailLVISMixin, LVISV1Dataset):
    """LVIS v1 (file names from ``coco_url``) for long-tail training.

    Args:
        check_images (bool): check that every listed image exists on disk
            when the annotations are loaded. Default: True.
        **kwargs: arguments of mmdet's ``LVISV1Dataset``.
    """

    def image_file(self, img: dict) -> str:
        # LVIS v1 names the split in coco_url, e.g.
        # http://images.cocodataset.org/train2017/000000391895.jpg
        return self._image_field(img, 'coco_url').replace(
            'http://images.cocodataset.org/', '')


@DATASETS.register_module()
class LVISV05LTDataset(_LongTailLVISMixin, LVISV05Dataset):
    """LVIS v0.5 (COCO 2017 file names) for long-tail training.

    Args:
        check_images (bool): check that every listed image exists on disk
            when the annotations are loaded. Default: True.
        **kwargs: arguments of mmdet's ``LVISV05Dataset``.
    """

    def image_file(self, img: dict) -> str:
        # COCO 2014 names (COCO_train2014_000000000000.jpg) -> the 2017
        # name (000000000000.jpg), as mmdet's LVISV05Dataset does
        name = self._image_field(img, 'file_name')
        return name[-16:] if name.startswith('COCO') else name
