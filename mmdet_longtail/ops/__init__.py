"""Compiled kernels used by mmdet_longtail's losses."""
from .cpu_kernels import cpu_kernels_for, load_cpu_kernels

__all__ = ['cpu_kernels_for', 'load_cpu_kernels']
