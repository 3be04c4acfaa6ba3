"""BAGS bbox head (work in progress)."""
