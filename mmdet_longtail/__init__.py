"""mmdet_longtail: long-tailed detection and segmentation on LVIS for
MMDetection 3.x.

Importing the package registers every component into MMDetection's
registries (``mmdet.registry``); configs load it with::

    custom_imports = dict(imports=['mmdet_longtail'],
                          allow_failed_imports=False)
"""
from .version import __version__
from . import datasets, engine, evaluation, models  # noqa: F401

__all__ = ['__version__']
