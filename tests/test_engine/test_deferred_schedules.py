"""Deferred schedules through mmengine's Runner, in process: DRS
(``DeferredSampler``, uniform then RFS) lists the uniform epochs, then the
target sampler's; DRW (``DeferredReweightingHook``) switches the loss's
weights on at the epoch / iteration; PCB (``DeferredSwitchHook`` of
``PCBLoss.pcb_enabled``) switches the pairwise term on; all resume exactly
at the switch epoch and one epoch after it (same images, same weights, same
confusion matrix)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmdet_longtail.datasets.samplers.deferred_sampler import DeferredSampler
from mmdet_longtail.datasets.samplers.rfs_sampler import RFSSampler
from mmdet_longtail.engine.hooks import (DeferredReweightingHook,
                                         DeferredSwitchHook)
from mmdet_longtail.models.losses.pcb_loss import PCBLoss
from mmdet_longtail.models.losses.reweighted_ce_loss import \
    ReweightedCrossEntropyLoss

DRS_CONFIG = \
    'configs/drs/mask-rcnn_r18-tiny_fpn_drs-rfs-8e-2-9_12e_synthetic-lvis.py'
SWITCH = 2
EPOCHS = 4


class Record(Hook):
    """img_ids and the loss's switch (``weights_enabled`` or
    ``pcb_enabled``) of every iteration."""
    priority = 'LOWEST'  # after DeferredReweightingHook

    def __init__(self) -> None:
        self.images, self.enabled = {}, {}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.images.setdefault(runner.epoch, []).extend(
            s.img_id for s in data_batch['data_samples'])
        loss = getattr(runner.model, 'loss_cls', None)
        if loss is not None:
            self.enabled[runner.iter] = getattr(loss, 'weights_enabled',
                                                getattr(loss, 'pcb_enabled',
                                                        None))


class ToyDetector(BaseModel):
    """One (1, 4) logit row trained with a re-weighted CE (or CE with PCB),
    so the weights (the pairwise term) change the trained parameter."""

    def __init__(self, with_loss: bool = False, pcb: bool = False) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(1, 4))
        self.labels = torch.tensor([0, 0, 1, 2] if pcb else [0, 0, 1, 3])
        if pcb:
            self.loss_cls = PCBLoss(
                base_loss=dict(type='CrossEntropyLoss'), num_classes=3,
                alpha=0.4, momentum=0.5)
        elif with_loss:
            self.loss_cls = ReweightedCrossEntropyLoss(
                num_classes=3, beta=0.9,
                class_statistics=dict(image_count=[1, 2, 3],
                                      instance_count=[1, 10, 100],
                                      num_images=5))

    def forward(self, inputs, data_samples=None, mode='loss'):
        # unbalanced labels, so that the class weights move the logits
        labels = self.labels[torch.arange(len(inputs)) % 4]
        scores = self.logits.expand(len(inputs), 4)
        if hasattr(self, 'loss_cls'):
            return dict(loss=self.loss_cls(scores, labels))
        return dict(loss=scores.sum() * 0 + (self.logits - 1).pow(2).sum())


def run(synthetic_root, work_dir, max_epochs, monkeypatch, name,
        resume=False, drw=None, drs=True, pcb=None):
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    cfg = Config.fromfile(DRS_CONFIG)
    cfg.merge_from_dict({
        'train_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.indices': 24,
        'train_dataloader.sampler.switch_epoch': SWITCH,
        'train_dataloader.sampler.sampler.threshold': 0.2,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.checkpoint.max_keep_ckpts': -1,
    })
    if not drs:
        cfg.train_dataloader.sampler = dict(type='DefaultSampler',
                                            shuffle=True)
    hooks = [Record()] + ([drw] if drw else []) + ([pcb] if pcb else [])
    runner = Runner(
        model=ToyDetector(with_loss=drw is not None, pcb=pcb is not None),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=cfg.train_dataloader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=cfg.default_hooks,
        custom_hooks=hooks,
        default_scope='mmdet',
        randomness=dict(seed=0),
        resume=resume)
    runner.train()
    record = [h for h in runner.hooks if isinstance(h, Record)][0]
    return runner, record


def checkpoint(work_dir, epoch):
    return torch.load(
        osp.join(work_dir, f'epoch_{epoch}.pth'),
        weights_only=False)['state_dict']


def test_drs_lists_uniform_then_rfs_and_resumes(synthetic_root, tmp_path,
                                                monkeypatch):
    straight, rec = run(synthetic_root, str(tmp_path / 'a'), EPOCHS,
                        monkeypatch, 'drs_straight')
    loader = straight.train_dataloader
    sampler, dataset = loader.batch_sampler.sampler, loader.dataset
    assert isinstance(sampler, DeferredSampler)
    assert isinstance(sampler.uniform, DefaultSampler)
    assert isinstance(sampler.target, RFSSampler)
    assert sampler.target.seed == sampler.uniform.seed == 0
    all_images = sorted(
        dataset.get_data_info(i)['img_id'] for i in range(len(dataset)))
    for epoch in range(EPOCHS):
        if epoch < SWITCH:  # uniform: every image once
            assert sorted(rec.images[epoch]) == all_images
        else:  # RFS: the target sampler's own list of that epoch
            listed = sampler.target.epoch_indices(epoch)
            assert sorted(rec.images[epoch]) == sorted(
                dataset.get_data_info(int(i))['img_id'] for i in listed)
            assert len(rec.images[epoch]) > len(all_images)
    # resume at the switch epoch and one after it
    for stop in (SWITCH, SWITCH + 1):
        work_dir = str(tmp_path / f'stop{stop}')
        _, first = run(synthetic_root, work_dir, stop, monkeypatch,
                       f'drs_first{stop}')
        _, resumed = run(synthetic_root, work_dir, EPOCHS, monkeypatch,
                         f'drs_resumed{stop}', resume=True)
        assert first.images == {e: rec.images[e] for e in range(stop)}
        assert resumed.images == {
            e: rec.images[e] for e in range(stop, EPOCHS)}


def test_drw_switches_at_the_epoch_and_resumes(synthetic_root, tmp_path,
                                               monkeypatch):
    hook = dict(type='DeferredReweightingHook', switch_epoch=SWITCH)
    a = str(tmp_path / 'a')
    straight, rec = run(synthetic_root, a, EPOCHS, monkeypatch,
                        'drw_straight', drw=hook, drs=False)
    iters_per_epoch = len(straight.train_dataloader)
    assert rec.enabled == {
        i: i >= SWITCH * iters_per_epoch
        for i in range(EPOCHS * iters_per_epoch)
    }
    # the weights change the training: not the run without the switch
    plain_dir = str(tmp_path / 'plain')
    run(synthetic_root, plain_dir, EPOCHS, monkeypatch, 'drw_never',
        drw=dict(hook, switch_epoch=EPOCHS), drs=False)
    assert not torch.equal(checkpoint(a, EPOCHS)['logits'],
                           checkpoint(plain_dir, EPOCHS)['logits'])
    torch.testing.assert_close(checkpoint(a, SWITCH)['logits'],
                               checkpoint(plain_dir, SWITCH)['logits'],
                               rtol=0, atol=0)
    log = open(glob.glob(osp.join(a, '*', '*.log'))[0]).read()
    assert f'class weights on from epoch {SWITCH}' in log
    for stop in (SWITCH, SWITCH + 1):
        work_dir = str(tmp_path / f'stop{stop}')
        run(synthetic_root, work_dir, stop, monkeypatch, f'drw_first{stop}',
            drw=hook, drs=False)
        _, resumed = run(synthetic_root, work_dir, EPOCHS, monkeypatch,
                         f'drw_resumed{stop}', resume=True, drw=hook,
                         drs=False)
        assert resumed.enabled == {
            i: rec.enabled[i]
            for i in range(stop * iters_per_epoch, EPOCHS * iters_per_epoch)
        }
        torch.testing.assert_close(checkpoint(work_dir, EPOCHS)['logits'],
                                   checkpoint(a, EPOCHS)['logits'], rtol=0,
                                   atol=0)


def test_pcb_switches_at_the_epoch_and_resumes(synthetic_root, tmp_path,
                                               monkeypatch):
    hook = dict(type='DeferredSwitchHook', attribute='pcb_enabled',
                switch_epoch=SWITCH)
    a = str(tmp_path / 'a')
    straight, rec = run(synthetic_root, a, EPOCHS, monkeypatch,
                        'pcb_straight', drs=False, pcb=hook)
    iters_per_epoch = len(straight.train_dataloader)
    assert rec.enabled == {
        i: i >= SWITCH * iters_per_epoch
        for i in range(EPOCHS * iters_per_epoch)
    }
    state = ('logits', 'loss_cls.confusion', 'loss_cls.class_count')
    # the pairwise term changes the training after the switch, not before
    never = str(tmp_path / 'never')
    run(synthetic_root, never, EPOCHS, monkeypatch, 'pcb_never', drs=False,
        pcb=dict(hook, switch_epoch=EPOCHS))
    assert not torch.equal(checkpoint(a, EPOCHS)['logits'],
                           checkpoint(never, EPOCHS)['logits'])
    for name in state:
        assert torch.equal(checkpoint(a, SWITCH)[name],
                           checkpoint(never, SWITCH)[name]), name
    log = open(glob.glob(osp.join(a, '*', '*.log'))[0]).read()
    assert f'pcb_enabled on from epoch {SWITCH}' in log
    # resumed at the switch and one epoch after: the same phases, weights
    # and confusion matrix as the run that never stopped
    for stop in (SWITCH, SWITCH + 1):
        work_dir = str(tmp_path / f'stop{stop}')
        run(synthetic_root, work_dir, stop, monkeypatch, f'pcb_first{stop}',
            drs=False, pcb=hook)
        _, resumed = run(synthetic_root, work_dir, EPOCHS, monkeypatch,
                         f'pcb_resumed{stop}', resume=True, drs=False,
                         pcb=hook)
        assert resumed.enabled == {
            i: rec.enabled[i]
            for i in range(stop * iters_per_epoch, EPOCHS * iters_per_epoch)
        }
        for name in state:
            assert torch.equal(checkpoint(work_dir, EPOCHS)[name],
                               checkpoint(a, EPOCHS)[name]), name


def test_drw_by_iteration(synthetic_root, tmp_path, monkeypatch):
    hook = dict(type='DeferredReweightingHook', switch_iter=5)
    _, rec = run(synthetic_root, str(tmp_path / 'a'), 2, monkeypatch,
                 'drw_iter', drw=hook, drs=False)
    assert rec.enabled and all(
        enabled == (i >= 5) for i, enabled in rec.enabled.items())


@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'exactly one of switch_epoch'),
    (dict(switch_epoch=1, switch_iter=2), 'exactly one of switch_epoch'),
    (dict(switch_epoch=-1), 'switch_epoch must be an integer >= 0, got -1'),
    (dict(switch_iter=1.5), 'switch_iter must be an integer >= 0, got 1.5'),
])
def test_drw_hook_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeferredReweightingHook(**kwargs)


def test_drw_hook_needs_a_reweighted_loss():
    class FakeRunner:
        model = torch.nn.Linear(2, 2)
        epoch = 0
        iter = 0

    with pytest.raises(ValueError, match='no loss with a weights_enabled'):
        DeferredReweightingHook(switch_epoch=1).before_train(FakeRunner())


def test_switch_hook_bad_arguments_and_models():
    with pytest.raises(ValueError, match='DeferredSwitchHook: attribute '
                       "must be an attribute name, got 'pcb enabled'"):
        DeferredSwitchHook('pcb enabled', switch_epoch=1)
    with pytest.raises(ValueError, match='DeferredSwitchHook: give exactly '
                       'one of switch_epoch'):
        DeferredSwitchHook('pcb_enabled')

    class FakeRunner:
        model = torch.nn.Linear(2, 2)
        epoch = 0
        iter = 0

    with pytest.raises(ValueError, match='no loss with a pcb_enabled '
                       "switch; .*type='PCBLoss'"):
        DeferredSwitchHook('pcb_enabled',
                           switch_epoch=1).before_train(FakeRunner())


def test_deferred_sampler_bad_arguments(synthetic_root):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(DRS_CONFIG).train_dataloader
    dataset = DATASETS.build(
        dict(cfg.dataset, data_root=synthetic_root, pipeline=[], indices=8))
    with pytest.raises(ValueError, match="sampler config with a 'type'"):
        DeferredSampler(dataset, sampler='RFSSampler', switch_epoch=1)
    with pytest.raises(ValueError, match='switch_epoch must be an integer'):
        DeferredSampler(dataset, sampler=dict(type='RFSSampler'),
                        switch_epoch='8')
