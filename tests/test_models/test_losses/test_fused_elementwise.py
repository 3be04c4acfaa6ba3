"""FusedElementwise: eager below the size threshold, compiled above it with
the same values, and a clear fall back to eager when compilation fails."""
import pytest
import torch
from mmengine.logging import MMLogger

from mmdet_longtail.models.losses import fused_elementwise
from mmdet_longtail.models.losses.fused_elementwise import FusedElementwise


def softplus_times(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return scale * (x.clamp(min=0) + torch.log1p(torch.exp(-x.abs())))


def test_small_inputs_run_eagerly():
    fused = FusedElementwise(softplus_times, min_numel=100)
    x, scale = torch.randn(9, 11), torch.rand(1, 11)
    torch.testing.assert_close(fused(x, scale), softplus_times(x, scale))
    assert fused._compiled is None  # never compiled


def test_large_inputs_compile_to_the_same_values():
    fused = FusedElementwise(softplus_times, min_numel=100)
    scale = torch.rand(1, 40)
    for rows in (50, 37):  # one graph for every number of rows
        x = 5 * torch.randn(rows, 40)
        torch.testing.assert_close(fused(x, scale), softplus_times(x, scale))
    assert fused._verified and not fused._unavailable


def test_failed_compilation_falls_back_to_eager_with_a_warning(
        monkeypatch, capsys):
    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError('no C++ compiler found\nlong trace')
        return compiled

    monkeypatch.setattr(fused_elementwise.torch, 'compile', broken_compile)
    MMLogger.get_instance('test_fused_elementwise')
    fused = FusedElementwise(softplus_times, min_numel=1)
    x, scale = torch.randn(8, 8), torch.rand(1, 8)
    torch.testing.assert_close(fused(x, scale), softplus_times(x, scale))
    assert fused._unavailable
    out = capsys.readouterr()
    assert 'torch.compile is unavailable here (RuntimeError: no C++ ' \
        'compiler found)' in out.out + out.err
    # later calls stay eager and do not warn again
    torch.testing.assert_close(fused(x, scale), softplus_times(x, scale))
    out = capsys.readouterr()
    assert 'unavailable' not in out.out + out.err


def test_a_failure_without_a_message_still_falls_back(monkeypatch):
    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError()
        return compiled

    monkeypatch.setattr(fused_elementwise.torch, 'compile', broken_compile)
    fused = FusedElementwise(softplus_times, min_numel=1)
    x, scale = torch.randn(8, 8), torch.rand(1, 8)
    torch.testing.assert_close(fused(x, scale), softplus_times(x, scale))
    assert fused._unavailable


def test_an_error_of_the_function_itself_still_raises(monkeypatch):
    def broken_compile(fn, **kwargs):
        return fn  # "compiles" fine; the function is what fails

    monkeypatch.setattr(fused_elementwise.torch, 'compile', broken_compile)
    fused = FusedElementwise(softplus_times, min_numel=1)
    with pytest.raises(RuntimeError, match='size of tensor'):
        fused(torch.randn(4, 5), torch.rand(1, 6))
