"""Learnable weight scaling classifier (work in progress)."""
