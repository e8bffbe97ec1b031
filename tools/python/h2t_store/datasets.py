"""PyTorch datasets over a stored split (``pip install h2t-store[torch]``).

Both open the store lazily in the process that reads (LMDB forbids sharing an environment across
``fork``), so they work with a ``DataLoader`` and any number of worker processes.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .store import Columns, FeatureSet, Store, _canonical_columns


class _SplitSource:
    """What both datasets share: the store path, the split's rows and labels, the selected columns,
    and a per-process ``Store``."""

    def __init__(self, store: Union[str, Store], featureset: str, dataset: str, split: str, columns: Columns):
        self.path = store.path if isinstance(store, Store) else os.fspath(store)
        opened = Store(self.path)
        try:
            self.fs: FeatureSet = opened.feature_set(featureset)
            self.rows, self.labels = opened.split_rows(self.fs, dataset, split)
            self.columns = _canonical_columns(self.fs, columns)
        finally:
            opened.close()
        self.dataset, self.split = dataset, split
        self._store: Optional[Store] = None

    @property
    def store(self) -> Store:
        # A Store inherited through fork (or unpickled) is never reused: open one per process.
        if self._store is None or self._store.pid != os.getpid():
            self._store = Store(self.path)
        return self._store

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.store.read_rows(self.fs, rows, self.columns)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    @property
    def width(self) -> int:
        return self.fs.width if self.columns is None else len(self.columns)


class FeatureDataset(Dataset):
    """Map-style dataset of a split: ``dataset[i] = (features float32 tensor (k,), label int64)``.

    Random access by index; ``DataLoader`` fetches whole batches through ``__getitems__``, which
    decodes each touched tile once per batch.
    """

    def __init__(self, store: Union[str, Store], featureset: str, dataset: str, split: str, columns: Columns = None):
        self.source = _SplitSource(store, featureset, dataset, split, columns)

    def __len__(self) -> int:
        return len(self.source.rows)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.source.dataset}/{self.source.split} ({n} examples)")
        x = self.source.read(self.source.rows[[index]])[0]
        return torch.from_numpy(x), int(self.source.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> List[Tuple[torch.Tensor, int]]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {self.source.dataset}/{self.source.split} ({len(self)} examples)")
        X = torch.from_numpy(self.source.read(self.source.rows[idx]))
        return [(X[i], int(self.source.labels[j])) for i, j in enumerate(idx)]


class FeatureIterableDataset(IterableDataset):
    """Streams a split segment by segment: each worker takes every ``num_workers``-th segment (so
    the workers together yield every example exactly once), decodes ``window`` segments at a time,
    and shuffles inside that window with a seed derived from ``seed``, the epoch and the window.

    Yields ``(features, label)`` pairs, or ``(X (b, k), y (b,))`` batches when ``batch_size`` is
    given (use ``DataLoader(..., batch_size=None)`` then). ``set_epoch`` changes the order.
    """

    def __init__(self, store: Union[str, Store], featureset: str, dataset: str, split: str, columns: Columns = None,
                 shuffle: bool = True, seed: int = 0, window: int = 4, batch_size: Optional[int] = None):
        if window <= 0:
            raise ValueError(f"window must be a positive number of segments, got {window}")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.source = _SplitSource(store, featureset, dataset, split, columns)
        self.shuffle, self.seed, self.window, self.batch_size = shuffle, seed, window, batch_size
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _segments(self) -> List[np.ndarray]:
        """Split positions grouped by the segment holding their row, in segment order."""
        fs, rows = self.source.fs, self.source.rows
        segment = np.searchsorted(fs.starts, rows, side="right") - 1
        order = np.argsort(segment, kind="stable")
        cuts = np.nonzero(np.diff(segment[order]))[0] + 1
        return np.split(order, cuts) if len(order) else []

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        groups = self._segments()
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        mine = groups[worker::workers]
        for first in range(0, len(mine), self.window):
            positions = np.concatenate(mine[first:first + self.window])
            if self.shuffle:
                positions = np.random.default_rng([self.seed, self.epoch, worker, first]).permutation(positions)
            X = torch.from_numpy(self.source.read(self.source.rows[positions]))
            y = torch.from_numpy(self.source.labels[positions])
            if self.batch_size is None:
                for i in range(len(positions)):
                    yield X[i], int(y[i])
            else:
                for b in range(0, len(positions), self.batch_size):
                    yield X[b:b + self.batch_size], y[b:b + self.batch_size]
