from . import bbox_heads, tde_roi_head  # noqa: F401
