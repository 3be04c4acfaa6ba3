"""Finding and reading LVIS result files and the metrics of a work
directory (shared by the offline tools).

mmdet's metrics write ``<prefix>.bbox.json`` and ``<prefix>.segm.json``
(``outfile_prefix``); the tools accept those files or the prefix.
``tools/test.py`` logs the metric's numbers (full precision) to
``<work_dir>/<timestamp>/<timestamp>.json``.
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Sequence, Tuple


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


def find_test_results(work_dir: str) -> List[str]:
    """mmengine's test outputs in a work directory (``<timestamp>/
    <timestamp>.json``, also in sub-folders), oldest first."""
    found = []
    for path in glob.glob(osp.join(work_dir, '**', '*.json'),
                          recursive=True):
        stem = osp.splitext(osp.basename(path))[0]
        if osp.basename(osp.dirname(path)) == stem:
            found.append(path)
    return sorted(found, key=osp.basename)


def _lvis_numbers(record: dict) -> Dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if k.startswith('lvis/') and isinstance(v, (int, float))
    }


def work_dir_metrics(work_dir: str) -> Tuple[Dict[str, float], str]:
    """The ``lvis/...`` numbers of a run and where they come from.

    The latest ``tools/test.py`` result (``'test'``), else the last
    validation in the training log (``'val'``), else ``({}, '')``.
    """
    for path in reversed(find_test_results(work_dir)):
        with open(path) as f:
            numbers = _lvis_numbers(json.load(f))
        if numbers:
            return numbers, 'test'
    scalars = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    for path in reversed(scalars):
        last: Dict[str, float] = {}
        with open(path) as f:
            for line in f:
                numbers = _lvis_numbers(json.loads(line))
                if numbers:
                    last = numbers
        if last:
            return last, 'val'
    return {}, ''
