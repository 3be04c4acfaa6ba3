"""Equalized Focal Loss (work in progress)."""
