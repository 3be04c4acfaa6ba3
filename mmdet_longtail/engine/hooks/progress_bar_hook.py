"""Progress bars with an ETA for training, validation and testing.

mmengine logs one line every ``LoggerHook.interval`` iterations. For a short
run watched in a terminal (the README's main job), one bar per phase says
more: how far the phase is and when it ends. The bars go to stderr, on rank 0
only; the log file in the work dir is unchanged.
"""
import sys
from typing import Optional, Sequence

import torch
from mmengine.hooks import Hook
from tqdm import tqdm

from mmdet.registry import HOOKS


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """One tqdm bar (iterations, ETA, the current loss) per train, val and
    test phase.

    Args:
        min_interval (float): seconds between two redraws of a bar; a log
            that is not a terminal gets a line each time.
    """
    priority = 'VERY_LOW'

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self._bar: Optional[tqdm] = None
        self._train_bar: Optional[tqdm] = None  # held while validating

    def _open(self, runner, desc: str, total: int, initial: int = 0) -> None:
        self._close()
        if runner.rank != 0:
            return
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit='it',
            file=sys.stderr,
            mininterval=self.min_interval if sys.stderr.isatty() else 10.0,
            dynamic_ncols=True)

    def _update(self, **postfix) -> None:
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)
            if self._bar.n >= self._bar.total:
                # finished before the evaluation starts: its bar comes next
                self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_train(self, runner) -> None:
        self._open(runner, 'train', runner.max_iters, initial=runner.iter)

    def before_train_epoch(self, runner) -> None:
        # an epoch-based loop may change its length between epochs (RFS)
        if self._bar is not None:
            self._bar.total = runner.max_iters

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        loss = (outputs or {}).get('loss')
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        self._update(**({} if loss is None else
                        dict(loss=f'{float(loss):.3f}')))

    def after_train(self, runner) -> None:
        self._close()

    def before_val_epoch(self, runner) -> None:
        self._train_bar, self._bar = self._bar, None
        self._open(runner, 'val', len(runner.val_dataloader))

    def after_val_iter(self,
                       runner,
                       batch_idx: int,
                       data_batch=None,
                       outputs: Optional[Sequence] = None) -> None:
        self._update()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()
        self._bar, self._train_bar = self._train_bar, None

    def before_test_epoch(self, runner) -> None:
        self._open(runner, 'test', len(runner.test_dataloader))

    def after_test_iter(self,
                        runner,
                        batch_idx: int,
                        data_batch=None,
                        outputs: Optional[Sequence] = None) -> None:
        self._update()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()
