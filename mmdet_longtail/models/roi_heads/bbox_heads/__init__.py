from . import bags_bbox_head, tde_bbox_head  # noqa: F401
