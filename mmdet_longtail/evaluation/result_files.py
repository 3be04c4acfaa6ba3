"""Finding and reading LVIS result files and the metrics of a work
directory (shared by the offline tools).

mmdet's metrics write ``<prefix>.bbox.json`` and ``<prefix>.segm.json``
(``outfile_prefix``); the tools accept those files or the prefix.
``tools/test.py --out x.pkl`` dumps the predictions (mmdet's
``DumpDetResults``: data samples with ``img_id`` and ``pred_instances``);
:func:`load_predictions` turns them into the same LVIS result lists.
``tools/test.py`` logs the metric's numbers (full precision) to
``<work_dir>/<timestamp>/<timestamp>.json``.
"""
import glob
import json
import os.path as osp
import pickle
from typing import Dict, List, Sequence, Tuple

import numpy as np

PICKLE_SUFFIXES = ('.pkl', '.pickle')


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


def _array(value) -> np.ndarray:
    """A tensor (``DumpDetResults`` keeps CPU tensors) or array as numpy."""
    if hasattr(value, 'numpy'):
        value = value.numpy()
    return np.asarray(value)


def load_predictions(path: str, cat_ids: Sequence[int]
                     ) -> Dict[str, List[dict]]:
    """LVIS results (``bbox``, and ``segm`` when masks were predicted) of a
    ``tools/test.py --out`` pickle, as mmdet's ``LVISMetric.results2json``
    writes them: box ``[x, y, w, h]``, ``category_id = cat_ids[label]``
    (``cat_ids``: the annotation file's category ids, ascending), masks as
    RLE with text ``counts``, ``mask_scores`` for segm when present.

    Errors name the file, the sample and the field.
    """
    try:
        with open(path, 'rb') as f:
            samples = pickle.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f'results file not found: {path}') from e
    except (pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f'{path} is not a pickle of predictions: {e}') \
            from e
    if not isinstance(samples, list):
        raise ValueError(f'{path}: expected a list of data samples '
                         f'(tools/test.py --out), got '
                         f'{type(samples).__name__}')
    bbox: List[dict] = []
    segm: List[dict] = []
    with_masks = None
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict) or 'pred_instances' not in sample:
            raise ValueError(f'{path}: sample #{i} has no '
                             f"'pred_instances' field")
        if 'img_id' not in sample:
            raise ValueError(f"{path}: sample #{i} has no 'img_id' field")
        pred = sample['pred_instances']
        for name in ('bboxes', 'scores', 'labels'):
            if name not in pred:
                raise ValueError(f'{path}: sample #{i} (img_id='
                                 f"{sample['img_id']}) has no "
                                 f"'pred_instances.{name}' field")
        boxes = _array(pred['bboxes']).reshape(-1, 4).astype(float)
        scores = _array(pred['scores']).astype(float)
        labels = _array(pred['labels']).astype(np.int64)
        bad = np.flatnonzero((labels < 0) | (labels >= len(cat_ids)))
        if bad.size:
            raise ValueError(
                f"{path}: sample #{i} (img_id={sample['img_id']}) has "
                f'label={int(labels[bad[0]])}, outside the '
                f'{len(cat_ids)} categories of the annotation file')
        if with_masks is None:
            with_masks = 'masks' in pred
        mask_scores = _array(pred['mask_scores']).astype(float) \
            if 'mask_scores' in pred else scores
        for k in range(len(labels)):
            x1, y1, x2, y2 = boxes[k].tolist()
            det = dict(
                image_id=int(sample['img_id']),
                bbox=[x1, y1, x2 - x1, y2 - y1],
                score=float(scores[k]),
                category_id=int(cat_ids[labels[k]]))
            bbox.append(det)
            if with_masks:
                rle = dict(pred['masks'][k])
                if isinstance(rle['counts'], bytes):
                    rle['counts'] = rle['counts'].decode()
                segm.append(
                    dict(det, score=float(mask_scores[k]), segmentation=rle))
    return dict(bbox=bbox, segm=segm) if with_masks else dict(bbox=bbox)


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
