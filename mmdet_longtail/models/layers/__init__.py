from . import lws_linear, tau_norm_linear  # noqa: F401
from . import tde_classifier  # noqa: F401
from .classifier_layout import ClassifierLayout, classifier_layout

__all__ = ['ClassifierLayout', 'classifier_layout']
