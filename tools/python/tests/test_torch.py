"""PyTorch datasets through a DataLoader with two worker processes: every example exactly once."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from h2t_store import Store  # noqa: E402
from h2t_store._cpus import usable_cores  # noqa: E402
from h2t_store.datasets import FeatureDataset, FeatureIterableDataset  # noqa: E402
from h2t_store.store import default_threads  # noqa: E402


def reference(toy, columns=None):
    with Store(toy["store"]) as store:
        return store.read_split(toy["featuresets"][16], "toy", "train", columns)


def positions(X: np.ndarray, got: np.ndarray) -> list:
    rows = {x.tobytes(): i for i, x in enumerate(X)}
    assert len(rows) == len(X), "rows of the toy split are distinct"
    return [rows[x.tobytes()] for x in got]


def test_map_style_dataset_with_two_workers(toy):
    X, y = reference(toy)
    ds = FeatureDataset(toy["store"], toy["featuresets"][16], "toy", "train")
    assert len(ds) == 72
    x5, y5 = ds[5]
    np.testing.assert_array_equal(x5.numpy(), X[5])
    assert y5 == y[5]
    loader = DataLoader(ds, batch_size=7, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(3))
    xs, ys = zip(*loader)
    got, labels = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    order = positions(X, got)
    assert sorted(order) == list(range(72))
    np.testing.assert_array_equal(labels, y[order])
    with pytest.raises(IndexError):
        ds[72]


def test_map_style_dataset_selected_columns(toy):
    columns = [100, 3, 64, 65]
    X, y = reference(toy, columns)
    ds = FeatureDataset(toy["store"], toy["featuresets"][16][:8], "toy", "train", columns=columns)
    got = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    np.testing.assert_array_equal(got, X)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_iterable_dataset_with_two_workers_covers_the_split_once(toy, batch_size):
    X, y = reference(toy)
    ds = FeatureIterableDataset(toy["store"], toy["featuresets"][16], "toy", "train", seed=11, window=2, batch_size=batch_size)
    loader = DataLoader(ds, batch_size=None if batch_size else 4, num_workers=2)
    xs, ys = zip(*loader)
    got, labels = torch.cat(xs).numpy(), torch.cat(ys).numpy()
    order = positions(X, got)
    assert sorted(order) == list(range(72)) and order != list(range(72))
    np.testing.assert_array_equal(labels, y[order])
    # The same seed and epoch give the same order; another epoch another one.
    again = torch.cat([b[0] for b in DataLoader(ds, batch_size=None if batch_size else 4, num_workers=2)]).numpy()
    np.testing.assert_array_equal(again, got)
    ds.set_epoch(1)
    other = torch.cat([b[0] for b in DataLoader(ds, batch_size=None if batch_size else 4, num_workers=2)]).numpy()
    assert sorted(positions(X, other)) == list(range(72)) and not np.array_equal(other, got)


def test_iterable_dataset_unshuffled_is_segment_order(toy):
    X, _ = reference(toy)
    ds = FeatureIterableDataset(toy["store"], toy["featuresets"][64], "toy", "test", shuffle=False)
    with Store(toy["store"]) as store:
        Xt, yt = store.read_split(toy["featuresets"][64], "toy", "test")
    got = torch.stack([x for x, _ in ds]).numpy()
    np.testing.assert_array_equal(got, Xt)  # the test split was ingested in split order


class _DecodeThreads(torch.utils.data.Dataset):
    """Each item: the decode threads of the process that reads it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return default_threads()


def test_loader_workers_share_the_cores(monkeypatch):
    # Two workers reading at once share the cores instead of each starting a thread per core.
    monkeypatch.delenv("H2T_THREADS", raising=False)
    assert [int(t) for t in DataLoader(_DecodeThreads(), batch_size=None, num_workers=2)] == [max(1, usable_cores() // 2)] * 4
    assert [int(t) for t in DataLoader(_DecodeThreads(), batch_size=None, num_workers=0)] == [usable_cores()] * 4
    monkeypatch.setenv("H2T_THREADS", "3")
    assert [int(t) for t in DataLoader(_DecodeThreads(), batch_size=None, num_workers=2)] == [3] * 4
