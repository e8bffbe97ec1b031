"""Arrow and Parquet views of a stored split (``pip install h2t-store[arrow]``)."""

from __future__ import annotations

import os
from typing import Iterator, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .store import Columns, Store, _canonical_columns

#: Columns a split table always has, before the features.
ID_COLUMN, LABEL_COLUMN, CLASS_COLUMN, FEATURES_COLUMN = "example_id", "label", "class_name", "features"


def _schema(k: int) -> pa.Schema:
    return pa.schema([(ID_COLUMN, pa.binary(32)), (LABEL_COLUMN, pa.int64()), (CLASS_COLUMN, pa.string()),
                      (FEATURES_COLUMN, pa.list_(pa.float32(), k))])


def record_batches(store: Union[str, Store], featureset: str, dataset: str, split: str, columns: Columns = None,
                   batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """A split as record batches of ``batch_rows`` rows (split order): ``example_id`` (32 bytes),
    ``label``, ``class_name`` and ``features`` (a fixed-size list of float32: all columns or the
    selected ones). Each batch is one read transaction; memory is bounded by ``batch_rows``."""
    if batch_rows <= 0:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    opened = store if isinstance(store, Store) else Store(store)
    try:
        fs = opened.feature_set(featureset)
        items = opened.split(dataset, split)
        rows, _ = opened.split_rows(fs, dataset, split)
        cols = _canonical_columns(fs, columns)
        k = fs.width if cols is None else len(cols)
        names = np.asarray(items.class_names, dtype=object)
        for first in range(0, len(rows), batch_rows):
            X = opened.read_rows(fs, rows[first:first + batch_rows], cols)
            ids = items.example_ids[first:first + batch_rows]
            labels = items.labels[first:first + batch_rows]
            yield pa.RecordBatch.from_arrays([
                pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), len(ids), [None, pa.py_buffer(np.ascontiguousarray(ids).tobytes())]),
                pa.array(labels, type=pa.int64()),
                pa.array(names[labels] if len(names) else np.full(len(labels), None), type=pa.string()),
                pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), type=pa.float32()), k),
            ], schema=_schema(k).with_metadata(_metadata(fs.id, dataset, split, cols)))
    finally:
        if opened is not store:
            opened.close()


def _metadata(fs_id: str, dataset: str, split: str, cols: Optional[np.ndarray]) -> dict:
    return {"h2t.featureset": fs_id, "h2t.dataset": dataset, "h2t.split": split,
            "h2t.columns": "all" if cols is None else ",".join(map(str, cols.tolist()))}


def to_table(store: Union[str, Store], featureset: str, dataset: str, split: str, columns: Columns = None) -> pa.Table:
    """A split as one ``pyarrow.Table`` (see ``record_batches`` for the columns)."""
    batches = list(record_batches(store, featureset, dataset, split, columns))
    if batches:
        return pa.Table.from_batches(batches)
    opened = store if isinstance(store, Store) else Store(store)
    try:
        fs = opened.feature_set(featureset)
        cols = _canonical_columns(fs, columns)
        return _schema(fs.width if cols is None else len(cols)).with_metadata(
            _metadata(fs.id, dataset, split, cols)).empty_table()
    finally:
        if opened is not store:
            opened.close()


def write_parquet(store: Union[str, Store], featureset: str, dataset: str, split: str, path: Union[str, os.PathLike],
                  columns: Columns = None, batch_rows: int = 65_536, compression: str = "zstd") -> int:
    """Writes a split to a Parquet file batch by batch (bounded memory); returns the rows written.
    The file is written beside ``path`` and renamed into place, so a failure leaves no partial file."""
    path = os.fspath(path)
    partial = path + ".partial"
    writer = None
    rows = 0
    try:
        for batch in record_batches(store, featureset, dataset, split, columns, batch_rows):
            if writer is None:
                writer = pq.ParquetWriter(partial, batch.schema, compression=compression)
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is None:
            pq.write_table(to_table(store, featureset, dataset, split, columns), partial, compression=compression)
        else:
            writer.close()
            writer = None
        os.replace(partial, path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(partial):
            os.remove(partial)
    return rows


def read_parquet(path: Union[str, os.PathLike]) -> tuple:
    """``(X float32 (n, k), labels int64 (n,), example ids (n, 32) uint8)`` from a file written by
    ``write_parquet``."""
    table = pq.read_table(os.fspath(path))
    k = table.schema.field(FEATURES_COLUMN).type.list_size
    X = table.column(FEATURES_COLUMN).combine_chunks().flatten().to_numpy().reshape(-1, k)
    ids = np.frombuffer(table.column(ID_COLUMN).combine_chunks().buffers()[1], dtype=np.uint8)[:32 * len(table)].reshape(-1, 32)
    return X, table.column(LABEL_COLUMN).to_numpy(), ids
