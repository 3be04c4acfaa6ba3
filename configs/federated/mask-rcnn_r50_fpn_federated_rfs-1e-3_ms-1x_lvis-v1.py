# Federated loss with repeat factor sampling (t = 1e-3), the setting of
# CenterNet2's LVIS models (the federated loss is the LVIS winners' default
# together with RFS).
_base_ = './mask-rcnn_r50_fpn_federated_ms-1x_lvis-v1.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='RFSSampler', threshold=1e-3))
