"""The C++ CPU kernels (mmdet_longtail/ops/csrc) against the losses' eager
definitions, their thread-independence, and the build's fallbacks.

The kernels evaluate ``exp`` with ATen's exp_u20 (<= 20 ulp), so they agree
with the float64 evaluation of the same math to ~1e-5 relative, not to the
last bit.
"""
import logging
import os
import time

import pytest
import torch

import mmdet_longtail.ops.cpu_kernels as cpu_kernels
from mmdet_longtail.models.losses.efl_loss import efl_dense
from mmdet_longtail.models.losses.eql_loss import one_hot_bce_sums

pytestmark = pytest.mark.skipif(
    not cpu_kernels.enabled(), reason='MMDET_LONGTAIL_CPU_KERNELS=0')


@pytest.fixture(scope='module')
def kernels():
    """The built extension: this machine has a C++ toolchain, so a failed
    build is a failure here, not a skip."""
    module = cpu_kernels.load_cpu_kernels()
    assert module is not None, 'the CPU kernels did not build'
    return module


def close(actual, expected, rtol=2e-5, atol=1e-7):
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=rtol, atol=atol)


def efl_case(num, classes, gen, with_weight):
    logits = 4 * torch.randn(num, classes, generator=gen) - 2
    logits[0, :3] = torch.tensor([-100.0, 100.0, 0.0])  # saturated, zero
    labels = torch.randint(0, classes + 1, (num, ), generator=gen)
    # the first column, the last (in the tail vector) and background
    labels[:3] = torch.tensor([0, classes - 1, classes])
    weight = (torch.rand(num, generator=gen) > 0.2).float() * 1.5 \
        if with_weight else None
    gamma = 2 + 8 * torch.rand(classes, generator=gen)
    weighting = gamma / 2
    return logits, labels, weight, gamma, weighting


def efl_reference(logits, labels, weight, gamma, weighting, alpha, scale):
    """``efl_dense`` in float64, and its (2, C) gradient magnitudes."""
    num, classes = logits.shape
    w = torch.ones(1, 1) if weight is None else weight.view(-1, 1)
    loss, grad, logit_sums, class_sums = efl_dense(
        logits.double(), labels, gamma.double().view(1, -1),
        (weighting * scale).double().view(1, -1), alpha, w.double(), True)
    is_pos = labels[:, None] == torch.arange(classes)
    positive = (grad.abs() * is_pos).sum(0)
    negative = (grad.abs() * ~is_pos).sum(0)
    return loss, grad, torch.stack([positive, negative]), logit_sums


@pytest.mark.parametrize('num, classes', [(300, 1203), (257, 5), (64, 33)])
@pytest.mark.parametrize('with_weight', [False, True])
def test_efl_kernel_equals_the_eager_definition(kernels, num, classes,
                                                with_weight):
    gen = torch.Generator().manual_seed(num + classes)
    logits, labels, weight, gamma, weighting = efl_case(
        num, classes, gen, with_weight)
    alpha, scale = 0.25, 1 / 37
    expected = efl_reference(logits, labels, weight, gamma, weighting,
                             alpha, scale)
    actual = kernels.efl_forward_labels(
        logits, labels,
        torch.empty(0) if weight is None else weight, gamma, weighting,
        alpha, scale)
    for got, want in zip(actual, expected):
        close(got, want)
    # background rows and zero-weight rows have no positive gradient
    grad = actual[1]
    assert bool((grad[2] >= 0).all())
    if weight is not None:
        assert bool((grad[weight == 0] == 0).all())


@pytest.mark.parametrize('with_kind', [False, True])
@pytest.mark.parametrize('with_statistics', [False, True])
def test_one_hot_bce_kernel_equals_the_eager_definition(
        kernels, with_kind, with_statistics):
    gen = torch.Generator().manual_seed(7)
    num, columns = 333, 1204
    logits = 4 * torch.randn(num, columns, generator=gen) - 2
    logits[0, :2] = torch.tensor([-100.0, 100.0])
    target = torch.randint(-1, columns, (num, ), generator=gen)
    target[:3] = torch.tensor([0, columns - 1, -1])
    pos_w = torch.rand(columns, generator=gen) + 0.5
    rows = 2 if with_kind else 1
    neg_w = torch.rand(rows, columns, generator=gen)
    kind = torch.randint(0, 2, (num, ), generator=gen) if with_kind \
        else None
    scale = 1 / num
    loss, grad, logit_sums, column_sums = one_hot_bce_sums(
        logits.double(), target, pos_w.double(), neg_w.double(), kind,
        scale, True)
    actual = kernels.one_hot_bce_forward(
        logits, target, pos_w, neg_w,
        torch.empty(0, dtype=torch.long) if kind is None else kind, scale,
        with_statistics)
    assert len(actual) == (4 if with_statistics else 3)
    for got, want in zip(actual[:3], (loss, grad, logit_sums)):
        close(got, want)
    if with_statistics:
        is_target = target[:, None] == torch.arange(columns)
        magnitude = grad.abs() / scale
        expected = torch.stack([(magnitude * is_target).sum(0),
                                (magnitude * ~is_target).sum(0)])
        close(actual[3], expected)


def test_per_class_sums_do_not_depend_on_the_thread_count(kernels):
    """The row blocks are fixed by N, so 1 or 2 threads give the same bits
    (statistics that reproduce across machines and settings)."""
    gen = torch.Generator().manual_seed(3)
    logits, labels, weight, gamma, weighting = efl_case(1000, 301, gen, True)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(kernels.efl_forward_labels(
                logits, labels, weight, gamma, weighting, 0.25, 0.01))
            results.append(kernels.one_hot_bce_forward(
                logits, labels, gamma, weighting[None],
                torch.empty(0, dtype=torch.long), 0.01, True))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(results[:2], results[2:]):
        for a, b in zip(one, two):
            assert torch.equal(a, b)


def test_kernels_apply_to_large_contiguous_float32_cpu_inputs(kernels):
    logits = torch.zeros(300, 200)
    assert cpu_kernels.cpu_kernels_for(logits, 60000) is kernels
    assert cpu_kernels.cpu_kernels_for(logits, 60001) is None  # small
    assert cpu_kernels.cpu_kernels_for(logits.double(), 100) is None
    assert cpu_kernels.cpu_kernels_for(logits.t(), 100) is None


def test_empty_input(kernels):
    out = kernels.efl_forward_labels(
        torch.zeros(0, 7), torch.zeros(0, dtype=torch.long), torch.empty(0),
        torch.ones(7), torch.ones(7), 0.25, 1.0)
    assert out[1].shape == (0, 7) and out[2].shape == (2, 7)
    assert not out[2].any()


def test_bad_arguments_raise(kernels):
    logits = torch.zeros(4, 3)
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(RuntimeError, match='contiguous float32'):
        kernels.efl_forward_labels(logits.double(), labels, torch.empty(0),
                                   torch.ones(3), torch.ones(3), 0.25, 1.0)
    with pytest.raises(RuntimeError, match=r'gamma and weighting'):
        kernels.efl_forward_labels(logits, labels, torch.empty(0),
                                   torch.ones(2), torch.ones(3), 0.25, 1.0)
    with pytest.raises(RuntimeError, match=r'row_kind must lie in \[0, 2\)'):
        kernels.one_hot_bce_forward(logits, labels, torch.ones(3),
                                    torch.ones(2, 3),
                                    torch.tensor([0, 1, 2, 0]), 1.0, False)
    with pytest.raises(RuntimeError, match='row_kind is required'):
        kernels.one_hot_bce_forward(logits, labels, torch.ones(3),
                                    torch.ones(2, 3),
                                    torch.empty(0, dtype=torch.long), 1.0,
                                    False)


# --------------------------------------------------------------- build
@pytest.fixture
def fresh_state(monkeypatch):
    """A process that has not loaded the kernels yet."""
    monkeypatch.setattr(cpu_kernels, '_state', {
        'module': None,
        'failed': False
    })


def test_failed_build_warns_once_and_returns_none(monkeypatch,
                                                  fresh_state):
    calls, warnings = [], []

    def broken_build():
        calls.append(1)
        raise OSError('no C++ compiler\nsecond line')

    def record(msg, logger=None, level=logging.INFO):
        if level == logging.WARNING:
            warnings.append(msg)

    monkeypatch.setattr(cpu_kernels, 'build', broken_build)
    monkeypatch.setattr(cpu_kernels, 'print_log', record)
    assert cpu_kernels.load_cpu_kernels() is None
    assert cpu_kernels.load_cpu_kernels() is None
    assert len(calls) == 1  # not retried
    assert len(warnings) == 1
    assert 'OSError: no C++ compiler' in warnings[0]
    assert 'second line' not in warnings[0]


def test_switched_off_by_the_environment(monkeypatch, fresh_state):
    monkeypatch.setenv('MMDET_LONGTAIL_CPU_KERNELS', '0')
    monkeypatch.setattr(cpu_kernels, 'build', pytest.fail)
    assert cpu_kernels.load_cpu_kernels() is None


def test_stale_build_lock_is_removed(tmp_path):
    lock = tmp_path / 'lock'
    lock.write_text('')
    cpu_kernels.remove_stale_lock(str(tmp_path))
    assert lock.exists()  # fresh: a build may be running
    old = time.time() - cpu_kernels.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    cpu_kernels.remove_stale_lock(str(tmp_path))
    assert not lock.exists()
    cpu_kernels.remove_stale_lock(str(tmp_path))  # no lock: no error


def test_build_name_tracks_every_source(monkeypatch, tmp_path):
    """torch's cache tracks the .cpp files only; the name carries the
    header too, so editing it rebuilds."""
    for name in cpu_kernels.SOURCES + cpu_kernels.HEADERS:
        (tmp_path / name).write_text('// ' + name)
    monkeypatch.setattr(cpu_kernels, 'CSRC_DIR', str(tmp_path))
    before = cpu_kernels.source_digest()
    (tmp_path / cpu_kernels.HEADERS[0]).write_text('// edited')
    assert cpu_kernels.source_digest() != before
