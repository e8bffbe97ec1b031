"""Reading: equal to ``h2t-store export`` bit for bit, columns by index or tap, examples, batches,
and one clear error per bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import CLASSES, TAPS, run_cli
from h2t_store import NotFound, Store, StoreFormatError, _tiles, example_id
from h2t_store import store as store_module


def export(toy, fs: str, split: str, columns=None) -> np.ndarray:
    out = os.path.join(toy["root"], f"export-{fs[:6]}-{split}-{len(columns or [])}.npy")
    extra = ["--columns", *map(str, columns)] if columns else []
    run_cli("export", "--feature-set", fs, "--dataset", "toy", "--split", split, "--out", out, "--store", toy["store"], *extra)
    return np.load(out)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("size", [64, 16])
@pytest.mark.parametrize("split", ["train", "test"])
def test_split_equals_export_bit_for_bit(toy, size, split):
    fs = toy["featuresets"][size]
    with Store(toy["store"]) as store:
        X, y = store.read_split(fs[:8], "toy", split)
        assert X.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(bits(X), bits(export(toy, fs, split)))
        np.testing.assert_array_equal(y, np.arange(len(y)) % 3)
        columns = [c for c in [148, 0, 63, 64, 5, 127, 128, 70, 5, 131, 2, 1, 100] if c < (149 if size == 64 else 101)]
        Xc, _ = store.read_split(fs, "toy", split, columns)
        np.testing.assert_array_equal(bits(Xc), bits(export(toy, fs, split, columns)))
        np.testing.assert_array_equal(bits(Xc), bits(X[:, columns]))


def test_values_are_the_pooled_activations_rounded_to_bfloat16(toy):
    """Independent of the Swift reader: numpy pooling of the raw activations (F_T 64: stem 4x8x8
    pools with window 2, block 32x4x4 globally, head passes through)."""
    raw = toy["train"]
    n = len(raw["head"])
    stem = raw["stem"].reshape(n, 4, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(n, -1)
    block = raw["block"].mean(axis=(2, 3))
    expected = np.concatenate([stem, block, raw["head"]], axis=1)
    with Store(toy["store"]) as store:
        X, _ = store.read_split(toy["featuresets"][64], "toy", "train")
    np.testing.assert_allclose(X, expected, rtol=2 ** -8, atol=1e-6)


def test_manifests_datasets_and_tap_columns(toy):
    with Store(toy["store"]) as store:
        sets = store.feature_sets()
        assert {fs.id for fs in sets} == set(toy["featuresets"].values())
        fs = store.feature_set(toy["featuresets"][64])
        assert fs.width == 149 and fs.rows == 102 and len(fs.starts) > 3
        assert [t["name"] for t in fs.taps] == list(TAPS)
        assert fs.taps[0]["sourceShape"] == [4, 8, 8]
        assert store.backbone(fs.backbone)["architecture"] == "external:toy-net"
        assert store.datasets()["toy"]["splits"] == {"train": 72, "test": 30}
        split = store.split("toy", "train")
        assert split.class_names == CLASSES and len(split) == 72
        assert split.hex_ids()[5] == example_id("ex-5")
        assert store.example(example_id("ex-5"))["name"] == "ex-5"
        np.testing.assert_array_equal(fs.columns({"block": [0, 31], "stem": None}),
                                      np.r_[64, 95, np.arange(64)])
        X, _ = store.read_split(fs, "toy", "train")
        by_tap, _ = store.read_split(fs, "toy", "train", {"head": [3], "stem": [1]})
        np.testing.assert_array_equal(by_tap, X[:, [96 + 3, 1]])


def test_examples_and_rows_in_any_order(toy):
    with Store(toy["store"]) as store:
        X, _ = store.read_split(toy["featuresets"][16], "toy", "train")
        order = [71, 0, 33, 16, 16, 49, 2]
        ids = [example_id(f"ex-{i}") for i in order]
        np.testing.assert_array_equal(bits(store.read_examples(toy["featuresets"][16], ids)), bits(X[order]))
        raw = np.stack([np.frombuffer(bytes.fromhex(i), np.uint8) for i in ids])
        np.testing.assert_array_equal(store.read_examples(toy["featuresets"][16], raw, [7, 3]), X[order][:, [7, 3]])
        rows, labels = store.split_rows(toy["featuresets"][16], "toy", "train")
        np.testing.assert_array_equal(store.read_rows(toy["featuresets"][16], rows[::-1]), X[::-1])
        # Many examples (row numbers by one walk of the feature set's rows), shuffled, repeated.
        split_ids = store.split("toy", "train").hex_ids()
        shuffled = np.random.default_rng(3).permutation(len(split_ids)).tolist() + [5, 5]
        np.testing.assert_array_equal(bits(store.read_examples(toy["featuresets"][16], [split_ids[i] for i in shuffled])),
                                      bits(X[shuffled]))


def test_seeded_batches_cover_the_split_once(toy):
    with Store(toy["store"]) as store:
        fs = toy["featuresets"][64]
        X, y = store.read_split(fs, "toy", "train")
        batches = list(store.batches(fs, "toy", "train", batch_size=10, seed=7))
        again = list(store.batches(fs, "toy", "train", batch_size=10, seed=7))
        other = list(store.batches(fs, "toy", "train", batch_size=10, seed=8))
    assert [len(b[1]) for b in batches] == [10] * 7 + [2]
    got = np.concatenate([b[0] for b in batches])
    rows = {x.tobytes(): i for i, x in enumerate(X)}
    order = [rows[x.tobytes()] for x in got]
    assert sorted(order) == list(range(72)) and order != list(range(72))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[order])
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not np.array_equal(np.concatenate([b[0] for b in other]), got)


def test_bad_input_names_the_thing(toy, tmp_path):
    with pytest.raises(StoreFormatError, match="no data.mdb"):
        Store(tmp_path)
    (tmp_path / "foreign").mkdir()
    import lmdb
    lmdb.open(str(tmp_path / "foreign")).close()
    with pytest.raises(StoreFormatError, match="not an h2t-store"):
        Store(tmp_path / "foreign")
    with Store(toy["store"]) as store:
        fs = toy["featuresets"][64]
        with pytest.raises(NotFound, match="unknown feature set 'beef'"):
            store.read_split("beef", "toy", "train")
        with pytest.raises(NotFound, match="unknown dataset 'pets'"):
            store.read_split(fs, "pets", "train")
        with pytest.raises(NotFound, match="no split 'val'"):
            store.read_split(fs, "toy", "val")
        with pytest.raises(NotFound, match="column 149 is outside"):
            store.read_split(fs, "toy", "train", [0, 149])
        with pytest.raises(NotFound, match="no tap 'neck'"):
            store.read_split(fs, "toy", "train", {"neck": None})
        with pytest.raises(NotFound, match=f"example {example_id('nobody')} has no features"):
            store.read_examples(fs, [example_id("ex-1"), example_id("nobody")])
        with pytest.raises(NotFound, match=f"example {example_id('nobody')} has no features"):
            store.read_examples(fs, store.split("toy", "train").hex_ids() + [example_id("nobody")])
        with pytest.raises(ValueError, match="not an example id"):
            store.read_examples(fs, ["xyz"])


def test_read_store_shim_lists_and_reads(toy, tmp_path):
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(__file__), "..", "..", "read_store.py")
    out = tmp_path / "x.npy"
    done = subprocess.run([sys.executable, script, toy["store"], "--featureset", toy["featuresets"][64][:10],
                           "--dataset", "toy", "--split", "test", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Store(toy["store"]) as store:
        np.testing.assert_array_equal(np.load(out), store.read_split(toy["featuresets"][64], "toy", "test")[0])
    bad = subprocess.run([sys.executable, script, toy["store"], "--featureset", "beef", "--dataset", "toy",
                          "--split", "test", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown feature set 'beef'" in bad.stderr


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("many_values", [False, True])
def test_zstd_decodes_on_the_threads_the_policy_gives(toy, monkeypatch, threads, many_values):
    """zstandard's own threads follow the policy (here H2T_THREADS), never its ``-1``: a thread per
    logical CPU of the machine, whatever the affinity mask, quota or H2T_THREADS say."""
    fs = toy["featuresets"][64]
    expected = export(toy, fs, "train")
    seen = []
    decompress = _tiles._decompress

    def spy(packed, sizes, name, decompressor, n):
        seen.append(n)
        return decompress(packed, sizes, name, decompressor, n)

    monkeypatch.setattr(_tiles, "_decompress", spy)
    monkeypatch.setenv("H2T_THREADS", str(threads))
    if many_values:  # the path of reads of a million values or more: tiles on a thread pool
        monkeypatch.setattr(store_module, "_POOL_VALUES", 0)
    with Store(toy["store"]) as store:
        X, _ = store.read_split(fs, "toy", "train")
    np.testing.assert_array_equal(bits(X), bits(expected))
    assert seen and set(seen) <= {0, threads if threads > 1 else 0}, seen
