from . import layers, losses, roi_heads  # noqa: F401
