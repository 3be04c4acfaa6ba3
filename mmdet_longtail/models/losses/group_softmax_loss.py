"""Balanced Group Softmax loss (work in progress)."""
