from . import bbox_heads, iterative_roi_head, tde_roi_head  # noqa: F401
