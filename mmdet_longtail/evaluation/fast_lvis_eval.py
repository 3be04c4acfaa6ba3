"""faster-coco-eval LVIS backend (work in progress)."""
