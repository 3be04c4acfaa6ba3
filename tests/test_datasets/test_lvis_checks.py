"""The one reader of an annotation file checks it: a malformed entry raises
an error naming the file, the entry, the field and the value, through the
class statistics and through the LVIS dataset alike; entries mmdet's loader
skips are counted in the statistics (as LVIS counts them) and reported in
one warning with counts."""
import copy
import json
import warnings

import pytest

from mmdet_longtail.datasets import get_class_statistics
from mmdet_longtail.datasets.lvis_checks import check_lvis_annotations
from test_bad_input import build_dataset


def small_lvis() -> dict:
    """2 images (100 x 80), 2 categories, 3 valid annotations."""
    images = [dict(id=1, width=100, height=80, coco_url='x/1.jpg'),
              dict(id=2, width=100, height=80, coco_url='x/2.jpg')]
    categories = [dict(id=1, name='a', frequency='r'),
                  dict(id=2, name='b', frequency='f')]
    annotations = [
        dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 20, 20],
             area=400),
        dict(id=2, image_id=1, category_id=2, bbox=[0, 0, 5, 5], area=25),
        dict(id=3, image_id=2, category_id=2, bbox=[1, 2, 3, 4], area=12),
    ]
    return dict(images=images, annotations=annotations,
                categories=categories)


def write(tmp_path, data, name='ann.json') -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def edited(edit) -> dict:
    data = small_lvis()
    edit(data)
    return data


def set_ann(field, value, index=0):
    return lambda d: d['annotations'][index].__setitem__(field, value)


MALFORMED = {
    'not a dict': (lambda d: d.clear(), "field 'images' is missing"),
    'no annotations': (lambda d: d.pop('annotations'),
                       "field 'annotations' is missing"),
    'categories not a list': (lambda d: d.__setitem__('categories', {}),
                              "field 'categories' must be a list"),
    'no categories': (lambda d: d.__setitem__('categories', []),
                      "field 'categories' is empty"),
    'image_id not an image': (set_ann('image_id', 7),
                              r"annotations\[0\] \(id=1\): image_id=7 is "
                              r"not an id in 'images'"),
    'unknown category': (set_ann('category_id', 999),
                         r"annotations\[0\] \(id=1\): category_id=999"),
    'string in bbox': (set_ann('bbox', [1, 'x', 3, 4]),
                       r"annotations\[0\] \(id=1\): bbox=\[1, 'x', 3, 4\] "
                       r'must be 4 finite numbers'),
    'three numbers in bbox': (set_ann('bbox', [1, 2, 3]),
                              r'bbox=\[1, 2, 3\] must be 4'),
    'nan in bbox': (set_ann('bbox', [1, float('nan'), 3, 4]),
                    r'bbox=\[1, nan, 3, 4\]'),
    'negative width': (set_ann('bbox', [10, 10, -5, 20], 1),
                       r"annotations\[1\] \(id=2\): bbox=\[10, 10, -5, 20\] "
                       r'has a negative width or height'),
    'negative area': (set_ann('area', -3), r'area=-3 must be'),
    'duplicate annotation id': (set_ann('id', 2),
                                r'the id 2 appears twice in '
                                r"'annotations'"),
    'annotation id missing': (lambda d: d['annotations'][2].pop('id'),
                              r'annotations\[2\]: id=None must be an '
                              r'integer'),
    'duplicate image id': (lambda d: d['images'][1].__setitem__('id', 1),
                           r"the id 1 appears twice in 'images'"),
    'zero image width': (lambda d: d['images'][0].__setitem__('width', 0),
                         r"images\[0\] \(id=1\): width=0 must be a "
                         r'positive number'),
    'bad frequency letter': (
        lambda d: d['categories'][0].__setitem__('frequency', 'x'),
        r"categories\[0\] \(id=1\): frequency='x' must be one of"),
    'category id a string': (
        lambda d: d['categories'][1].__setitem__('id', '2'),
        r"categories\[1\] \(id='2'\): id='2' must be an integer"),
    # True == 1 as a dict key, so a bool once passed as image / category 1
    'image_id a bool': (set_ann('image_id', True),
                        r"annotations\[0\] \(id=1\): image_id=True is not "
                        r"an id in 'images'"),
    'category_id a bool': (set_ann('category_id', True),
                           r"annotations\[0\] \(id=1\): category_id=True "
                           r"is not an id in 'categories'"),
    'segmentation a string': (
        set_ann('segmentation', 'abc'),
        r"annotations\[0\] \(id=1\): segmentation='abc' must be a list of "
        r'polygons or an RLE dict'),
    'string in a polygon': (
        set_ann('segmentation', [[1, 2, 'x', 4, 5, 6]]),
        r"annotations\[0\] \(id=1\): segmentation polygon \[1, 2, 'x', 4, "
        r'5, 6\] must be a list of numbers'),
    'RLE without size': (
        set_ann('segmentation', {'counts': 'abc'}),
        r"segmentation=\{'counts': 'abc'\} must be a list of polygons or "
        r"an RLE dict with 'counts' and 'size'"),
    'neg_category_ids of no category': (
        lambda d: d['images'][0].__setitem__('neg_category_ids', [1, 999]),
        r"images\[0\] \(id=1\): neg_category_ids holds 999, not an id in "
        r"'categories'"),
    'not_exhaustive_category_ids a string': (
        lambda d: d['images'][1].__setitem__('not_exhaustive_category_ids',
                                             'abc'),
        r"images\[1\] \(id=2\): not_exhaustive_category_ids='abc' must be "
        r'a list of category ids'),
    # the letters come from the file only when every category has one
    'one category without frequency': (
        lambda d: d['categories'][1].pop('frequency'),
        r"categories\[1\] \(id=2\) has no 'frequency' while 1 of 2 "
        r'categories have one'),
}


# well-formed inputs the checks must let through
VALID = {
    'RLE, counts a string': set_ann('segmentation',
                                    dict(counts='abc', size=[80, 100])),
    'RLE, counts a list': set_ann('segmentation',
                                  dict(counts=[10, 5, 30], size=[80, 100])),
    'polygons': set_ann('segmentation', [[10, 10, 30, 10, 30, 30],
                                         [1.5, 2, 3, 4, 5, 6.25]]),
    'no polygon': set_ann('segmentation', []),
    'segmentation null': set_ann('segmentation', None),
    'federated ids': lambda d: d['images'][0].update(
        neg_category_ids=[1], not_exhaustive_category_ids=[1, 2]),
    'no frequency letters': lambda d: [c.pop('frequency')
                                       for c in d['categories']],
}


@pytest.mark.parametrize('case', sorted(VALID))
def test_well_formed_file_passes(tmp_path, case):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check_lvis_annotations(edited(VALID[case]), 'f') == {}
        stats = get_class_statistics(write(tmp_path, edited(VALID[case])))
    assert stats.instance_count.tolist() == [1, 2]


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_malformed_file_names_file_entry_field_value(tmp_path, case):
    edit, message = MALFORMED[case]
    path = write(tmp_path, edited(edit))
    with pytest.raises(ValueError, match=message) as error:
        get_class_statistics(path)
    assert path in str(error.value)


def test_top_level_list(tmp_path):
    path = write(tmp_path, [small_lvis()])
    with pytest.raises(ValueError, match='holds a list, not an LVIS dict'):
        get_class_statistics(path)


def test_truncated_json(tmp_path):
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(small_lvis())[:50])
    with pytest.raises(ValueError, match='is not valid JSON') as error:
        get_class_statistics(str(path))
    assert str(path) in str(error.value)


def test_entries_the_loader_skips_are_counted_and_reported(tmp_path):
    data = small_lvis()
    tiny = dict(id=4, image_id=2, category_id=1, bbox=[5, 5, 0.5, 9],
                area=4.5)
    outside = dict(id=5, image_id=2, category_id=1, bbox=[150, 5, 9, 9],
                   area=81)
    crowd = dict(id=6, image_id=2, category_id=2, bbox=[5, 5, 9, 9],
                 area=81, iscrowd=1)
    data['annotations'] += [tiny, outside, crowd]
    with pytest.warns(UserWarning) as record:
        assert check_lvis_annotations(copy.deepcopy(data), 'f') == {
            'under 1 px wide or high, or zero area': 1,
            'outside its image': 1,
            'crowd (an ignored region)': 1,
        }
    (warning, ) = record
    assert str(warning.message) == (
        "f: 3 of 6 annotations are counted in the class statistics (as "
        "LVIS's image_count / instance_count count them) but not trained on "
        "by mmdet's loader: 1 crowd (an ignored region), 1 outside its "
        'image, 1 under 1 px wide or high, or zero area')
    path = write(tmp_path, data)
    with pytest.warns(UserWarning, match=f'{path}: 3 of 6 annotations'):
        stats = get_class_statistics(path)
    # as LVIS's own image_count / instance_count fields count them
    assert stats.instance_count.tolist() == [3, 3]
    assert stats.image_count.tolist() == [2, 2]
    assert stats.num_images == 2


def test_valid_file_passes_without_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check_lvis_annotations(small_lvis(), 'f') == {}
        stats = get_class_statistics(write(tmp_path, small_lvis()))
    assert stats.instance_count.tolist() == [1, 2]


@pytest.mark.parametrize('case', ['string in bbox', 'image_id not an image',
                                  'negative width'])
def test_dataset_reports_the_same_errors(tmp_path, case):
    edit, message = MALFORMED[case]
    path = write(tmp_path, edited(edit))
    with pytest.raises(ValueError, match=message) as error:
        build_dataset(str(tmp_path) + '/', path)
    assert path in str(error.value)


def test_dataset_names_a_truncated_file(tmp_path):
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(small_lvis())[:50])
    with pytest.raises(ValueError, match='is not valid JSON') as error:
        build_dataset(str(tmp_path) + '/', str(path))
    assert str(path) in str(error.value)


def build_mask_dataset(ann_file: str, with_mask: bool = True,
                       poly2mask: bool = True):
    """The LVIS dataset with a pipeline that loads masks, as Mask R-CNN's
    (or only boxes, as Faster R-CNN's)."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    return DATASETS.build(
        dict(type='LVISV1LTDataset', data_root='', ann_file=ann_file,
             data_prefix=dict(img=''), check_images=False,
             pipeline=[dict(type='LoadAnnotations', with_bbox=True,
                            with_mask=with_mask, poly2mask=poly2mask)]))


def with_polygons(data: dict) -> dict:
    for ann in data['annotations']:
        x, y, w, h = ann['bbox']
        ann['segmentation'] = [[x, y, x + w, y, x + w, y + h]]
    return data


def test_a_mask_pipeline_needs_every_segmentation(tmp_path):
    data = with_polygons(small_lvis())
    del data['annotations'][1]['segmentation']
    path = write(tmp_path, data)
    # boxes only: the segmentation is not read
    assert len(build_mask_dataset(path, with_mask=False)) == 2
    with pytest.raises(ValueError) as error:
        build_mask_dataset(path)
    assert str(error.value).startswith(
        f'{path}: image id 1: the annotation of category id 2 with box '
        "[0, 0, 5, 5] (x1, y1, x2, y2) has no 'segmentation', and the "
        'pipeline loads masks')


def test_a_mask_pipeline_loads_what_mmdet_skips_without_segmentation(
        tmp_path):
    """An annotation mmdet's parser drops (here under 1 px wide) never
    needs a mask, so it may lack a segmentation."""
    data = with_polygons(small_lvis())
    data['annotations'].append(
        dict(id=4, image_id=2, category_id=1, bbox=[5, 5, 0.5, 9], area=4.5))
    path = write(tmp_path, data)
    with pytest.warns(UserWarning, match='1 under 1 px wide'):
        dataset = build_mask_dataset(path)
    assert [len(dataset.get_data_info(i)['instances'])
            for i in range(2)] == [2, 1]


def test_instances_without_a_loadable_polygon_are_reported(tmp_path):
    """mmdet's LoadAnnotations ignores an instance whose polygons all have
    fewer than 6 (or an odd number of) coordinates; the statistics count
    it, so the dataset says so with counts."""
    data = with_polygons(small_lvis())
    data['annotations'][0]['segmentation'] = [[10, 10, 30, 10]]
    data['annotations'][2]['segmentation'] = [[1, 2, 4, 2, 4, 6, 1]]
    path = write(tmp_path, data)
    with pytest.warns(UserWarning) as record:
        dataset = build_mask_dataset(path)
    (warning, ) = [w for w in record if 'polygon' in str(w.message)]
    assert str(warning.message).startswith(
        f'{path}: 2 of 3 instances (in images [1, 2]) have no mask that '
        "mmdet's LoadAnnotations loads (no polygon of an even number >= 6 "
        'of coordinates): it ignores them')
    # the loader does ignore them, and the statistics count them
    flags = [
        dataset.pipeline(dict(dataset.get_data_info(i),
                              ori_shape=(80, 100)))['gt_ignore_flags']
        for i in range(2)
    ]
    assert [f.tolist() for f in flags] == [[True, False], [True]]
    assert get_class_statistics(path).instance_count.tolist() == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build_mask_dataset(write(tmp_path, with_polygons(small_lvis()),
                                 'valid.json'))


def test_rle_masks_are_ignored_without_poly2mask(tmp_path):
    """mmdet's LoadAnnotations(poly2mask=False) ignores RLE instances."""
    data = with_polygons(small_lvis())
    data['annotations'][0]['segmentation'] = dict(counts='abc',
                                                  size=[80, 100])
    path = write(tmp_path, data)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build_mask_dataset(path)
    with pytest.warns(UserWarning, match=r'1 of 3 instances \(in images '
                      r'\[1\]\).*; with poly2mask=False, no RLE\)'):
        build_mask_dataset(path, poly2mask=False)


def test_an_empty_image_file_is_named(tmp_path):
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / '1.jpg').write_bytes(b'not empty')
    (tmp_path / 'x' / '2.jpg').write_bytes(b'')
    path = write(tmp_path, small_lvis())
    with pytest.raises(ValueError) as error:
        build_dataset(str(tmp_path) + '/', path)
    assert str(error.value) == (
        f'{path}: image id 2: its file is empty: {tmp_path}/x/2.jpg')
