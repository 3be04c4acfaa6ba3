# LVIS v1: image paths come from `coco_url`, and val uses COCO train2017 *and*
# val2017 images, so `data_root` holds both folders (data/README.md).
_base_ = './lvis_v0.5_instance.py'

dataset_type = 'LVISV1LTDataset'
num_classes = 1203
data_root = 'data/lvis_v1/'

train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img='')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img='')))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/lvis_v1_val.json')
test_evaluator = val_evaluator
