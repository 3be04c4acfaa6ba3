"""Every loss given float16 logits, as a head under ``--amp`` (autocast)
gives them: the loss computes in float32, so its value, gradient and
statistics equal those of the same logits given in float32; its buffers
keep their dtype. On a GPU when there is one (where ``--amp`` trains),
else on the CPU."""
import copy

import pytest
import torch

from loss_zoo import LOSSES, channels, run_step, step_inputs

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
STEPS = 3


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_float16_logits_compute_in_float32(name):
    torch.manual_seed(0)
    loss16 = LOSSES[name]().float().train().to(DEVICE)
    loss32 = copy.deepcopy(loss16)
    dtypes = {k: b.dtype for k, b in loss32.named_buffers()}
    for step in range(STEPS):
        logits, labels, weights = step_inputs(step, channels(loss16))
        half = logits.half()
        value16, grad16 = run_step(loss16, half, labels, weights.half(),
                                   DEVICE)
        value32, grad32 = run_step(loss32, half.float(), labels,
                                   weights.half().float(), DEVICE)
        assert value16.dtype == torch.float32, name
        assert torch.isfinite(value16), name
        torch.testing.assert_close(value16, value32, rtol=1e-6, atol=1e-7)
        assert grad16.dtype == torch.float16, name
        torch.testing.assert_close(grad16, grad32.half())
        buffers32 = dict(loss32.named_buffers())
        for key, buffer in loss16.named_buffers():
            assert buffer.dtype == dtypes[key], f'{name}: {key}'
            torch.testing.assert_close(buffer, buffers32[key], rtol=1e-6,
                                       atol=1e-7, msg=f'{name}: {key}')


@pytest.mark.parametrize('name', sorted(
    name for name, build in LOSSES.items()
    if getattr(build(), 'custom_activation', False)))
def test_float16_logits_score_in_float32(name):
    """Test-time scores (``get_activation``) of float16 logits are float32
    and equal the scores of the same logits given in float32."""
    loss = LOSSES[name]().float().eval().to(DEVICE)
    logits, _, _ = step_inputs(0, channels(loss))
    half = logits.half().to(DEVICE)
    scores16 = loss.get_activation(half)
    assert scores16.dtype == torch.float32, name
    torch.testing.assert_close(
        scores16, loss.get_activation(half.float()), rtol=0, atol=0)
