"""FRACAL: the box-counting dimension by hand, the calibrated scores against
the authors' procedure on small examples, zero settings = the plain model,
statistics from the train file, scores of a real mmdet head and bad input."""
import json
import math
import os
import os.path as osp
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet.models.losses import CrossEntropyLoss
from mmdet_longtail.datasets.class_stats import (ClassStatistics,
                                                 get_class_statistics)
from mmdet_longtail.datasets.fractal_dimension import (
    box_counting_dimension, class_box_counts, class_fractal_dimensions,
    get_fractal_dimensions)
from mmdet_longtail.models.losses.fracal_loss import FRACALLoss
from mmdet_longtail.models.scoring_settings import ScoringSettingsMixin
from heads import head_losses, raw_head_scores, shared_2fc_head


def ls_slope(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(((x - x.mean()) * (y - y.mean())).sum() /
                 ((x - x.mean())**2).sum())


# ------------------------------------------------------- fractal dimension


def test_line_filled_square_and_point():
    t = np.linspace(0, 1, 4096)
    assert box_counting_dimension(np.stack([t, t], 1)) == pytest.approx(
        1, abs=1e-12)
    g = (np.arange(64) + 0.5) / 64
    x, y = np.meshgrid(g, g)
    square = np.stack([x.ravel(), y.ravel()], 1)
    assert box_counting_dimension(square) == pytest.approx(2, abs=1e-12)
    point = np.array([[0.3, 0.7]])
    assert box_counting_dimension(point) == 0
    assert box_counting_dimension(point, saturation_cutoff=False) == 0


def test_tiny_sets_by_hand():
    corners = np.array([[.1, .1], [.9, .1], [.1, .9], [.9, .9]])
    # cut-off: n = 4 -> g in {1, 2}: N = (1, 4) -> slope ln 4 / ln 2 = 2
    assert box_counting_dimension(corners) == pytest.approx(2, abs=1e-12)
    # no cut-off, g = 1..3: N = (1, 4, 4)
    expected = ls_slope(np.log([1, 2, 3]), np.log([1, 4, 4]))
    assert box_counting_dimension(
        corners, max_grid=3, saturation_cutoff=False) == pytest.approx(
            expected, abs=1e-12)
    # two points side by side: N(1) = 1, N(2) = 2 -> slope 1
    pair = np.array([[.1, .1], [.9, .1]])
    assert box_counting_dimension(
        pair, max_grid=2, saturation_cutoff=False) == pytest.approx(1)
    # a centre on the right edge counts in the last cell
    counts = class_box_counts(np.array([[1.0, 1.0]]), np.array([0]), 1, 3)
    np.testing.assert_array_equal(counts, [[1, 1, 1]])


def test_class_dimensions_follow_the_authors_conventions():
    line = [[.1, .5], [.3, .5], [.6, .5], [.9, .5]]  # N = (1, 2) -> 1
    corners = [[.1, .1], [.9, .1], [.1, .9], [.9, .9]]  # -> 2
    clump = [[.1, .1], [.11, .1], [.12, .1], [.1, .12]]  # slope 0 -> 1
    few = [[.1, .1], [.9, .9]]  # fewer than 4 boxes -> 1
    centres = np.array(line + corners + clump + few)
    labels = np.repeat([0, 1, 2, 3], [4, 4, 4, 2])
    dims = class_fractal_dimensions(centres, labels, 5)
    np.testing.assert_allclose(dims, [1, 2, 1, 1, 1], atol=1e-12)


def tiny_lvis(path: str, scale: float = 1.0) -> str:
    """Two images of different sizes; class 7 (label 1) has its 4 boxes at
    the corners of the normalised image, class 3 (label 0) on a line."""
    images = [dict(id=1, width=100, height=50), dict(id=2, width=200,
                                                     height=400)]

    def box(img, cx, cy):
        w, h = (100, 50) if img == 1 else (200, 400)
        return [cx * w - 1, cy * h - 1, 2, 2]

    anns = []
    for k, (img, cx, cy) in enumerate([(1, .1, .1), (2, .9, .1), (1, .1, .9),
                                       (2, .9, .9)]):
        anns.append(dict(id=k + 1, image_id=img, category_id=7,
                         bbox=box(img, cx, cy), area=4.0))
    for k, cx in enumerate([.1, .3, .6, .9]):
        anns.append(dict(id=k + 10, image_id=1 + k % 2, category_id=3,
                         bbox=box(1 + k % 2, cx, .5), area=4.0))
    cats = [dict(id=3, name='a', frequency='r', image_count=2,
                 instance_count=4),
            dict(id=7, name='b', frequency='r', image_count=2,
                 instance_count=4)]
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return path


def test_dimensions_of_a_file_normalised_by_image_size_and_cached(tmp_path):
    path = tiny_lvis(str(tmp_path / 'train.json'))
    dims = get_fractal_dimensions(path)
    np.testing.assert_allclose(dims, [1, 2], atol=1e-12)
    assert get_fractal_dimensions(path) is dims  # cached
    assert not dims.flags.writeable
    with open(path) as f:  # a regenerated file is read again
        ann = json.load(f)
    ann['annotations'] = [a for a in ann['annotations'] if a['id'] < 10]
    with open(path, 'w') as f:
        json.dump(ann, f)
    os.utime(path, ns=(1, 10**18))
    np.testing.assert_allclose(get_fractal_dimensions(path), [1, 2])


def test_dimensions_read_the_file_through_the_one_reader(tmp_path):
    """A malformed file fails with the reader's error; a file whose
    statistics were read is not checked (nor warned about) again."""
    path = tiny_lvis(str(tmp_path / 'train.json'))
    with open(path) as f:
        ann = json.load(f)
    ann['annotations'][0]['image_id'] = True
    bad = str(tmp_path / 'bad.json')
    with open(bad, 'w') as f:
        json.dump(ann, f)
    with pytest.raises(ValueError, match=r'image_id=True is not an id'):
        get_fractal_dimensions(bad)
    ann['annotations'][0]['image_id'] = 1
    ann['annotations'][0]['iscrowd'] = 1
    crowd = str(tmp_path / 'crowd.json')
    with open(crowd, 'w') as f:
        json.dump(ann, f)
    with pytest.warns(UserWarning, match='1 crowd'):
        get_class_statistics(crowd)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        get_fractal_dimensions(crowd)


def test_dimensions_of_the_synthetic_train_file(synthetic_root):
    ann_file = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    with open(ann_file) as f:
        ann = json.load(f)
    size = {im['id']: (im['width'], im['height']) for im in ann['images']}
    cat_ids = sorted(c['id'] for c in ann['categories'])
    centres, labels = [], []
    for a in ann['annotations']:
        x, y, w, h = a['bbox']
        iw, ih = size[a['image_id']]
        centres.append(((x + w / 2) / iw, (y + h / 2) / ih))
        labels.append(cat_ids.index(a['category_id']))
    expected = class_fractal_dimensions(
        np.clip(centres, 0, 1), np.array(labels), len(cat_ids))
    np.testing.assert_allclose(get_fractal_dimensions(ann_file), expected)
    assert ((expected >= 1) & (expected <= 2)).all()


# ------------------------------------------------------------ calibration

COUNTS, NUM_IMAGES, DIMS = [1, 10, 4], 10, [1.0, 2.0, 1.5]


def fracal(**kwargs) -> FRACALLoss:
    kwargs.setdefault('fractal_dimensions', DIMS)
    return FRACALLoss(
        num_classes=3,
        class_statistics=ClassStatistics.from_counts(
            COUNTS, num_images=NUM_IMAGES),
        **kwargs)


def authors_b() -> np.ndarray:
    # b_c = log10(N / n_c) + (-log10(C)), the authors' base-10 variant
    return np.array([math.log10(NUM_IMAGES / n) for n in COUNTS]) - \
        math.log10(3)


def test_softmax_scores_hand_computed():
    z = torch.tensor([[0.2, -1.0, 0.5, 1.0], [2.0, 0.0, -0.5, -1.0]],
                     dtype=torch.float64)
    # the authors' procedure: softmax(z + [b, 0]), / D^lambda, renormalise
    s = F.softmax(z + torch.tensor(list(authors_b()) + [0.0]), dim=1)
    s = s / torch.tensor(DIMS + [1.0], dtype=torch.float64)**2
    expected = s / s.sum(1, keepdim=True)
    scores = fracal().get_activation(z)
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(scores.sum(1), torch.ones(2,
                                                         dtype=torch.float64))


def test_sigmoid_scores_hand_computed():
    z = torch.tensor([[0.2, -1.0, 0.5], [2.0, 0.0, -0.5]],
                     dtype=torch.float64)
    w = np.array(DIMS)**2
    w = w / w.sum()
    f = -np.log10(w) + math.log10(1 / 3)
    shift = torch.from_numpy(authors_b() + f)
    expected = z.sigmoid() * (z + shift).sigmoid()
    scores = fracal(use_sigmoid=True).get_activation(z)
    assert scores.shape == (2, 4) and (scores[:, 3] == 0).all()
    torch.testing.assert_close(scores[:, :3], expected, rtol=0, atol=1e-12)


def test_each_term_alone():
    z = torch.randn(5, 4, dtype=torch.float64)
    only_b = F.softmax(
        z + torch.tensor(list(authors_b()) + [0.0]), dim=1)
    torch.testing.assert_close(
        fracal(fractal_lambda=0).get_activation(z), only_b, rtol=0,
        atol=1e-12)
    s = F.softmax(z, 1) / torch.tensor(DIMS + [1.0], dtype=torch.float64)**3
    torch.testing.assert_close(
        fracal(logit_adjustment=0, fractal_lambda=3).get_activation(z),
        s / s.sum(1, keepdim=True), rtol=0, atol=1e-12)


@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_zero_settings_give_the_plain_scores(use_sigmoid):
    loss = fracal(use_sigmoid=use_sigmoid)
    z = 3 * torch.randn(6, 3 if use_sigmoid else 4)
    calibrated = loss.get_activation(z)
    # test-time scoring settings, changed on the built loss
    assert isinstance(loss, ScoringSettingsMixin)
    loss.set_scoring_settings(fractal_lambda=0, logit_adjustment=0)
    plain = loss.get_activation(z)
    if use_sigmoid:
        expected = torch.cat([z.sigmoid(), torch.zeros(6, 1)], 1)
    else:
        expected = F.softmax(z, -1)
    assert torch.equal(plain, expected)
    assert not torch.allclose(calibrated, plain)
    loss.set_scoring_settings(fractal_lambda=2.0, logit_adjustment=1.0)
    torch.testing.assert_close(loss.get_activation(z), calibrated)


def test_scoring_settings_are_validated_together():
    loss = FRACALLoss(num_classes=3, fractal_lambda=0, logit_adjustment=0)
    assert loss.scoring_settings() == dict(fractal_lambda=0.0,
                                           logit_adjustment=0.0)
    # nothing to calibrate with: a clear error, and nothing changes
    with pytest.raises(ValueError, match='class_statistics'):
        loss.set_scoring_settings(logit_adjustment=1.0)
    with pytest.raises(ValueError, match='fractal_lambda must be a finite'):
        loss.set_scoring_settings(fractal_lambda=-1)
    assert loss.scoring_settings() == dict(fractal_lambda=0.0,
                                           logit_adjustment=0.0)
    loss = fracal()
    with pytest.raises(KeyError, match='no scoring setting'):
        loss.set_scoring_settings(gamma=1.0)


def test_trains_as_the_plain_model():
    z = torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, 2, 3, 1, 3])
    weights = torch.ones(6)
    torch.testing.assert_close(
        fracal()(z, labels, weights, avg_factor=6),
        CrossEntropyLoss()(z, labels, weights, avg_factor=6))
    zs = z[:, :3].clone().requires_grad_(True)
    value = fracal(use_sigmoid=True)(zs, labels)
    y = F.one_hot(labels, 4)[:, :3].double()
    p = zs.detach().sigmoid()
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).sum() / 6
    assert abs(value.item() - expected.item()) < 1e-12
    value.backward()
    torch.testing.assert_close(zs.grad, (p - y) / 6, rtol=0, atol=1e-12)


@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_gradcheck_float64(use_sigmoid):
    loss = fracal(use_sigmoid=use_sigmoid)
    torch.manual_seed(0)
    z = torch.randn(6, loss.cls_channels(), dtype=torch.float64,
                    requires_grad=True)
    labels = torch.tensor([0, 3, 2, 3, 1, 3])
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (z, ))


def test_half_logits_scored_in_float32():
    z = torch.randn(4, 4).half()
    scores = fracal().get_activation(z)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, fracal().get_activation(z.float()))


def test_statistics_and_dimensions_come_from_the_train_file(synthetic_root):
    ann_file = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    with open(ann_file) as f:
        ann = json.load(f)
    cats = sorted(ann['categories'], key=lambda c: c['id'])
    num_images = len({a['image_id'] for a in ann['annotations']})
    loss = FRACALLoss(num_classes=len(cats), class_statistics=ann_file)
    np.testing.assert_allclose(
        loss.adjustment(),
        np.log10(num_images / np.array([c['image_count'] for c in cats])) -
        math.log10(len(cats)))
    np.testing.assert_array_equal(loss.fractal_dimensions(),
                                  get_fractal_dimensions(ann_file))


@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_head_scores_valid_probabilities_background_last(use_sigmoid):
    stats = ClassStatistics.from_counts(COUNTS, num_images=NUM_IMAGES)
    head = shared_2fc_head(
        dict(type='FRACALLoss', num_classes=3, class_statistics=stats,
             fractal_dimensions=DIMS, use_sigmoid=use_sigmoid))
    width = 3 if use_sigmoid else 4
    assert head.fc_cls.out_features == width
    logits = 4 * torch.randn(6, width)
    scores = raw_head_scores(head, logits)
    assert scores.shape == (6, 4)
    assert ((scores >= 0) & (scores <= 1)).all()
    torch.testing.assert_close(scores, head.loss_cls.get_activation(logits))
    if use_sigmoid:
        assert (scores[:, 3] == 0).all()
    else:
        torch.testing.assert_close(scores.sum(1), torch.ones(6))
    losses = head_losses(head, logits, torch.tensor([0, 3, 2, 3, 1, 3]))
    assert torch.isfinite(losses['loss_cls'])


def test_bad_input_rejected():
    with pytest.raises(ValueError, match=r'FRACALLoss needs a training image '
                       r'count >= 1.*classes \(labels\) \[1\] have no'):
        FRACALLoss(num_classes=3, fractal_dimensions=DIMS,
                   class_statistics=dict(image_count=[2, 0, 1],
                                         num_images=3))
    # without the frequency term a zero-count class is fine
    FRACALLoss(num_classes=3, fractal_dimensions=DIMS, logit_adjustment=0,
               class_statistics=dict(image_count=[2, 0, 1], num_images=3))
    with pytest.raises(ValueError, match='one value per class'):
        fracal(fractal_dimensions=[1.0, 2.0])
    with pytest.raises(ValueError, match=r'finite and > 0.*\[1\]'):
        fracal(fractal_dimensions=[1.0, 0.0, 1.5])
    with pytest.raises(ValueError, match='finite and > 0'):
        fracal(fractal_dimensions=[1.0, float('nan'), 1.5])
    with pytest.raises(ValueError, match='fractal_lambda must be'):
        fracal(fractal_lambda=-1)
    with pytest.raises(ValueError, match='box centres of the train'):
        fracal(fractal_dimensions=None)
    with pytest.raises(ValueError, match='needs class_statistics'):
        FRACALLoss(num_classes=3, fractal_dimensions=DIMS)
    loss = fracal()
    with pytest.raises(ValueError, match=r'cls_score must be \(N, 4\)'):
        loss.get_activation(torch.zeros(2, 3))
    with pytest.raises(ValueError, match='not finite'):
        loss.get_activation(torch.tensor([[0., float('nan'), 0., 0.]]))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(torch.zeros(1, 4), torch.tensor([5]))
    with pytest.raises(ValueError, match='logit_adjustment must be'):
        loss.set_scoring_settings(logit_adjustment=float('inf'))
    with pytest.raises(ValueError, match=r'centres must be finite'):
        box_counting_dimension(np.array([[0.5, 1.5]]))
