"""Fail fast when a head's ``num_classes`` does not match the dataset."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdet.registry import HOOKS


def _unwrap_dataset(dataset):
    """The innermost dataset of wrappers such as ClassBalancedDataset."""
    while hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    return dataset


def check_num_classes(model, dataset, config_file: Optional[str] = None
                      ) -> None:
    """Raise ``ValueError`` naming the config field, both values and the
    annotation file when a head's ``num_classes`` differs from the number of
    dataset classes (mmdet's ``NumClassCheckHook`` asserts without saying
    which file; it also skips the test loop)."""
    if is_model_wrapper(model):
        model = model.module
    inner = _unwrap_dataset(dataset)
    classes = inner.metainfo.get('classes')
    if not classes:
        return
    ann_file = getattr(inner, 'ann_file', '?')
    for name, module in model.named_modules():
        if not name or 'rpn_head' in name or 'loss' in name.split('.')[-1]:
            continue
        num_classes = getattr(module, 'num_classes', None)
        if isinstance(num_classes, int) and num_classes != len(classes):
            raise ValueError(
                f'config {config_file or "?"}: model.{name}.num_classes='
                f'{num_classes} but the dataset {ann_file} has '
                f'{len(classes)} classes (1203 for LVIS v1, 1230 for v0.5)')


@HOOKS.register_module()
class LongTailNumClassCheckHook(Hook):
    """Check every head's ``num_classes`` before train, val and test."""
    priority = 'VERY_HIGH'

    def _check(self, runner, loop_name: str) -> None:
        loop_dataloader = getattr(runner, f'{loop_name}_dataloader')
        check_num_classes(runner.model, loop_dataloader.dataset,
                          getattr(runner.cfg, 'filename', None))

    def before_train(self, runner) -> None:
        self._check(runner, 'train')

    def before_val(self, runner) -> None:
        self._check(runner, 'val')

    def before_test(self, runner) -> None:
        self._check(runner, 'test')
