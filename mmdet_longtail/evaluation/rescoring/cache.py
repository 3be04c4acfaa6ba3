"""The scoring cache on disk: per-image records in shards and ``meta.json``
(written last: its presence marks a complete cache)."""
import json
import os
import os.path as osp
from typing import Iterator, List

import torch

#: version of the record format; a cache of another version is refused
CACHE_VERSION = 1
META_FILE = 'meta.json'


def cache_is_complete(cache_dir: str) -> bool:
    """Whether ``cache_dir`` holds a complete cache."""
    return osp.isfile(osp.join(cache_dir, META_FILE))


def read_meta(cache_dir: str) -> dict:
    """The cache's ``meta.json`` (refused if of another version)."""
    from .fingerprint import CacheMismatchError
    with open(osp.join(cache_dir, META_FILE)) as f:
        meta = json.load(f)
    if meta.get('version') != CACHE_VERSION:
        raise CacheMismatchError(
            f'{cache_dir} holds a scoring cache of version '
            f'{meta.get("version")}, this tool writes version '
            f'{CACHE_VERSION}; use --rebuild-cache')
    return meta


def write_meta(cache_dir: str, meta: dict) -> None:
    """Write ``meta.json``; call it last."""
    with open(osp.join(cache_dir, META_FILE), 'w') as f:
        json.dump(meta, f, indent=1)


def iter_shards(cache_dir: str, meta: dict) -> Iterator[List[dict]]:
    """The cached records, one shard (list of records) at a time."""
    for name in meta['shards']:
        path = osp.join(cache_dir, name)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path} is missing from the scoring cache; use '
                f'--rebuild-cache')
        # our own file (metadata dicts, not only tensors)
        yield torch.load(path, map_location='cpu', weights_only=False)


class ShardWriter:
    """Append image records, written in shards of ``shard_size`` images."""

    def __init__(self, cache_dir: str, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f'shard_size must be >= 1, got {shard_size}')
        self.cache_dir = cache_dir
        self.shard_size = shard_size
        self.pending: List[dict] = []
        self.shards: List[str] = []
        self.num_images = 0

    def add(self, records: List[dict]) -> None:
        """Queue records; full shards are written."""
        self.pending.extend(records)
        self.num_images += len(records)
        while len(self.pending) >= self.shard_size:
            self._write(self.pending[:self.shard_size])
            self.pending = self.pending[self.shard_size:]

    def close(self) -> None:
        """Write the last, partial shard."""
        if self.pending:
            self._write(self.pending)
            self.pending = []

    def _write(self, records: List[dict]) -> None:
        name = f'shard_{len(self.shards):05d}.pt'
        torch.save(records, osp.join(self.cache_dir, name))
        self.shards.append(name)


def clear_cache(cache_dir: str) -> None:
    """Remove the files a cache consists of (nothing else)."""
    if not osp.isdir(cache_dir):
        return
    for name in os.listdir(cache_dir):
        if name == META_FILE or (name.startswith('shard_')
                                 and name.endswith('.pt')):
            os.remove(osp.join(cache_dir, name))
