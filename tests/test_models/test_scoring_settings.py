"""The test-time scoring settings protocol: every post-hoc knob (TDE alpha /
scoring, tau-norm tau, NorCal gamma / method, FRACAL lambda / logit
adjustment) is a constructor argument, a plain attribute and a validated
run-time setting, found by isinstance."""
import pytest
import torch
import torch.nn as nn

from mmdet.utils import register_all_modules
from mmdet_longtail.models.layers.tau_norm_linear import TauNormLinear
from mmdet_longtail.models.losses.calibrated_ce_loss import \
    CalibratedCrossEntropyLoss
from mmdet_longtail.models.losses.fracal_loss import FRACALLoss
from mmdet_longtail.models.roi_heads.bbox_heads.tde_bbox_head import \
    TDEBBoxHead
from mmdet_longtail.models.scoring_settings import (ScoringSettingsMixin,
                                                    scoring_components,
                                                    set_scoring_setting)

register_all_modules()
STATS = dict(image_count=[1, 2, 4])


def tde_head() -> TDEBBoxHead:
    return TDEBBoxHead(
        in_channels=4, fc_out_channels=8, roi_feat_size=2, num_classes=3)


def test_components_declare_their_settings():
    assert TauNormLinear.SCORING_SETTINGS == ('tau', )
    assert CalibratedCrossEntropyLoss.SCORING_SETTINGS == ('gamma', 'method')
    assert TDEBBoxHead.SCORING_SETTINGS == ('alpha', 'scoring')
    assert FRACALLoss.SCORING_SETTINGS == ('fractal_lambda',
                                           'logit_adjustment')
    head = tde_head()
    assert head.scoring_settings() == dict(alpha=1.5, scoring='tde')
    # the classifier's alpha is an internal of the head, not a second owner
    assert [n for n, _ in scoring_components(head, 'alpha')] == ['']


def test_set_scoring_settings_validates_and_keeps_on_error():
    fc = TauNormLinear(4, 3, tau=0.5)
    fc.set_scoring_settings(tau=1)
    assert fc.tau == 1.0 and isinstance(fc.tau, float)
    with pytest.raises(ValueError, match='tau must be >= 0'):
        fc.set_scoring_settings(tau=-1)
    assert fc.tau == 1.0
    with pytest.raises(KeyError, match="no scoring setting \\['alpha'\\]"):
        fc.set_scoring_settings(alpha=1.0)

    loss = CalibratedCrossEntropyLoss(
        num_classes=3, class_statistics=STATS, gamma=0.5)
    # validated together: 'cb' needs gamma < 1
    loss.set_scoring_settings(gamma=0.9, method='cb')
    assert (loss.gamma, loss.method) == (0.9, 'cb')
    with pytest.raises(ValueError, match="method='cb' needs"):
        loss.set_scoring_settings(gamma=1.5)
    assert loss.gamma == 0.9
    without_stats = CalibratedCrossEntropyLoss(num_classes=3)
    with pytest.raises(ValueError, match='class_statistics'):
        without_stats.set_scoring_settings(gamma=0.5)
    assert without_stats.gamma == 0.0

    head = tde_head()
    head.set_scoring_settings(alpha=0.5, scoring='deconfound')
    assert head.fc_cls.alpha == 0.5 and head.scoring == 'deconfound'
    with pytest.raises(ValueError, match='scoring='):
        head.set_scoring_settings(scoring='softmax')
    with pytest.raises(ValueError, match='alpha must be a finite'):
        head.set_scoring_settings(alpha=float('nan'))


def test_settings_change_the_outputs_as_the_constructor_does():
    torch.manual_seed(0)
    fc = TauNormLinear(4, 3, tau=0.0)
    x = torch.randn(5, 4)
    assert torch.equal(fc(x), nn.functional.linear(x, fc.weight, fc.bias))
    fc.set_scoring_settings(tau=1.0)
    built = TauNormLinear(4, 3, tau=1.0)
    built.load_state_dict(fc.state_dict())
    assert torch.equal(fc(x), built(x))

    logits = torch.randn(5, 4)
    loss = CalibratedCrossEntropyLoss(
        num_classes=3, class_statistics=STATS)
    assert torch.equal(loss.get_activation(logits), logits.softmax(-1))
    loss.set_scoring_settings(gamma=0.6)
    built = CalibratedCrossEntropyLoss(
        num_classes=3, class_statistics=STATS, gamma=0.6)
    assert torch.equal(loss.get_activation(logits),
                       built.get_activation(logits))


def test_model_wide_lookup_is_by_isinstance():

    class Unrelated(nn.Module):
        """Has attributes named like settings, but no protocol."""

        def __init__(self) -> None:
            super().__init__()
            self.alpha, self.tau, self.gamma = 1.0, 16.0, 0.1

    model = nn.ModuleDict(
        dict(
            a=TauNormLinear(4, 3, tau=0.0),
            b=nn.Sequential(TauNormLinear(4, 3, tau=0.5)),
            c=Unrelated(),
            d=tde_head()))
    assert [n for n, _ in scoring_components(model, 'tau')] == ['a', 'b.0']
    assert set_scoring_setting(model, 'tau', 0.25) == ['a', 'b.0']
    assert model['a'].tau == model['b'][0].tau == 0.25
    assert model['c'].tau == 16.0
    assert set_scoring_setting(model, 'alpha', 0.0) == ['d']
    assert model['c'].alpha == 1.0
    with pytest.raises(ValueError, match="setting 'gamma'"):
        set_scoring_setting(model, 'gamma', 0.5)
    # all components are checked before any changes
    with pytest.raises(ValueError):
        set_scoring_setting(model, 'tau', -1.0)
    assert model['a'].tau == 0.25
    assert issubclass(TauNormLinear, ScoringSettingsMixin)
