from . import lws_linear, tau_norm_linear  # noqa: F401
from . import tde_classifier  # noqa: F401
