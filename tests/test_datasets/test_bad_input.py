"""Bad input gives an error that names the file, field and value."""
import json
import os
import os.path as osp
import shutil

import pytest

TINY_FASTER = 'configs/lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'


def build_dataset(data_root, ann_file):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    return DATASETS.build(
        dict(
            type='LVISV1LTDataset',
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=dict(img=''),
            pipeline=[]))


def copy_annotations(synthetic_root, tmp_path, edit=None):
    """A data root whose images are the synthetic ones and whose train
    annotation file is edited by ``edit``."""
    root = tmp_path / 'root'
    (root / 'annotations').mkdir(parents=True)
    for sub in ('train2017', 'val2017'):
        os.symlink(osp.join(synthetic_root, sub), root / sub)
    with open(osp.join(synthetic_root, 'annotations',
                       'lvis_v1_train.json')) as f:
        data = json.load(f)
    if edit:
        edit(data)
    path = root / 'annotations' / 'lvis_v1_train.json'
    with open(path, 'w') as f:
        json.dump(data, f)
    return str(root) + '/', str(path)


def test_missing_annotation_file(tmp_path):
    missing = str(tmp_path / 'annotations' / 'lvis_v1_train.json')
    with pytest.raises(FileNotFoundError, match='lvis_v1_train.json'):
        build_dataset(str(tmp_path) + '/', missing)


def test_image_listed_but_missing(synthetic_root, tmp_path):
    root, ann = copy_annotations(synthetic_root, tmp_path)
    with open(ann) as f:
        first = json.load(f)['images'][0]
    # replace the symlinked train folder by a copy without the first image
    os.unlink(osp.join(root, 'train2017'))
    shutil.copytree(osp.join(synthetic_root, 'train2017'),
                    osp.join(root, 'train2017'))
    name = first['coco_url'].rsplit('/', 1)[-1]
    os.remove(osp.join(root, 'train2017', name))
    with pytest.raises(FileNotFoundError) as e:
        build_dataset(root, ann)
    assert name in str(e.value) and f'image id {first["id"]}' in str(e.value)
    assert 'lvis_v1_train.json' in str(e.value)


def test_annotation_json_without_categories(synthetic_root, tmp_path):
    from mmdet_longtail.datasets import get_class_statistics
    root, ann = copy_annotations(synthetic_root, tmp_path,
                                 lambda d: d.pop('categories'))
    with pytest.raises(ValueError, match="categories") as e:
        build_dataset(root, ann)
    assert ann in str(e.value)
    with pytest.raises(ValueError, match="'categories'") as e:
        get_class_statistics(ann)
    assert ann in str(e.value)


def test_annotation_with_unknown_category(synthetic_root, tmp_path):
    from mmdet_longtail.datasets import get_class_statistics

    def edit(data):
        data['annotations'][0]['category_id'] = 999

    _, ann = copy_annotations(synthetic_root, tmp_path, edit)
    with pytest.raises(ValueError, match='category_id=999'):
        get_class_statistics(ann)


def test_num_classes_mismatch_names_config_field_and_values(run_tool,
                                                           tmp_path):
    proc = run_tool.train(
        TINY_FASTER,
        str(tmp_path / 'work'),
        cfg_options=['model.roi_head.bbox_head.num_classes=29'],
        check=False)
    assert proc.returncode != 0
    log = proc.stdout
    assert 'ValueError' in log
    assert 'model.roi_head.bbox_head.num_classes=29' in log
    assert '30 classes' in log
    assert 'faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py' in log
    assert 'lvis_v1_train.json' in log
