from . import lws_linear, tau_norm_linear  # noqa: F401
