"""``RFSDataset``: replaced by :class:`~mmdet_longtail.datasets.samplers.
rfs_sampler.RFSSampler`; a config that still uses it gets the new config."""
from mmdet.registry import DATASETS


@DATASETS.register_module()
class RFSDataset:
    """Former RFS dataset wrapper; building it raises an error that shows the
    equivalent ``RFSSampler`` config."""

    def __init__(self,
                 dataset=None,
                 threshold: float = 1e-3,
                 mode: str = 'stochastic',
                 seed=None,
                 use_sqrt: bool = True) -> None:
        sampler = dict(
            type='RFSSampler', threshold=threshold, rounding=mode)
        if seed is not None:
            sampler['seed'] = seed
        if not use_sqrt:
            sampler['use_sqrt'] = False
        raise TypeError(
            f'RFSDataset was replaced by the RFSSampler: set '
            f'train_dataloader.dataset to the dataset RFSDataset wrapped and '
            f'train_dataloader.sampler=dict(_delete_=True, '
            f'{", ".join(f"{k}={v!r}" for k, v in sampler.items())}) '
            f'(see configs/rfs/README.md)')
