"""TDE moving-average feature under 2-process CPU DDP (gloo): the ranks see
different batches, average their increments, and hold the same ``e``."""
import os.path as osp

import torch

from ddp import run_ddp

MOMENTUM = 0.7
NUM_CLASSES = 3  # foreground; background label = 3
FEATURE_DIM = 4
NUM_STEPS = 4


def rank_batch(step: int, rank: int):
    """Different features and labels on each rank; at step 1 rank 1 has only
    background RoIs, at step 2 both ranks have only background RoIs."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    feats = torch.rand(6, FEATURE_DIM, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (6, ), generator=gen)
    labels[::2] = NUM_CLASSES  # background RoIs
    if (step == 1 and rank == 1) or step == 2:
        labels[:] = NUM_CLASSES
    return feats, labels


def worker(rank: int, world_size: int, out_dir: str) -> None:
    from mmdet_longtail.models.layers.tde_classifier import TDEClassifier
    clf = TDEClassifier(
        FEATURE_DIM, NUM_CLASSES + 1, momentum=MOMENTUM).train()
    for step in range(NUM_STEPS):
        feats, labels = rank_batch(step, rank)
        with clf.roi_labels(labels):
            clf(feats)
    torch.save(clf.moving_average_feature,
               osp.join(out_dir, f'e_rank{rank}.pth'))


def expected_moving_average() -> torch.Tensor:
    """e <- mu e + mean over the ranks with foreground RoIs of their batch
    means of the foreground features (no update when no rank has any)."""
    e = torch.zeros(FEATURE_DIM)
    for step in range(NUM_STEPS):
        means = []
        for rank in range(2):
            feats, labels = rank_batch(step, rank)
            fg = labels < NUM_CLASSES
            if fg.any():
                means.append(feats[fg].mean(0))
        if means:
            e = MOMENTUM * e + sum(means) / len(means)
    return e


def test_two_ranks_hold_the_same_moving_average(tmp_path):
    run_ddp(worker, 2, str(tmp_path))
    e0 = torch.load(tmp_path / 'e_rank0.pth')
    e1 = torch.load(tmp_path / 'e_rank1.pth')
    assert torch.equal(e0, e1)
    torch.testing.assert_close(e0, expected_moving_average())
    # without the all-reduce the ranks would differ: their own recurrences
    own = []
    for rank in range(2):
        e = torch.zeros(FEATURE_DIM)
        for step in range(NUM_STEPS):
            feats, labels = rank_batch(step, rank)
            fg = labels < NUM_CLASSES
            if fg.any():
                e = MOMENTUM * e + feats[fg].mean(0)
        own.append(e)
    assert not torch.allclose(own[0], own[1])
    assert not torch.allclose(e0, own[0])
