"""The LVIS datasets build mmdet's data list from the file parsed once."""
import json
import os.path as osp
from typing import Optional

import pytest

from mmdet_longtail.datasets import make_synthetic_lvis

EXTRA_KEYS = ('neg_category_ids', 'not_exhaustive_category_ids')


def build(dataset_type: str,
          data_root: str,
          ann_file: str,
          img: str,
          filter_cfg: Optional[dict] = None):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    return DATASETS.build(
        dict(
            type=dataset_type,
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=dict(img=img),
            filter_cfg=filter_cfg,
            pipeline=[]))


def assert_same_data(ours, mmdet_dataset):
    assert ours.cat_ids == mmdet_dataset.cat_ids
    assert ours.cat2label == mmdet_dataset.cat2label
    assert dict(ours.cat_img_map) == dict(mmdet_dataset.cat_img_map)
    assert len(ours) == len(mmdet_dataset) > 0
    for i in range(len(ours)):
        info = ours.get_data_info(i)
        assert all(key in info for key in EXTRA_KEYS)
        plain = {k: v for k, v in info.items() if k not in EXTRA_KEYS}
        assert plain == mmdet_dataset.get_data_info(i)


def test_v1_data_list_equals_mmdet(synthetic_root):
    ann = 'annotations/lvis_v1_train.json'
    ours = build('LVISV1LTDataset', synthetic_root, ann, '')
    assert_same_data(ours, build('LVISV1Dataset', synthetic_root, ann, ''))
    with open(osp.join(synthetic_root, ann)) as f:
        images = json.load(f)['images']
    info = ours.get_data_info(0)
    assert info['neg_category_ids'] == images[0]['neg_category_ids']
    assert info['not_exhaustive_category_ids'] == \
        images[0]['not_exhaustive_category_ids']


def test_v05_data_list_equals_mmdet(tmp_path):
    root = str(tmp_path) + '/'
    paths = make_synthetic_lvis(root, num_classes=6, num_train_images=10,
                                num_val_images=2, image_size=64,
                                lvis_version='v0.5', seed=1)
    # a COCO 2014 name, which both datasets turn into the 2017 name
    with open(paths['train']) as f:
        data = json.load(f)
    data['images'][0]['file_name'] = \
        'COCO_train2014_' + data['images'][0]['file_name']
    with open(paths['train'], 'w') as f:
        json.dump(data, f)
    ann = osp.relpath(paths['train'], root)
    ours = build('LVISV05LTDataset', root, ann, 'train2017/')
    assert_same_data(ours, build('LVISV05Dataset', root, ann, 'train2017/'))
    assert osp.isfile(ours.get_data_info(0)['img_path'])


def test_the_file_is_parsed_once(synthetic_root, tmp_path, monkeypatch):
    import lvis

    from mmdet_longtail.datasets import class_stats
    parsed = []

    def counting_load(path):
        parsed.append(path)
        return load(path)

    def lvis_api_parse(*args, **kwargs):
        raise AssertionError('the dataset parsed the file through lvis-api')

    load = class_stats.load_lvis_json
    monkeypatch.setattr(class_stats, 'load_lvis_json', counting_load)
    monkeypatch.setattr(lvis.LVIS, '__init__', lvis_api_parse)
    # a new file, so that no cached statistics spare the reader its parse
    path = write_edited(synthetic_root, tmp_path, lambda data: None)
    build('LVISV1LTDataset', synthetic_root, path, '')
    assert parsed == [osp.realpath(path)]


def write_edited(synthetic_root, tmp_path, edit) -> str:
    with open(osp.join(synthetic_root, 'annotations',
                       'lvis_v1_train.json')) as f:
        data = json.load(f)
    edit(data)
    path = tmp_path / 'lvis_v1_train.json'
    with open(path, 'w') as f:
        json.dump(data, f)
    return str(path)


def test_image_without_coco_url_is_named(synthetic_root, tmp_path):
    def edit(data):
        data['images'][3].pop('coco_url')

    path = write_edited(synthetic_root, tmp_path, edit)
    with pytest.raises(ValueError, match="has no string 'coco_url'") as e:
        build('LVISV1LTDataset', synthetic_root, path, '')
    assert path in str(e.value)


def test_categories_out_of_id_order_are_refused(synthetic_root, tmp_path):
    """mmdet labels classes in file order, the statistics by id."""
    def edit(data):
        cats = data['categories']
        cats[1], cats[2] = cats[2], cats[1]

    path = write_edited(synthetic_root, tmp_path, edit)
    with pytest.raises(ValueError,
                       match="categories\\[2\\] \\(id=2\\) follows id 3"):
        build('LVISV1LTDataset', synthetic_root, path, '')


def test_data_list_equals_mmdet_on_edge_cases(synthetic_root, tmp_path):
    """An image without annotations, crowd and sub-pixel boxes, and a
    category without annotations, filtered as a train set is."""
    def edit(data):
        empty = data['images'][2]['id']
        data['annotations'] = [
            a for a in data['annotations'] if a['image_id'] != empty]
        data['annotations'][0]['iscrowd'] = 1
        data['annotations'][1]['bbox'][2] = 0.5
        unused = dict(data['categories'][-1])
        unused.update(id=unused['id'] + 1, name='unused', image_count=0,
                      instance_count=0)
        data['categories'].append(unused)

    path = write_edited(synthetic_root, tmp_path, edit)
    filters = dict(filter_empty_gt=True, min_size=32)
    with pytest.warns(UserWarning, match='1 crowd .* 1 under 1 px'):
        ours = build('LVISV1LTDataset', synthetic_root, path, '', filters)
    theirs = build('LVISV1Dataset', synthetic_root, path, '', filters)
    assert_same_data(ours, theirs)
    unfiltered = build('LVISV1LTDataset', synthetic_root, path, '')
    assert len(ours) < len(unfiltered)  # the image without annotations
    assert ours.cat_ids[-1] == 31 and 31 not in unfiltered.cat_img_map


@pytest.mark.parametrize('entry,field', [('images', 'height'),
                                         ('annotations', 'area'),
                                         ('categories', 'name')])
def test_a_field_mmdet_needs_is_named(synthetic_root, tmp_path, entry,
                                      field):
    def edit(data):
        data[entry][0].pop(field)

    path = write_edited(synthetic_root, tmp_path, edit)
    with pytest.raises(ValueError, match=field) as e:
        build('LVISV1LTDataset', synthetic_root, path, '')
    assert path in str(e.value)
