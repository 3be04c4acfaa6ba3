"""Checks of an LVIS annotation file, run once where the file is read.

:func:`check_lvis_annotations` runs inside :func:`get_class_statistics`, which
the LVIS datasets, the losses, the samplers and the analysis tools all call,
so every consumer of a file sees the same verdict:

* a malformed entry raises ``ValueError`` naming the file, the entry, the
  field and the value (a box with a negative size, an annotation whose
  ``image_id`` is not an image, a string inside a ``bbox`` or a polygon, an
  image's ``neg_category_ids`` naming no category, ...);
* a well-formed annotation that mmdet's loader skips (``CocoDataset.
  parse_data_info``: a box under 1 px wide or high, with a zero area, outside
  its image, marked ``ignore``) or keeps as ignored (``iscrowd``) is counted
  in the class statistics, as LVIS's own ``image_count`` / ``instance_count``
  fields count it, and one warning says how many the dataset leaves out.
"""
import math
import warnings
from collections import Counter
from numbers import Real
from typing import Any, Dict, List

FREQUENCY_LETTERS = ('r', 'c', 'f')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and \
        math.isfinite(value)


def _entry(field: str, index: int, item: Any) -> str:
    if isinstance(item, dict) and 'id' in item:
        return f'{field}[{index}] (id={item["id"]!r})'
    return f'{field}[{index}]'


def _check_top_level(ann: Any, source: str) -> None:
    if not isinstance(ann, dict):
        raise ValueError(f'{source}: the file holds a {type(ann).__name__}, '
                         f'not an LVIS dict with images, annotations and '
                         f'categories')
    for name in ('images', 'annotations', 'categories'):
        if name not in ann:
            raise ValueError(f"{source}: field '{name}' is missing")
        if not isinstance(ann[name], list):
            raise ValueError(f"{source}: field '{name}' must be a list, got "
                             f'{type(ann[name]).__name__}')
    if not ann['categories']:
        raise ValueError(f"{source}: field 'categories' is empty")


def _unique_ids(items: List[Any], field: str, source: str) -> Dict[int, Any]:
    """id -> item of a list of dicts with unique integer ids."""
    by_id: Dict[int, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f'{source}: {field}[{i}] must be a dict, got '
                             f'{item!r}')
        if not _is_int(item.get('id')):
            raise ValueError(f'{source}: {_entry(field, i, item)}: '
                             f'id={item.get("id")!r} must be an integer')
        if item['id'] in by_id:
            raise ValueError(f"{source}: {_entry(field, i, item)}: the id "
                             f'{item["id"]} appears twice in {field!r}')
        by_id[item['id']] = item
    return by_id


def _check_categories(categories: List[Any], source: str) -> Dict[int, Any]:
    by_id = _unique_ids(categories, 'categories', source)
    with_letter = ['frequency' in cat for cat in categories]
    if any(with_letter) and not all(with_letter):
        # letters are taken from the file only when every category has one
        i = with_letter.index(False)
        raise ValueError(
            f"{source}: {_entry('categories', i, categories[i])} has no "
            f"'frequency' while {sum(with_letter)} of {len(categories)} "
            f"categories have one; give every category its letter or none")
    for i, cat in enumerate(categories):
        if i and cat['id'] < categories[i - 1]['id']:
            # mmdet's loader and evaluator label classes in file order, the
            # class statistics by id: the two agree only on a sorted list
            raise ValueError(
                f"{source}: {_entry('categories', i, cat)} follows id "
                f"{categories[i - 1]['id']}: 'categories' must be listed in "
                f'ascending id order')
        letter = cat.get('frequency', 'f')
        if letter not in FREQUENCY_LETTERS:
            raise ValueError(f"{source}: {_entry('categories', i, cat)}: "
                             f'frequency={letter!r} must be one of '
                             f'{FREQUENCY_LETTERS}')
    return by_id


def _check_images(images: List[Any], categories: Dict[int, Any],
                  source: str) -> Dict[int, Any]:
    by_id = _unique_ids(images, 'images', source)
    for i, img in enumerate(images):
        for name in ('width', 'height'):
            if name in img and not (_is_number(img[name]) and img[name] > 0):
                raise ValueError(f"{source}: {_entry('images', i, img)}: "
                                 f'{name}={img[name]!r} must be a positive '
                                 f'number')
        # the evaluator reads them: LVIS's federated ground truth
        for name in ('neg_category_ids', 'not_exhaustive_category_ids'):
            ids = img.get(name, [])
            where = f"{source}: {_entry('images', i, img)}: {name}"
            if not isinstance(ids, list):
                raise ValueError(f'{where}={ids!r} must be a list of '
                                 f"category ids")
            for cat_id in ids:
                if not (_is_int(cat_id) and cat_id in categories):
                    raise ValueError(f'{where} holds {cat_id!r}, not an id '
                                     f"in 'categories'")
    return by_id


def _is_polygon(polygon: Any) -> bool:
    """A list of finite numbers; summed in C, as LVIS holds about 10^8
    coordinates (a string or None makes ``sum`` raise, NaN / inf make the
    sum not finite)."""
    if not isinstance(polygon, list):
        return False
    try:
        return math.isfinite(sum(polygon))
    except TypeError:
        return False


def _is_rle(mask: Any) -> bool:
    size = mask.get('size')
    return isinstance(mask.get('counts'), (list, str)) and \
        isinstance(size, list) and len(size) == 2 and all(map(_is_int, size))


def _check_segmentation(segmentation: Any, where: str) -> None:
    """Polygons (lists of numbers) or an RLE dict (``counts``, ``size``),
    as mmdet's ``LoadAnnotations`` reads them."""
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if not _is_polygon(polygon):
                raise ValueError(f'{where}: segmentation polygon '
                                 f'{polygon!r} must be a list of numbers '
                                 f'[x1, y1, x2, y2, ...]')
    elif not (isinstance(segmentation, dict) and _is_rle(segmentation)):
        raise ValueError(f'{where}: segmentation={segmentation!r} must be a '
                         f"list of polygons or an RLE dict with 'counts' "
                         f"and 'size' [height, width]")


def _check_annotation(i: int, ann: Any, images: Dict[int, Any],
                      categories: Dict[int, Any], source: str) -> None:
    where = f'{source}: {_entry("annotations", i, ann)}'
    if not isinstance(ann, dict):
        raise ValueError(f'{where} must be a dict, got {ann!r}')
    # (True == 1 as a dict key: a bool must not pass as an id)
    if not (_is_int(ann.get('image_id')) and ann['image_id'] in images):
        raise ValueError(f"{where}: image_id={ann.get('image_id')!r} is "
                         f"not an id in 'images'")
    if not (_is_int(ann.get('category_id'))
            and ann['category_id'] in categories):
        raise ValueError(f'{where}: category_id='
                         f"{ann.get('category_id')!r} is not an id in "
                         f"'categories'")
    bbox = ann.get('bbox')
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(map(_is_number, bbox))):
        raise ValueError(f'{where}: bbox={bbox!r} must be 4 finite '
                         f'numbers [x, y, w, h]')
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f'{where}: bbox={bbox} has a negative width or '
                         f'height')
    area = ann.get('area', 1)
    if not (_is_number(area) and area >= 0):
        raise ValueError(f'{where}: area={area!r} must be a finite number '
                         f'>= 0')
    # mmdet's parser reads a missing or null segmentation as no mask
    if ann.get('segmentation') is not None:
        _check_segmentation(ann['segmentation'], where)


def loads_instance_mask(mask: Any, poly2mask: bool) -> bool:
    """Whether mmdet's ``LoadAnnotations`` loads a checked ``segmentation``
    as a mask (else it ignores the instance): polygons if one has an even
    number >= 6 of coordinates; an RLE only with ``poly2mask``."""
    if isinstance(mask, dict):
        return poly2mask
    return any(len(polygon) >= 6 and len(polygon) % 2 == 0
               for polygon in mask)


def loader_skip_reason(ann: dict, image: dict) -> str:
    """Why mmdet's ``CocoDataset.parse_data_info`` does not train on an
    annotation as a labelled instance ('' if it does)."""
    if ann.get('ignore', False):
        return 'marked ignore'
    x, y, w, h = ann['bbox']
    width, height = image.get('width', math.inf), image.get('height',
                                                             math.inf)
    inside_w = max(0, min(x + w, width) - max(x, 0))
    inside_h = max(0, min(y + h, height) - max(y, 0))
    if inside_w * inside_h == 0:
        return 'outside its image'
    if ann.get('area', 1) <= 0 or w < 1 or h < 1:
        return 'under 1 px wide or high, or zero area'
    if ann.get('iscrowd', False):
        return 'crowd (an ignored region)'
    return ''


def check_lvis_annotations(ann: Any, source: str) -> Dict[str, int]:
    """Check a loaded LVIS annotation dict; raise on malformed entries.

    Returns:
        dict: reason -> number of annotations that mmdet's loader leaves out
        (or keeps as ignored); these were also logged as one warning.
    """
    _check_top_level(ann, source)
    categories = _check_categories(ann['categories'], source)
    images = _check_images(ann['images'], categories, source)
    annotations = ann['annotations']
    _unique_ids(annotations, 'annotations', source)
    skipped: Counter = Counter()
    for i, item in enumerate(annotations):
        _check_annotation(i, item, images, categories, source)
        reason = loader_skip_reason(item, images[item['image_id']])
        if reason:
            skipped[reason] += 1
    if skipped:
        detail = ', '.join(f'{n} {reason}' for reason, n in
                           sorted(skipped.items()))
        warnings.warn(
            f'{source}: {sum(skipped.values())} of {len(annotations)} '
            f"annotations are counted in the class statistics (as LVIS's "
            f'image_count / instance_count count them) but not trained on '
            f"by mmdet's loader: {detail}",
            stacklevel=2)
    return dict(skipped)
