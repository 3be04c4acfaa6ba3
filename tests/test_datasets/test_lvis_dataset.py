"""The LVIS datasets build mmdet's data list from the file parsed once."""
import json
import os.path as osp

import pytest

from mmdet_longtail.datasets import make_synthetic_lvis

EXTRA_KEYS = ('neg_category_ids', 'not_exhaustive_category_ids')


def build(dataset_type: str, data_root: str, ann_file: str, img: str):
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


def test_the_file_is_parsed_once(synthetic_root, monkeypatch):
    import lvis

    from mmdet_longtail.datasets import lvis as lt_lvis
    parsed = []

    def counting_load(path):
        parsed.append(path)
        return load(path)

    def lvis_api_parse(*args, **kwargs):
        raise AssertionError('the dataset parsed the file through lvis-api')

    load = lt_lvis.load_lvis_json
    monkeypatch.setattr(lt_lvis, 'load_lvis_json', counting_load)
    monkeypatch.setattr(lvis.LVIS, '__init__', lvis_api_parse)
    build('LVISV1LTDataset', synthetic_root,
          'annotations/lvis_v1_train.json', '')
    assert len(parsed) == 1


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
