"""The augmentation recipes (configs/augmentation/): the train set is
mmdet's MultiImageMixDataset around the LVIS dataset; CopyPaste adds the
objects of a second image, MaskMixUp blends two images and keeps both
images' instances (boxes and masks stay paired); the class statistics
and RFS see the wrapped dataset's labels."""
import numpy as np
import pytest
from mmengine.config import Config

from mmdet_longtail.engine.long_tail_runner import train_annotation_file

COPY_PASTE = ('configs/augmentation/'
              'mask-rcnn_r18-tiny_fpn_lsj-copy-paste_rfs-8e-2_12e_'
              'synthetic-lvis.py')
MIXUP = ('configs/augmentation/'
         'mask-rcnn_r18-tiny_fpn_mixup_12e_synthetic-lvis.py')


def load(config, synthetic_root, monkeypatch):
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    return Config.fromfile(config)


@pytest.mark.parametrize('config', [COPY_PASTE, MIXUP])
def test_mixed_samples_keep_their_annotations_paired(config, synthetic_root,
                                                     monkeypatch):
    from mmdet.registry import DATASETS
    cfg = load(config, synthetic_root, monkeypatch)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert type(dataset).__name__ == 'MultiImageMixDataset'
    grew = 0
    for idx in range(6):
        sample = dataset[idx]['data_samples']
        inst = sample.gt_instances
        assert inst.bboxes.shape[0] == len(inst.labels)
        assert len(inst.masks) == len(inst.labels)
        if config == COPY_PASTE:
            assert sample.img_shape == (128, 128)
        own = dataset.dataset.get_data_info(idx)['instances']
        grew += len(inst.labels) > len(own)
    assert grew > 0  # objects of a second image were added


def test_statistics_and_rfs_look_through_the_wrapper(synthetic_root,
                                                     monkeypatch):
    from mmdet.registry import DATA_SAMPLERS, DATASETS
    cfg = load(COPY_PASTE, synthetic_root, monkeypatch)
    inner = cfg.train_dataloader.dataset.dataset
    ann_file = train_annotation_file(cfg.train_dataloader.dataset)
    assert ann_file.endswith('lvis_v1_train.json')
    assert ann_file == train_annotation_file(inner)
    wrapped = DATASETS.build(dict(cfg.train_dataloader.dataset))
    plain = DATASETS.build(dict(inner, pipeline=[]))
    factors = [
        DATA_SAMPLERS.build(cfg.train_dataloader.sampler,
                            default_args=dict(dataset=d,
                                              seed=0)).repeat_factors
        for d in (wrapped, plain)
    ]
    np.testing.assert_array_equal(*factors)
    assert factors[0].max() > 1
