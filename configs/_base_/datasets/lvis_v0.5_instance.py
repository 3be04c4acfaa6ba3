# LVIS v0.5 as the long-tail papers train it: no re-sampling here (the RFS
# variants add it), multi-scale (1333, 640..800) training, and the official
# evaluation with full-precision APr / APc / APf.
_base_ = 'mmdet::_base_/datasets/lvis_v0.5_instance.py'

dataset_type = 'LVISV05LTDataset'
# every config's class count (heads, losses) comes from here
num_classes = 1230
data_root = 'data/lvis_v0.5/'

# single-scale (1333, 800) training with flip, for recipes trained that way
single_scale_train_pipeline = [
    dict(type='Resize', scale=(1333, 800), keep_ratio=True)
    if step.type == 'RandomChoiceResize' else step
    for step in _base_.train_pipeline
]

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v0.5_train.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=_base_.train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v0.5_val.json',
        data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader

val_evaluator = dict(
    _delete_=True,
    type='LongTailLVISMetric',
    ann_file=data_root + 'annotations/lvis_v0.5_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator
