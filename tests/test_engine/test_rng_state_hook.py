"""RNGStateHook under 2-process DDP (gloo): the ranks gather their states
where CheckpointHook saves, never inside the rank-0-only save, and each rank
restores its own state on resume."""
import pickle
from types import SimpleNamespace

import torch
import torch.distributed as dist
from mmengine.hooks import CheckpointHook

from ddp import run_ddp
from mmdet_longtail.engine.hooks.rng_state_hook import (CHECKPOINT_KEY,
                                                        RNGStateHook)


def fake_runner(by_epoch: bool, resume: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        hooks=[CheckpointHook(interval=1, by_epoch=by_epoch)],
        _resume=resume)


def worker(rank: int, world_size: int, out_dir: str) -> None:
    found = {}
    for by_epoch in (False, True):
        torch.manual_seed(100 + rank)  # each rank its own stream
        hook, runner = RNGStateHook(), fake_runner(by_epoch)
        hook.before_train(runner)
        hook.after_train_iter(runner, 0)
        found[f'after_iter_{by_epoch}'] = hook._gathered is not None
        hook.after_train_epoch(runner)
        checkpoint = {}
        if rank == 0:  # as Runner.save_checkpoint: rank 0 alone
            hook.before_save_checkpoint(runner, checkpoint)
        found[f'saved_{by_epoch}'] = checkpoint.get(CHECKPOINT_KEY)
    # resume: each rank continues its own stream from the saved state
    states = found['saved_True'] if rank == 0 else None
    box = [states]
    dist.broadcast_object_list(box, src=0)
    torch.manual_seed(0)
    hook, runner = RNGStateHook(), fake_runner(True, resume=True)
    hook.after_load_checkpoint(runner, {CHECKPOINT_KEY: box[0]})
    hook.before_train(runner)
    found['draw_after_resume'] = torch.rand(3)
    with open(f'{out_dir}/rank{rank}.pkl', 'wb') as f:
        pickle.dump(found, f)


def test_states_gathered_where_checkpoints_are_saved(tmp_path):
    run_ddp(worker, 2, str(tmp_path))
    found = []
    for rank in range(2):
        with open(tmp_path / f'rank{rank}.pkl', 'rb') as f:
            found.append(pickle.load(f))
    # iteration-based checkpoints: gathered after every iteration
    assert found[0]['after_iter_False'] and found[1]['after_iter_False']
    # epoch-based: nothing gathered per iteration, only after the epoch
    assert not found[0]['after_iter_True']
    for by_epoch in (False, True):
        states = found[0][f'saved_{by_epoch}']
        assert len(states) == 2
        for rank in range(2):
            torch.manual_seed(100 + rank)
            assert torch.equal(states[rank]['torch'], torch.get_rng_state())
    # rank r draws what an uninterrupted rank r would have drawn
    for rank in range(2):
        torch.manual_seed(100 + rank)
        assert torch.equal(found[rank]['draw_after_resume'], torch.rand(3))
