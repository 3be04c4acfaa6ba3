"""Finding and reading LVIS result files (shared by the offline tools).

mmdet's metrics write ``<prefix>.bbox.json`` and ``<prefix>.segm.json``
(``outfile_prefix``); the tools accept those files or the prefix.
"""
import json
import os.path as osp
from typing import List, Sequence


def expand_results(paths: Sequence[str]) -> List[str]:
    """Files for the given paths; a prefix gives its bbox / segm files."""
    files = []
    for path in paths:
        if osp.isfile(path):
            files.append(path)
            continue
        found = [
            f'{path}.{t}.json' for t in ('bbox', 'segm')
            if osp.isfile(f'{path}.{t}.json')
        ]
        if not found:
            raise FileNotFoundError(
                f'results file not found: {path} (nor {path}.bbox.json / '
                f'{path}.segm.json)')
        files.extend(found)
    return files


def infer_iou_type(path: str, results: list) -> str:
    """``segm`` or ``bbox`` from the file name (``*.segm.json``), else
    from the content (a ``segmentation`` field means segm)."""
    name = osp.basename(path)
    for iou_type in ('segm', 'bbox'):
        if name.endswith(f'.{iou_type}.json'):
            return iou_type
    if results and isinstance(results[0], dict) and \
            'segmentation' in results[0]:
        return 'segm'
    return 'bbox'


def load_json_list(path: str) -> list:
    """A result file's detections, with errors that name the file."""
    try:
        with open(path) as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON: {e}') from e
    if not isinstance(results, list):
        raise ValueError(f'{path}: expected a list of detections, got '
                         f'{type(results).__name__}')
    return results
