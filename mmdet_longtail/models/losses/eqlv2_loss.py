"""Equalization Loss v2 (work in progress)."""
