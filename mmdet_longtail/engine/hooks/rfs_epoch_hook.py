"""``RFSEpochHook``: no longer needed; a config that still lists it is told
so."""
from mmengine.hooks import Hook

from mmdet.registry import HOOKS


@HOOKS.register_module()
class RFSEpochHook(Hook):
    """Former hook of ``RFSDataset``; building it raises an error."""

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError(
            'RFSEpochHook was removed: remove it from custom_hooks. RFS is '
            "now train_dataloader.sampler=dict(type='RFSSampler', ...), "
            "whose epoch mmengine's DistSamplerSeedHook sets")
