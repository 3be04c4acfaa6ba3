"""Every loss of the package on CUDA against the CPU, in float64.

Each loss is built once, copied to the CPU and to the GPU, and fed the same
float64 logits for a few training steps: the loss value, the gradient of the
logits, every buffer (running statistics, confusion EMA, sampling steps)
after each step and the test-time scores must agree to float64 rounding.
EFL's compiled sum (its default on CUDA) must equal its eager sum.
Skipped without a GPU (CI has none). ``MMLT_TEST_DEVICE=cpu`` runs the same
comparison CPU against CPU, which checks this module itself on a machine
without a GPU.
"""
import copy
import os

import pytest
import torch

from mmdet_longtail.models.losses.efl_loss import EFL, equalized_focal_loss
from loss_zoo import LOSSES, NUM_CLASSES, channels, run_step, step_inputs

DEVICE = os.environ.get('MMLT_TEST_DEVICE', 'cuda')
pytestmark = pytest.mark.skipif(
    DEVICE == 'cuda' and not torch.cuda.is_available(),
    reason='needs a GPU (MMLT_TEST_DEVICE=cpu checks this module on a CPU)')

STEPS = 3
# float64 on two devices: the same sums in another order
TOLERANCE = dict(rtol=1e-10, atol=1e-12)


def assert_close(device_value, cpu_value, what: str) -> None:
    torch.testing.assert_close(
        device_value, cpu_value, **TOLERANCE,
        msg=lambda m: f'{what}: {DEVICE} differs from the CPU\n{m}')


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_value_gradient_and_statistics_equal_the_cpu(name):
    torch.manual_seed(0)
    cpu_loss = LOSSES[name]().double().train()
    device_loss = copy.deepcopy(cpu_loss).to(DEVICE)
    num_channels = channels(cpu_loss)
    for step in range(STEPS):
        logits, labels, weights = step_inputs(step, num_channels)
        cpu_value, cpu_grad = run_step(cpu_loss, logits, labels, weights,
                                       'cpu')
        value, grad = (t.cpu() for t in run_step(device_loss, logits,
                                                  labels, weights, DEVICE))
        assert torch.isfinite(cpu_value)
        assert_close(value, cpu_value, f'{name} loss at step {step}')
        assert_close(grad, cpu_grad, f'{name} gradient at step {step}')
        # persistent (checkpointed) and derived (non-persistent) buffers
        cpu_state = dict(cpu_loss.named_buffers())
        for key, buffer in device_loss.named_buffers():
            assert buffer.device.type == torch.device(DEVICE).type, key
            assert_close(buffer.cpu(), cpu_state[key],
                         f'{name} buffer {key} after step {step}')


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_test_time_scores_equal_the_cpu(name):
    cpu_loss = LOSSES[name]().double().eval()
    if not (getattr(cpu_loss, 'custom_activation', False)
            or isinstance(cpu_loss, EFL)):
        pytest.skip(f'{name}: scored by the head\'s softmax')
    device_loss = copy.deepcopy(cpu_loss).to(DEVICE)
    logits = step_inputs(0, channels(cpu_loss))[0]
    scores = device_loss.get_activation(logits.to(DEVICE)).cpu()
    assert_close(scores, cpu_loss.get_activation(logits),
                 f'{name} test-time scores')


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_efl_fused_sum_equals_eager(dtype):
    """EFL's fused sum (``torch.compile``, its default on CUDA) gives the
    eager value and gradient on the same device: to float64 rounding, and
    to float32 rounding of a sum of 672 terms."""
    gen = torch.Generator().manual_seed(0)
    logits, labels, weights = step_inputs(0, NUM_CLASSES)
    gamma = 2 + 8 * torch.rand(NUM_CLASSES, generator=gen,
                               dtype=torch.float64)
    gamma = gamma.to(DEVICE, dtype)
    results = []
    for fused in (False, True):
        x = logits.to(DEVICE, dtype, copy=True).requires_grad_()
        loss = equalized_focal_loss(
            x, labels.to(DEVICE), gamma, gamma / 2, 0.25,
            weight=weights.to(DEVICE, dtype), avg_factor=17.0, fused=fused)
        loss.backward()
        results.append((loss.detach().cpu(), x.grad.cpu()))
    (eager, eager_grad), (fused, fused_grad) = results
    tolerance = TOLERANCE if dtype == torch.float64 else dict(rtol=1e-5,
                                                              atol=1e-7)
    torch.testing.assert_close(fused, eager, **tolerance)
    torch.testing.assert_close(fused_grad, eager_grad, **tolerance)
