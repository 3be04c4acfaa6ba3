"""The scoring settings a sweep re-scores a detector with."""
import itertools
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

#: parameters of :class:`Setting` a sweep can vary
SWEEP_PARAMS = ('gamma', 'tau', 'alpha', 'fractal_lambda', 'logit_adjustment',
                'score_thr')


@dataclass(frozen=True)
class Setting:
    """One test-time scoring setting of a detector.

    ``gamma`` / ``method``, ``tau``, ``alpha`` and ``fractal_lambda`` /
    ``logit_adjustment`` are the test-time scoring settings
    (:mod:`mmdet_longtail.models.scoring_settings`) of the NorCal loss, the
    tau-norm classifiers, the TDE heads and the FRACAL loss; ``score_thr``
    is ``test_cfg.rcnn.score_thr``.

    Attributes:
        gamma (float): NorCal strength (0 = softmax).
        method (str): NorCal variant, ``'gamma'`` or ``'cb'``.
        tau (float): tau-norm exponent of the classifiers (0 = none).
        alpha (float | None): TDE strength (None: the head has no TDE).
        score_thr (float): score threshold before NMS.
        fractal_lambda (float | None): FRACAL strength of the fractal
            term (None: the head has no FRACAL loss).
        logit_adjustment (float | None): FRACAL weight of the frequency
            term (None: no FRACAL loss).
    """
    gamma: float
    method: str
    tau: float
    alpha: Optional[float]
    score_thr: float
    fractal_lambda: Optional[float] = None
    logit_adjustment: Optional[float] = None

    def label(self) -> str:
        """The setting as a table row name."""
        parts = [
            f'gamma={self.gamma:g}' +
            (f' ({self.method})' if self.method != 'gamma' else ''),
            f'tau={self.tau:g}'
        ]
        if self.alpha is not None:
            parts.append(f'alpha={self.alpha:g}')
        if self.fractal_lambda is not None:
            parts.append(f'lambda={self.fractal_lambda:g}, '
                         f'a={self.logit_adjustment:g}')
        parts.append(f'score_thr={self.score_thr:g}')
        return ', '.join(parts)


def sweep_settings(base: Setting,
                   values: Dict[str, Sequence[float]],
                   grid: bool = False,
                   norcal_method: Optional[str] = None) -> List[Setting]:
    """The base setting followed by the swept ones (no duplicates).

    Without ``grid`` each parameter is varied alone around ``base``; with
    ``grid`` every combination of the given values is used. Swept gammas use
    ``norcal_method`` (default: the base setting's).
    """
    values = {k: list(v) for k, v in values.items() if v}
    unknown = set(values) - set(SWEEP_PARAMS)
    if unknown:
        raise ValueError(f'unknown sweep parameters {sorted(unknown)}; '
                         f'choose from {SWEEP_PARAMS}')
    gamma_method = dict(method=norcal_method or base.method)

    def make(**changes) -> Setting:
        extra = gamma_method if 'gamma' in changes else {}
        return replace(base, **changes, **extra)

    settings = [base]
    if grid and values:
        names = list(values)
        for combo in itertools.product(*(values[n] for n in names)):
            settings.append(make(**dict(zip(names, combo))))
    else:
        for name, vals in values.items():
            settings.extend(make(**{name: v}) for v in vals)
    unique: List[Setting] = []
    for setting in settings:
        if setting not in unique:
            unique.append(setting)
    return unique


def swept_params(settings: Sequence[Setting]) -> List[str]:
    """The parameters that take more than one value in ``settings``."""
    return [
        p for p in SWEEP_PARAMS if len({getattr(s, p)
                                        for s in settings}) > 1
    ]
