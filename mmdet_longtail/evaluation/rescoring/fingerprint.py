"""What a scoring cache was built for: model config, checkpoint, test set.

A cache stays valid when only test-time scoring settings, post-processing or
training settings change; anything else makes :func:`check_fingerprint`
refuse it with an error naming every difference.
"""
import hashlib
import json
import os.path as osp
from typing import Any, Callable, Dict, List, Optional

#: keys of the model config that only change training, so a cache stays
#: valid when they change
TRAINING_ONLY_KEYS = ('train_cfg', 'init_cfg', 'pretrained')


class CacheMismatchError(RuntimeError):
    """The cache was built for another config, checkpoint or dataset."""


def to_plain(obj: Any) -> Any:
    """ConfigDict / tuple trees as plain JSON-able dicts and lists."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _strip_keys(tree: Any, should_drop: Callable[[str], bool]) -> Any:
    if isinstance(tree, dict):
        return {
            k: _strip_keys(v, should_drop)
            for k, v in tree.items() if not should_drop(k)
        }
    if isinstance(tree, list):
        return [_strip_keys(v, should_drop) for v in tree]
    return tree


def model_identity(model_cfg: dict) -> dict:
    """The part of the model config that determines the cached outputs.

    Dropped: training-only keys, every ``loss_*`` (training, or the test
    activation that the sweep applies itself), ``test_cfg.rcnn``
    (post-processing), and the swept classifier settings (``tau``,
    ``alpha``), whose cached values are recorded separately. A
    ``TauNormLinear`` classifier counts as the ``nn.Linear`` it equals at
    ``tau=0``.
    """
    model = to_plain(model_cfg)
    model = _strip_keys(
        model, lambda k: k in TRAINING_ONLY_KEYS or k.startswith('loss_'))
    test_cfg = model.get('test_cfg')
    if isinstance(test_cfg, dict):
        test_cfg.pop('rcnn', None)
    heads = (model.get('roi_head') or {}).get('bbox_head')
    for head in heads if isinstance(heads, list) else [heads]:
        if not isinstance(head, dict):
            continue
        head.pop('alpha', None)
        predictor = head.get('cls_predictor_cfg')
        if isinstance(predictor, dict):
            predictor.pop('tau', None)
            if predictor.get('type') == 'TauNormLinear':
                predictor['type'] = 'Linear'  # TauNormLinear(tau=0)
            if predictor == {'type': 'Linear'}:
                del head['cls_predictor_cfg']  # BBoxHead's default
    return model


def resolve_ann_file(dataset_cfg: dict) -> Optional[str]:
    """Path of a dataset's annotation file (``data_root`` joined)."""
    ann_file = dataset_cfg.get('ann_file')
    if not ann_file:
        inner = dataset_cfg.get('dataset')
        return resolve_ann_file(inner) if isinstance(inner, dict) else None
    data_root = dataset_cfg.get('data_root') or ''
    return ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    """sha256 of a JSON tree (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def make_fingerprint(cfg, checkpoint: str) -> Dict[str, dict]:
    """``{'model config': ..., 'checkpoint': ..., 'dataset': ...}``, each
    with a ``sha256`` and what is needed to explain a difference."""
    model = model_identity(cfg.model)
    dataset = to_plain(cfg.test_dataloader.dataset)
    ann_file = resolve_ann_file(dataset)
    ann_sha = file_sha256(ann_file) if ann_file and osp.isfile(ann_file) \
        else None
    # the trees name the config keys in the error messages
    model_tree = {'model': model}
    dataset_tree = {
        'test_dataloader.dataset': dataset,
        'annotation file': ann_file,
        'annotation file sha256': ann_sha
    }
    return {
        'model config': dict(sha256=json_sha256(model_tree), tree=model_tree),
        'checkpoint': dict(sha256=file_sha256(checkpoint),
                           path=osp.abspath(checkpoint)),
        'dataset': dict(sha256=json_sha256(dataset_tree), tree=dataset_tree),
    }


def tree_differences(old: Any, new: Any, path: str = '') -> List[str]:
    """Dotted paths where two JSON trees differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f'{path}.{key}' if path else key
            if key not in old:
                diffs.append(f'{sub} (only now: {new[key]!r})')
            elif key not in new:
                diffs.append(f'{sub} (only in the cache: {old[key]!r})')
            else:
                diffs.extend(tree_differences(old[key], new[key], sub))
        return diffs
    if isinstance(old, list) and isinstance(new, list) and \
            len(old) == len(new):
        diffs = []
        for i, (a, b) in enumerate(zip(old, new)):
            diffs.extend(tree_differences(a, b, f'{path}[{i}]'))
        return diffs
    if old != new:
        return [f'{path or "<root>"}: cached {old!r}, now {new!r}']
    return []


def check_fingerprint(cached: Dict[str, dict], current: Dict[str, dict],
                      cache_dir: str) -> None:
    """Raise :class:`CacheMismatchError` naming every differing part."""
    problems = []
    for part, now in current.items():
        old = cached.get(part, {})
        if old.get('sha256') == now['sha256']:
            continue
        if part == 'checkpoint':
            problems.append(
                f'checkpoint: cached {old.get("path")} (sha256 '
                f'{str(old.get("sha256"))[:12]}), now {now["path"]} '
                f'(sha256 {now["sha256"][:12]})')
            continue
        details = tree_differences(old.get('tree'), now['tree'])
        if not details:
            details = ['(contents differ)']
        problems.append(f'{part}: differs at ' + '; '.join(details[:5]) +
                        (f' (+{len(details) - 5} more)'
                         if len(details) > 5 else ''))
    if problems:
        raise CacheMismatchError(
            f'the scoring cache in {cache_dir} was built for a different '
            f'run:\n  - ' + '\n  - '.join(problems) +
            '\nUse --rebuild-cache to overwrite it, or another --cache-dir.')
