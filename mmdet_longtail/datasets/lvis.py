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
* when the pipeline loads masks, an annotation that mmdet's parser keeps
  but that has no ``segmentation`` raises such an error (mmdet fails later
  with ``KeyError: 'mask'``), and the instances whose mask mmdet's
  ``LoadAnnotations`` ignores (no polygon of 6 or more coordinates) are
  counted in one warning.
"""
import os
import os.path as osp
import warnings
from collections import defaultdict
from typing import Any, List, Optional

from mmdet.datasets import LVISV05Dataset, LVISV1Dataset
from mmdet.registry import DATASETS
from .class_stats import load_lvis_with_statistics
from .lvis_checks import loads_instance_mask


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
        mask_loader = self._mask_loader()
        if mask_loader is not None:
            self._check_masks(data_list, mask_loader.poly2mask)
        if self.check_images:
            for info in data_list:
                self._check_image_file(info)
        return data_list

    def _check_image_file(self, info: dict) -> None:
        try:
            size = os.stat(info['img_path']).st_size
        except FileNotFoundError:
            raise FileNotFoundError(
                f'{self.ann_file}: image id {info["img_id"]} is listed but '
                f'its file is missing: {info["img_path"]}') from None
        if size == 0:
            # OpenCV's error on it names no file
            raise ValueError(f'{self.ann_file}: image id {info["img_id"]}: '
                             f'its file is empty: {info["img_path"]}')

    def _mask_loader(self) -> Optional[Any]:
        """The pipeline's transform that loads instance masks
        (``LoadAnnotations`` with ``with_mask=True``), if any."""
        for transform in getattr(self.pipeline, 'transforms', []):
            if getattr(transform, 'with_mask', False):
                return transform
        return None

    def _check_masks(self, data_list: List[dict], poly2mask: bool) -> None:
        """Every instance mmdet's parser kept has a segmentation (mmdet
        fails later with ``KeyError: 'mask'``); one warning counts those
        ``LoadAnnotations`` ignores, which the class statistics count."""
        unloaded, total = [], 0
        for info in data_list:
            for instance in info['instances']:
                if 'mask' not in instance:
                    category = self.cat_ids[instance['bbox_label']]
                    raise ValueError(
                        f"{self.ann_file}: image id {info['img_id']}: the "
                        f'annotation of category id {category} with box '
                        f"{instance['bbox']} (x1, y1, x2, y2) has no "
                        f"'segmentation', and the pipeline loads masks "
                        f'(LoadAnnotations with with_mask=True)')
                if instance['ignore_flag']:
                    continue  # crowd: already reported by the reader
                total += 1
                if not loads_instance_mask(instance['mask'], poly2mask):
                    unloaded.append(info['img_id'])
        if unloaded:
            rle = '' if poly2mask else '; with poly2mask=False, no RLE'
            warnings.warn(
                f'{self.ann_file}: {len(unloaded)} of {total} instances (in '
                f'images {sorted(set(unloaded))[:5]}) have no mask that '
                f"mmdet's LoadAnnotations loads (no polygon of an even "
                f'number >= 6 of coordinates{rle}): it ignores them when it '
                f'loads masks, but the class statistics count them',
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
