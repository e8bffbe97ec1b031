"""Arrow tables and a Parquet round trip."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from h2t_store import Store, example_id  # noqa: E402
from h2t_store.arrow import read_parquet, record_batches, to_table, write_parquet  # noqa: E402


def test_table_has_ids_labels_and_features(toy):
    fs = toy["featuresets"][64]
    with Store(toy["store"]) as store:
        X, y = store.read_split(fs, "toy", "train")
        split = store.split("toy", "train")
    table = to_table(toy["store"], fs, "toy", "train")
    assert table.num_rows == 72 and table.column_names == ["example_id", "label", "class_name", "features"]
    assert table.schema.metadata[b"h2t.featureset"].decode() == fs
    np.testing.assert_array_equal(np.stack(table.column("features").to_numpy(zero_copy_only=False)), X)
    np.testing.assert_array_equal(table.column("label").to_numpy(), y)
    assert table.column("class_name").to_pylist()[:3] == ["cat", "dog", "bird"]
    assert table.column("example_id").to_pylist()[4] == bytes.fromhex(example_id("ex-4"))
    assert [b.num_rows for b in record_batches(toy["store"], fs, "toy", "train", batch_rows=32)] == [32, 32, 8]
    np.testing.assert_array_equal(split.example_ids[4], np.frombuffer(bytes.fromhex(example_id("ex-4")), np.uint8))


def test_parquet_round_trip_with_selected_columns(toy, tmp_path):
    fs = toy["featuresets"][16]
    columns = {"head": [0, 52], "stem": [7]}
    with Store(toy["store"]) as store:
        X, y = store.read_split(fs, "toy", "test", columns)
        ids = store.split("toy", "test").example_ids
    path = tmp_path / "test.parquet"
    assert write_parquet(toy["store"], fs, "toy", "test", path, columns=columns, batch_rows=8) == 30
    Xp, yp, idp = read_parquet(path)
    np.testing.assert_array_equal(Xp.view(np.uint32), X.view(np.uint32))
    np.testing.assert_array_equal(yp, y)
    np.testing.assert_array_equal(idp, ids)
    assert not (tmp_path / "test.parquet.partial").exists()


def test_parquet_failure_leaves_no_file(toy, tmp_path):
    with pytest.raises(Exception, match="no split 'val'"):
        write_parquet(toy["store"], toy["featuresets"][64], "toy", "val", tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []
