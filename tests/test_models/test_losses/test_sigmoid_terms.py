"""The element-wise building blocks of the sigmoid losses: the atanh-series
log1p on [0, 1], softplus and sigmoid from one exp, and the positive-target
mask, against float64 references."""
import pytest
import torch

from mmdet_longtail.models.losses.sigmoid_terms import (
    column_sums_at_labels, log1p_of_unit, positive_mask, softplus_and_sigmoid)


def test_log1p_series_is_accurate_to_float32_rounding():
    e = torch.cat([
        torch.tensor([0.0, 1e-40, 1e-30, 1e-7, 0.5, 1.0]),
        torch.rand(200000, generator=torch.Generator().manual_seed(0))
    ])
    reference = torch.log1p(e.double())
    ours = log1p_of_unit(e)
    assert ours.dtype == torch.float32
    assert ours[0] == 0 and ours[5] == pytest.approx(0.6931472, abs=1e-7)
    relative = (ours.double() - reference).abs() / reference.clamp(
        min=1e-300)
    # a few ulp (float32 ulp: 6e-8); torch.log1p itself is ~1 ulp
    assert relative.max() < 3e-7


def test_log1p_of_float64_is_exact_log1p():
    e = torch.rand(1000, dtype=torch.float64)
    assert torch.equal(log1p_of_unit(e), torch.log1p(e))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_softplus_and_sigmoid_match_the_references(dtype):
    z = torch.cat([
        torch.linspace(-87, 87, 100001, dtype=dtype),
        torch.tensor([-1e4, -200.0, 0.0, 200.0, 1e4], dtype=dtype)
    ])
    softplus, sigmoid = softplus_and_sigmoid(z)
    # log(1 + exp(z)); F.softplus returns z itself above z = 20
    ref_softplus = torch.logaddexp(torch.zeros_like(z.double()), z.double())
    ref_sigmoid = torch.sigmoid(z.double())
    rtol = 3e-7 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(softplus.double(), ref_softplus, rtol=rtol,
                               atol=1e-38)
    torch.testing.assert_close(sigmoid.double(), ref_sigmoid, rtol=rtol,
                               atol=1e-38)
    # far from 0 both are exact: 0 / 1 and z / 0 (no overflow, no NaN)
    assert softplus[-1] == 1e4 and softplus[-5] == 0
    assert sigmoid[-1] == 1 and sigmoid[-5] == 0


def test_positive_mask_from_labels_and_from_a_mask():
    labels = torch.tensor([0, 3, 4, -1, 2])  # 4 columns: 4 and -1 = none
    expected = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0],
                             [0, 0, 0, 0], [0, 0, 1, 0]]).bool()
    assert torch.equal(positive_mask(labels, 4), expected)
    assert positive_mask(expected, 4) is expected


def test_column_sums_at_labels():
    values = torch.arange(15.).view(5, 3)  # row i: 3i, 3i + 1, 3i + 2
    labels = torch.tensor([2, 0, 3, -1, 2])  # 3 and -1: no label in range
    # column 0: row 1 (3); column 2: rows 0 and 4 (2 + 14)
    expected = torch.tensor([3., 0., 16.])
    assert torch.equal(column_sums_at_labels(values, labels), expected)
