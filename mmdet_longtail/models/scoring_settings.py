"""Test-time scoring settings: one protocol for every post-hoc knob.

Some components change the detector's scores at test time only, with
settings that can be chosen without retraining: the TDE strength ``alpha``
(and ``scoring``) of :class:`TDEBBoxHead`, the ``tau`` of
:class:`TauNormLinear`, NorCal's ``gamma`` (and ``method``) of
:class:`CalibratedCrossEntropyLoss`, FRACAL's ``fractal_lambda`` and
``logit_adjustment`` of :class:`FRACALLoss`. Each such component

* derives from :class:`ScoringSettingsMixin` and lists the names in its
  class attribute ``SCORING_SETTINGS``;
* takes every one of them as a constructor argument of the same name, so
  ``tools/test.py --cfg-options <path to the component>.<name>=<value>``
  sets it (e.g. ``model.roi_head.bbox_head.loss_cls.gamma=0.6``);
* holds each as a plain attribute of the same name, read by its forward /
  activation at every call;
* changes them at run time only through :meth:`set_scoring_settings`,
  which validates the new values together (as the constructor does).

:func:`scoring_components` finds the components of a model that have a given
setting (by ``isinstance``, never by attribute names), and
:func:`set_scoring_setting` sets it on all of them. Post-hoc methods added
later join by deriving from the mixin; the score sweep
(``tools/analysis_tools/sweep_scoring.py``) uses nothing else.
"""
from typing import Any, ClassVar, Dict, List, Tuple

from torch import nn


class ScoringSettingsMixin:
    """A model component with test-time scoring settings.

    Subclasses set :attr:`SCORING_SETTINGS` and, when some values are
    invalid or depend on each other, override
    :meth:`check_scoring_settings`.
    """

    #: names of the settings: constructor arguments and attributes
    SCORING_SETTINGS: ClassVar[Tuple[str, ...]] = ()

    def scoring_settings(self) -> Dict[str, Any]:
        """The current value of every setting, by name."""
        return {name: getattr(self, name) for name in self.SCORING_SETTINGS}

    def check_scoring_settings(self, settings: Dict[str, Any]
                               ) -> Dict[str, Any]:
        """Validate a complete set of settings; return them normalised
        (e.g. as floats). Raise ``ValueError`` for invalid values.

        Args:
            settings (dict): a value for every name in
                :attr:`SCORING_SETTINGS`.
        """
        return settings

    def set_scoring_settings(self, **values: Any) -> None:
        """Change some settings at run time (the others are kept).

        The new values are validated together with the kept ones, then set;
        on an error nothing changes.
        """
        unknown = sorted(set(values) - set(self.SCORING_SETTINGS))
        if unknown:
            raise KeyError(f'{type(self).__name__} has no scoring setting '
                           f'{unknown}; it has {list(self.SCORING_SETTINGS)}')
        merged = self.scoring_settings()
        merged.update(values)
        checked = self.check_scoring_settings(merged)
        for name in values:
            setattr(self, name, checked[name])


def scoring_components(model: nn.Module,
                       name: str) -> List[Tuple[str, ScoringSettingsMixin]]:
    """``(module name, module)`` of every component of ``model`` (itself
    included) that has the scoring setting ``name``, in module order."""
    return [(module_name, module)
            for module_name, module in model.named_modules()
            if isinstance(module, ScoringSettingsMixin)
            and name in module.SCORING_SETTINGS]


def set_scoring_setting(model: nn.Module, name: str, value: Any) -> List[str]:
    """Set the scoring setting ``name`` on every component of ``model`` that
    has it; returns their module names. Raises ``ValueError`` if none has
    it."""
    components = scoring_components(model, name)
    if not components:
        raise ValueError(f'no component of {type(model).__name__} has the '
                         f'test-time scoring setting {name!r}')
    for _, module in components:  # all checked before any is changed
        module.check_scoring_settings(
            dict(module.scoring_settings(), **{name: value}))
    for _, module in components:
        module.set_scoring_settings(**{name: value})
    return [module_name for module_name, _ in components]
