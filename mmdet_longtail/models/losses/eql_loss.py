"""Equalization Loss (work in progress)."""
