"""The feature store, read-only: ``Store(path)``.

Follows ``schemas/store-format.md``. The environment is opened read-only with a reader slot in
``lock.mdb`` (safe beside a running Swift writer), and every public call runs in one LMDB read
transaction, so it sees one consistent commit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import lmdb
import numpy as np
import zstandard

from ._cpus import usable_cores
from ._tiles import TileHeader, decode_columns, decode_many, tile_binding
from .errors import NotFound, StoreFormatError

#: Store format versions (``meta/format``, u32 LE) this reader understands.
STORE_FORMAT_VERSIONS = (1, 2)
#: The feature store's tables this reader opens (all created with flags 0).
TABLES = ("meta", "backbones", "featuresets", "segments", "tiles", "rows", "rowexamples",
          "examples", "datasets", "splititems", "splitmembers")
#: Named-database slots: the Swift store reserves 20.
MAX_DBS = 20

#: Example ids as accepted by the read calls: 64-hex-digit strings, 32 raw bytes, or a
#: ``(n, 32)`` uint8 array.
ExampleIds = Union[Sequence[str], Sequence[bytes], np.ndarray]
#: Columns: global indices, or ``{tap name: local indices (None: the whole tap)}``.
Columns = Union[None, Sequence[int], np.ndarray, Mapping[str, Optional[Sequence[int]]]]


@dataclass(frozen=True)
class FeatureSet:
    """A feature set: its id, manifest, and segments (``starts[i]``, ``counts[i]``) in row order."""

    id: str
    manifest: Dict[str, Any]
    starts: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)

    @property
    def rows(self) -> int:
        return int(self.starts[-1] + self.counts[-1]) if len(self.starts) else 0

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def target_size(self) -> int:
        return int(self.manifest["targetSize"])

    @property
    def backbone(self) -> str:
        return str(self.manifest["backbone"])

    @property
    def taps(self) -> List[Dict[str, Any]]:
        """Taps in column order: ``{"name", "offset", "width", "sourceShape"?}``."""
        return list(self.manifest["taps"])

    def columns(self, taps: Mapping[str, Optional[Sequence[int]]]) -> np.ndarray:
        """Global column indices of ``{tap name: local indices}`` (``None``: every column of the tap),
        in the order given."""
        by_name = {t["name"]: t for t in self.manifest["taps"]}
        parts = []
        for name, local in taps.items():
            if name not in by_name:
                raise NotFound(f"feature set {self.id[:12]} has no tap '{name}' (taps: {', '.join(list(by_name)[:8])}"
                               f"{', ...' if len(by_name) > 8 else ''})")
            tap = by_name[name]
            idx = np.arange(tap["width"]) if local is None else np.asarray(local, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= tap["width"]):
                bad = idx[(idx < 0) | (idx >= tap["width"])][0]
                raise NotFound(f"tap '{name}' of feature set {self.id[:12]} has no column {bad} (width {tap['width']})")
            parts.append(idx + tap["offset"])
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Split:
    """A dataset split in index order: raw example ids ``(n, 32)`` uint8 and labels ``(n,)`` int64
    indexing ``class_names``."""

    dataset: str
    split: str
    example_ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    class_names: List[str]

    def __len__(self) -> int:
        return len(self.labels)

    def hex_ids(self) -> List[str]:
        return [bytes(row).hex() for row in self.example_ids]


def example_id(name: str) -> str:
    """The id (64 hex digits) of an example known by ``name`` (external activations)."""
    return hashlib.sha256(("h2t.example-name:" + name).encode("utf-8")).hexdigest()


def _example_array(examples: ExampleIds) -> np.ndarray:
    """Example ids as an ``(n, 32)`` uint8 array (errors name the bad id)."""
    if isinstance(examples, np.ndarray) and examples.dtype == np.uint8:
        if examples.ndim != 2 or examples.shape[1] != 32:
            raise ValueError(f"example id array has shape {examples.shape}; expected (n, 32) uint8")
        return examples
    raw = []
    for item in examples:
        if isinstance(item, (bytes, bytearray, memoryview)) and len(item) == 32:
            raw.append(bytes(item))
            continue
        try:
            value = bytes.fromhex(item) if isinstance(item, str) else b""
        except ValueError:
            value = b""
        if len(value) != 32:
            raise ValueError(f"'{item!r}' is not an example id (64 hex digits or 32 bytes)")
        raw.append(value)
    return np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(len(raw), 32)


def _canonical_columns(fs: FeatureSet, columns: Columns) -> Optional[np.ndarray]:
    if columns is None:
        return None
    if isinstance(columns, Mapping):
        return fs.columns(columns)
    cols = np.asarray(columns, dtype=np.int64).reshape(-1)
    if cols.size and (cols.min() < 0 or cols.max() >= fs.width):
        bad = cols[(cols < 0) | (cols >= fs.width)][0]
        raise NotFound(f"column {bad} is outside feature set {fs.id[:12]} (width {fs.width})")
    return cols


class Store:
    """A store directory opened read-only.

    ``Store`` objects are not shared across ``fork``: LMDB forbids using one environment in two
    processes, so the PyTorch datasets open their own in each worker.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise StoreFormatError(f"{self.path} is not an h2t-store (no data.mdb)")
        self.pid = os.getpid()
        self._key = (self.pid, os.path.realpath(self.path))
        self.env, self.dbs = _acquire(self._key, self.path)
        self._closed = False
        try:
            with self.env.begin(buffers=False) as txn:
                raw = txn.get(b"format", db=self.dbs["meta"])
            if raw is None or len(raw) != 4:
                raise StoreFormatError(f"{self.path} is not an h2t-store (no format record)")
            (version,) = struct.unpack("<I", raw)
            if version not in STORE_FORMAT_VERSIONS:
                raise StoreFormatError(f"store {self.path} has format version {version}; this reader reads versions 1, 2")
        except BaseException:
            self.close()
            raise
        self.format_version = version

    def table(self, name: str) -> Any:
        """A named database of the environment (``None`` when the store has none of that name),
        for the layers beside the feature store (the registry's tables)."""
        return _table(self._key, name)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self._key)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    def begin(self, buffers: bool = True) -> lmdb.Transaction:
        """A read transaction (one per public call). With ``buffers``, values and keys are
        memoryviews into the map (no copy; valid until the transaction ends), so a read of 1% of
        the columns does not copy whole tiles out of LMDB. A writer that grew the store's map
        since it was opened (a running ingest) is followed: the reader adopts the new size."""
        try:
            return self.env.begin(buffers=buffers)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)  # LMDB: size 0 adopts the size the writer set
            return self.env.begin(buffers=buffers)

    # ------------------------------------------------------------------------------------------
    # Manifests

    def backbones(self) -> Dict[str, Dict[str, Any]]:
        """Every backbone manifest by id (ids checked against the stored bytes)."""
        with self.begin() as txn:
            return {_check_identity(k, v, "backbone"): _json(k, v, "backbone")
                    for k, v in txn.cursor(db=self.dbs["backbones"])}

    def backbone(self, backbone_id: str) -> Dict[str, Any]:
        with self.begin() as txn:
            raw = txn.get(backbone_id.encode("ascii"), db=self.dbs["backbones"])
        if raw is None:
            raise NotFound(f"unknown backbone '{backbone_id}' in {self.path}")
        return _json(backbone_id.encode(), raw, "backbone")

    def feature_sets(self) -> List[FeatureSet]:
        """Every feature set, sorted by id."""
        with self.begin() as txn:
            return [self._feature_set(txn, k, v) for k, v in txn.cursor(db=self.dbs["featuresets"])]

    def feature_set(self, id_or_prefix: Union[str, FeatureSet]) -> FeatureSet:
        """The feature set with this id, or the one whose id starts with this prefix (>= 4 hex digits)."""
        with self.begin() as txn:
            return self._resolve(txn, id_or_prefix)

    def datasets(self) -> Dict[str, Dict[str, Any]]:
        """Every dataset manifest by name (``classNames``, ``splits``: items per split)."""
        with self.begin() as txn:
            return {bytes(k).decode("utf-8"): _json(k, v, "dataset") for k, v in txn.cursor(db=self.dbs["datasets"])}

    def dataset(self, name: str) -> Dict[str, Any]:
        with self.begin() as txn:
            return self._dataset(txn, name)

    def split(self, dataset: str, split: str) -> Split:
        """A split's example ids and labels, in index order."""
        with self.begin() as txn:
            return self._split(txn, dataset, split)

    def examples(self) -> Dict[str, Dict[str, Any]]:
        """Every example record by id (64 hex digits)."""
        with self.begin() as txn:
            return {k.hex(): _json(k, v, "example") for k, v in txn.cursor(db=self.dbs["examples"])}

    def example(self, example: Union[str, bytes]) -> Dict[str, Any]:
        """An example's record (``name``, ``source``)."""
        raw_id = _example_array([example])[0].tobytes()
        with self.begin() as txn:
            raw = txn.get(raw_id, db=self.dbs["examples"])
        if raw is None:
            raise NotFound(f"unknown example {raw_id.hex()} in {self.path}")
        return _json(raw_id, raw, "example")

    # ------------------------------------------------------------------------------------------
    # Features

    def read_split(self, featureset: Union[str, FeatureSet], dataset: str, split: str,
                   columns: Columns = None) -> Tuple[np.ndarray, np.ndarray]:
        """A split's features ``X`` float32 ``(n, k)`` in split order (all columns, or ``columns``:
        global indices or ``{tap: local indices}``) and labels ``(n,)`` int64."""
        with self.begin() as txn:
            fs = self._resolve(txn, featureset)
            items = self._split(txn, dataset, split)
            rows = self._rows(txn, fs, items.example_ids)
            return self._gather(txn, fs, rows, _canonical_columns(fs, columns)), items.labels

    def read_examples(self, featureset: Union[str, FeatureSet], examples: ExampleIds,
                      columns: Columns = None) -> np.ndarray:
        """Features of the given examples (in the order given) as float32 ``(n, k)``."""
        ids = _example_array(examples)
        with self.begin() as txn:
            fs = self._resolve(txn, featureset)
            return self._gather(txn, fs, self._rows(txn, fs, ids), _canonical_columns(fs, columns))

    def read_rows(self, featureset: Union[str, FeatureSet], rows: Union[Sequence[int], np.ndarray],
                  columns: Columns = None) -> np.ndarray:
        """Features of the feature set's rows (row numbers, in the order given)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        with self.begin() as txn:
            fs = self._resolve(txn, featureset)
            if rows.size and (rows.min() < 0 or rows.max() >= fs.rows):
                raise NotFound(f"row {rows[(rows < 0) | (rows >= fs.rows)][0]} is outside feature set {fs.id[:12]} ({fs.rows} rows)")
            return self._gather(txn, fs, rows, _canonical_columns(fs, columns))

    def split_rows(self, featureset: Union[str, FeatureSet], dataset: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
        """The feature-set rows of a split's examples (split order) and their labels."""
        with self.begin() as txn:
            fs = self._resolve(txn, featureset)
            items = self._split(txn, dataset, split)
            return self._rows(txn, fs, items.example_ids), items.labels

    def batches(self, featureset: Union[str, FeatureSet], dataset: str, split: str, batch_size: int,
                seed: Optional[int] = 0, columns: Columns = None, drop_last: bool = False) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Batches ``(X, y)`` of a split: shuffled with ``seed`` (a permutation of the whole split;
        ``None``: split order). The selected columns of the split are read once, in one transaction."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        X, y = self.read_split(featureset, dataset, split, columns)
        order = np.arange(len(y)) if seed is None else np.random.default_rng(seed).permutation(len(y))
        stop = len(y) - (len(y) % batch_size if drop_last else 0)
        for first in range(0, stop, batch_size):
            pick = order[first:first + batch_size]
            yield X[pick], y[pick]

    def stored(self, featureset_ids: Sequence[str], examples: ExampleIds, dataset: str, split: str) -> np.ndarray:
        """Per example: whether it has a row in every one of ``featureset_ids`` (full ids) and is
        already a member of ``dataset``/``split`` (what a resumed ingest may skip)."""
        ids = _example_array(examples)
        done = np.ones(len(ids), dtype=bool)
        if not len(ids):
            return done
        with self.begin() as txn:
            member_prefix = dataset.encode("utf-8") + b"\0" + split.encode("utf-8") + b"\0"
            for prefix, table in [(bytes.fromhex(f[:32]), "rows") for f in featureset_ids] + [(member_prefix, "splitmembers")]:
                keys = [prefix + row.tobytes() for row in ids]
                present = {bytes(k) for k, _ in txn.cursor(db=self.dbs[table]).getmulti(keys)}
                done &= np.fromiter((k in present for k in keys), dtype=bool, count=len(keys))
        return done

    # ------------------------------------------------------------------------------------------
    # Internals (all take the caller's transaction)

    def _feature_set(self, txn: lmdb.Transaction, key: bytes, value: bytes) -> FeatureSet:
        ident = _check_identity(key, value, "feature set")
        starts, counts = self._segments(txn, ident)
        return FeatureSet(ident, _json(key, value, "feature set"), starts, counts)

    def _resolve(self, txn: lmdb.Transaction, ref: Union[str, FeatureSet]) -> FeatureSet:
        if isinstance(ref, FeatureSet):
            ref = ref.id
        ref = str(ref).lower()
        if len(ref) == 64:
            raw = txn.get(ref.encode("ascii"), db=self.dbs["featuresets"])
            if raw is not None:
                return self._feature_set(txn, ref.encode("ascii"), raw)
        matches = []
        if len(ref) >= 4:
            cursor = txn.cursor(db=self.dbs["featuresets"])
            if cursor.set_range(ref.encode("ascii")):
                for key, value in cursor:
                    if key[:len(ref)] != ref.encode("ascii"):
                        break
                    matches.append((bytes(key), value))
        if len(matches) > 1:
            raise NotFound(f"feature set prefix '{ref}' matches several feature sets; give more digits")
        if not matches:
            known = [bytes(k).decode()[:12] for k in txn.cursor(db=self.dbs["featuresets"]).iternext(values=False)]
            raise NotFound(f"unknown feature set '{ref}' in {self.path} (known: {', '.join(known) or 'none'})")
        return self._feature_set(txn, *matches[0])

    def _segments(self, txn: lmdb.Transaction, fs_id: str) -> Tuple[np.ndarray, np.ndarray]:
        prefix = bytes.fromhex(fs_id[:32])
        cursor = txn.cursor(db=self.dbs["segments"])
        keys: List[bytes] = []
        values: List[bytes] = []
        if cursor.set_range(prefix):
            for key, value in cursor:
                if key[:len(prefix)] != prefix:
                    break
                if len(key) != 20 or len(value) != 4:
                    raise StoreFormatError(f"segment record {key.hex()} has the wrong size")
                keys.append(key)
                values.append(value)
        starts = np.frombuffer(b"".join(keys), dtype=">u4").reshape(-1, 5)[:, 4].astype(np.int64)
        counts = np.frombuffer(b"".join(values), dtype="<u4").astype(np.int64)
        expected = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
        if not np.array_equal(starts, expected):
            bad = int(np.nonzero(starts != expected)[0][0])
            raise StoreFormatError(f"feature set {fs_id[:12]}: segment at row {starts[bad]}, expected {expected[bad]}")
        return starts, counts

    def _dataset(self, txn: lmdb.Transaction, name: str) -> Dict[str, Any]:
        raw = txn.get(name.encode("utf-8"), db=self.dbs["datasets"])
        if raw is None:
            known = [bytes(k).decode("utf-8", "replace") for k in txn.cursor(db=self.dbs["datasets"]).iternext(values=False)]
            raise NotFound(f"unknown dataset '{name}' in {self.path} (datasets: {', '.join(known) or 'none'})")
        return _json(name.encode("utf-8"), raw, "dataset")

    def _split(self, txn: lmdb.Transaction, dataset: str, split: str) -> Split:
        manifest = self._dataset(txn, dataset)
        splits = manifest.get("splits", {})
        if split not in splits:
            raise NotFound(f"dataset '{dataset}' has no split '{split}' (splits: {', '.join(sorted(splits)) or 'none'})")
        n = int(splits[split])
        prefix = dataset.encode("utf-8") + b"\0" + split.encode("utf-8") + b"\0"
        cursor = txn.cursor(db=self.dbs["splititems"])
        values = b""
        first = last = b""
        if n and cursor.set_range(prefix):
            first = bytes(cursor.key())
            # islice + join: the cursor is driven from C, no Python bytecode per item.
            values = b"".join(itertools.islice(cursor.iternext(keys=False, values=True), n))
            last = bytes(cursor.key())
        # Keys are prefix | index u32 BE, sorted: n items from index 0 to index n - 1 are exactly
        # the items 0..<n when every value has the documented size.
        if n and (first != prefix + struct.pack(">I", 0) or last != prefix + struct.pack(">I", n - 1)) or len(values) != n * 36:
            raise StoreFormatError(f"{dataset}/{split}: the manifest says {n} items, the split table disagrees "
                                   "(items missing, misnumbered or of the wrong size)")
        value_array = np.frombuffer(values, dtype=np.uint8).reshape(n, 36)
        labels = value_array[:, 32:].copy().view("<u4").reshape(n).astype(np.int64)
        return Split(dataset, split, value_array[:, :32], labels, list(manifest.get("classNames", [])))

    def _rows(self, txn: lmdb.Transaction, fs: FeatureSet, ids: np.ndarray) -> np.ndarray:
        """Row numbers of examples (``(n, 32)`` uint8) in feature set ``fs``."""
        n = len(ids)
        if n == 0:
            return np.zeros(0, np.int64)
        if fs.rows <= _SCAN_FACTOR * n:
            rows = self._rows_by_scan(txn, fs, ids)
            if rows is not None:
                return rows
        prefix = np.frombuffer(bytes.fromhex(fs.id[:32]), np.uint8)
        keys = np.concatenate([np.broadcast_to(prefix, (n, 16)), ids], axis=1).tobytes()
        wanted = [keys[i:i + 48] for i in range(0, 48 * n, 48)]
        found = txn.cursor(db=self.dbs["rows"]).getmulti(wanted)
        if len(found) != n:
            present = {bytes(k) for k, _ in found}
            missing = next(k for k in wanted if k not in present)
            raise NotFound(f"example {missing[16:].hex()} has no features in feature set {fs.id[:12]}")
        values = b"".join(v for _, v in found)
        if len(values) != 4 * n:
            raise StoreFormatError(f"feature set {fs.id[:12]}: a row record has the wrong size")
        return np.frombuffer(values, dtype=">u4").astype(np.int64)

    def _rows_by_scan(self, txn: lmdb.Transaction, fs: FeatureSet, ids: np.ndarray) -> Optional[np.ndarray]:
        """Row numbers by one cursor walk over the feature set's ``rowexamples`` (row -> example,
        contiguous keys) and a sorted match in numpy, for reads that touch most of its rows: one
        B-tree walk instead of a lookup per example. ``None`` when some example is not there (the
        caller's lookups name it)."""
        total = fs.rows
        prefix = bytes.fromhex(fs.id[:32])
        cursor = txn.cursor(db=self.dbs["rowexamples"])
        if not cursor.set_range(prefix):
            return None
        first = bytes(cursor.key())
        values = b"".join(itertools.islice(cursor.iternext(keys=False, values=True), total))
        last = bytes(cursor.key())
        if first != prefix + struct.pack(">I", 0) or last != prefix + struct.pack(">I", total - 1) or len(values) != 32 * total:
            raise StoreFormatError(f"feature set {fs.id[:12]}: its row -> example table disagrees with its {total} rows")
        stored = np.frombuffer(values, dtype=np.uint8).reshape(total, 32)
        # Sort by the ids' first 8 bytes (SHA-256 digests), then check the whole ids.
        stored_keys = stored[:, :8].copy().view(">u8").reshape(total)
        wanted_keys = np.ascontiguousarray(ids[:, :8]).view(">u8").reshape(len(ids))
        order = np.argsort(stored_keys, kind="stable")
        at = np.minimum(np.searchsorted(stored_keys[order], wanted_keys), total - 1)
        rows = order[at]
        if not np.array_equal(stored[rows], ids):
            return None
        return rows.astype(np.int64)

    def _gather(self, txn: lmdb.Transaction, fs: FeatureSet, rows: np.ndarray, columns: Optional[np.ndarray]) -> np.ndarray:
        """Features of feature-set rows (any order, repeats allowed): every touched tile is decoded
        once, only in the frames that hold the wanted columns."""
        width, block_width = fs.width, int(fs.manifest["columnBlock"])
        cols = np.arange(width, dtype=np.int64) if columns is None else columns
        out = np.empty((len(rows), len(cols)), dtype=np.float32)
        if not len(rows) or not len(cols):
            return out
        segment = np.searchsorted(fs.starts, rows, side="right") - 1
        if segment.min() < 0 or np.any(rows >= fs.starts[segment] + fs.counts[segment]):
            raise StoreFormatError(f"feature set {fs.id[:12]}: a row is in no segment")
        blocks = cols // block_width
        prefix = bytes.fromhex(fs.id[:32])
        by_segment = np.argsort(segment, kind="stable")
        bounds = np.searchsorted(segment[by_segment], np.arange(len(fs.starts) + 1))
        # Per column block: its output columns, its tile-local columns, whether that is the whole
        # tile in order, and the output columns as a slice when they are consecutive.
        plan = []
        for b in np.unique(blocks).tolist():
            out_cols = np.nonzero(blocks == b)[0]
            local_cols = cols[out_cols] - b * block_width
            expected_cols = min(block_width, width - b * block_width)
            everything = len(local_cols) == expected_cols and np.array_equal(local_cols, np.arange(expected_cols))
            plan.append((b, out_cols, local_cols, expected_cols, everything, _as_slice(out_cols)))
        jobs = []
        for s in np.nonzero(np.diff(bounds))[0]:
            out_rows = by_segment[bounds[s]:bounds[s + 1]]
            start, count = int(fs.starts[s]), int(fs.counts[s])
            local_rows = rows[out_rows] - start
            whole_segment = len(out_rows) == count and np.array_equal(local_rows, np.arange(count))
            row_part = _as_slice(out_rows) if whole_segment else None
            for b, out_cols, local_cols, expected_cols, everything, col_part in plan:
                key = prefix + struct.pack(">II", start, b)
                name = f"tiles/{fs.id[:12]}/rows@{start}/block{b}"
                tile = txn.get(key, db=self.dbs["tiles"])
                if tile is None:
                    raise StoreFormatError(f"store is inconsistent: missing tile {name}")
                binding = tile_binding(key, count)
                tile_rows, tile_cols = struct.unpack_from("<II", tile, 8) if len(tile) >= 16 else (-1, -1)
                if tile_rows != count or tile_cols != expected_cols:
                    TileHeader(tile, name, binding)  # a corrupted header says so first
                    raise StoreFormatError(f"tile {name}: {tile_rows}x{tile_cols}, expected {count}x{expected_cols}")
                jobs.append((tile, binding, name, None if everything else local_cols, out_rows, out_cols,
                             None if whole_segment else local_rows, row_part, col_part))
        _decode_all(jobs, out)
        return out
        return out


# One environment per process and store directory: LMDB (and py-lmdb) refuse to open the same
# environment twice in a process, so every ``Store`` of a path shares it, counted.
_ENVS: Dict[Tuple[int, str], List[Any]] = {}


def _acquire(key: Tuple[int, str], path: str) -> Tuple[Any, Dict[str, Any]]:
    entry = _ENVS.get(key)
    if entry is None:
        try:
            # lock=True: a reader slot in lock.mdb, so a concurrent writer never reuses pages this
            # reader still sees. The map size is taken from the file.
            env = lmdb.open(path, readonly=True, lock=True, create=False, subdir=True, max_dbs=MAX_DBS)
        except lmdb.Error as error:
            raise StoreFormatError(f"cannot open store {path}: {error}") from None
        dbs: Dict[str, Any] = {}
        for name in TABLES:
            # No txn argument: a handle opened inside a read transaction dies with it.
            try:
                dbs[name] = env.open_db(name.encode(), create=False)
            except lmdb.NotFoundError:
                env.close()
                raise StoreFormatError(f"{path} is not an h2t-store (no table '{name}')") from None
        entry = _ENVS[key] = [env, dbs, 0]
    entry[2] += 1
    return entry[0], entry[1]


def _table(key: Tuple[int, str], name: str) -> Any:
    env, dbs, _ = _ENVS[key]
    if name not in dbs:
        try:
            dbs[name] = env.open_db(name.encode(), create=False)
        except lmdb.NotFoundError:
            return None
    return dbs[name]


def _release(key: Tuple[int, str]) -> None:
    entry = _ENVS.get(key)
    if entry is None:
        return
    entry[2] -= 1
    if entry[2] <= 0:
        del _ENVS[key]
        entry[0].close()


def _forget_inherited() -> None:
    """In a forked child: drop the parent's environments (py-lmdb would refuse to open the path
    again in this process). Closing them only unmaps and closes descriptors; LMDB clears reader
    slots of the closing process's own pid only, so the parent's slots stay."""
    for key in [k for k in _ENVS if k[0] != os.getpid()]:
        entry = _ENVS.pop(key)
        try:
            entry[0].close()
        except lmdb.Error:
            pass


os.register_at_fork(after_in_child=_forget_inherited)


def default_threads() -> int:
    """Threads for decoding, by the project's policy (``Parallelism`` in the Swift code):
    ``H2T_THREADS`` when it is a positive whole number, else every core this process may use
    (its affinity mask, bounded by a cgroup CPU quota: ``_cpus.usable_cores``). In a PyTorch
    ``DataLoader`` worker process those cores are shared with the other workers, which read at
    the same time: each gets ``cores // num_workers`` (at least 1)."""
    text = os.environ.get("H2T_THREADS", "").strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    cores = usable_cores()
    loader = sys.modules.get("torch.utils.data")  # only a process that imported torch can be a worker
    worker = loader.get_worker_info() if loader is not None else None
    return max(1, cores // worker.num_workers) if worker is not None else cores


_local = threading.local()
#: Rows a feature set may have per wanted example for ``_rows`` to walk all of them.
_SCAN_FACTOR = 4
#: Values a read must select before its tiles are decoded on several threads.
_POOL_VALUES = 1 << 20


def _decode_job(job: tuple, out: np.ndarray, threads: int) -> None:
    """Decodes one tile's wanted columns into its place in ``out`` (jobs write disjoint cells)."""
    tile, binding, name, local_cols, out_rows, out_cols, local_rows, row_part, col_part = job
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    if local_cols is None and row_part is not None and col_part is not None:
        # Decoded straight into its place in the output: no intermediate copy.
        decode_columns(tile, binding, None, name, decompressor, out=out[row_part, col_part], threads=threads)
        return
    _place(job, decode_columns(tile, binding, local_cols, name, decompressor, threads=threads), out)


def _place(job: tuple, values: np.ndarray, out: np.ndarray) -> None:
    """Puts a tile's decoded columns (all its rows) into their cells of ``out``."""
    _, _, _, _, out_rows, out_cols, local_rows, row_part, col_part = job
    if local_rows is not None:
        values = values[local_rows]
    if col_part is not None:
        out[row_part if row_part is not None else out_rows, col_part] = values
    else:
        out[np.ix_(out_rows, out_cols)] = values


def _decode_all(jobs: List[tuple], out: np.ndarray) -> None:
    """Decodes the tiles on the policy's threads (``default_threads``; zstd and numpy release the
    GIL); a single tile spreads its zstd frames over those threads instead."""
    threads = default_threads()
    workers = min(threads, len(jobs))
    # zstandard's own threads for one call: 0 decodes on the calling thread (-1 would start one
    # per logical CPU of the machine, whatever the affinity mask, quota or H2T_THREADS).
    zstd_threads = threads if threads > 1 else 0
    wanted = sum(len(job[4]) * (len(job[3]) if job[3] is not None else len(job[5])) for job in jobs)
    if wanted < _POOL_VALUES:
        # Small selections (a head's 1% of columns): a few frames of many tiles, decompressed in one
        # zstandard call (its own threads, outside the GIL) rather than one call per tile.
        decompressor = getattr(_local, "decompressor", None) or zstandard.ZstdDecompressor()
        decoded = decode_many([(job[0], job[1], job[3], job[2]) for job in jobs], decompressor, threads=zstd_threads)
        for job, values in zip(jobs, decoded):
            _place(job, values, out)
        return
    if workers <= 1:
        for job in jobs:
            _decode_job(job, out, threads=zstd_threads)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(_decode_job, job, out, 0) for job in jobs]:
            done.result()


def _as_slice(index: np.ndarray) -> Optional[slice]:
    """``index`` as a slice when it is an ascending run of consecutive integers."""
    if len(index) and index[-1] - index[0] == len(index) - 1 and (len(index) == 1 or np.all(np.diff(index) == 1)):
        return slice(int(index[0]), int(index[-1]) + 1)
    return None


def _json(key: bytes, value: bytes, what: str) -> Dict[str, Any]:
    try:
        return json.loads(bytes(value).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreFormatError(f"{what} {key!r} is not valid JSON: {error}") from None


def _check_identity(key: bytes, value: bytes, what: str) -> str:
    """A manifest's id is the SHA-256 of exactly its stored canonical JSON."""
    ident = bytes(key).decode("ascii")
    digest = hashlib.sha256(value).hexdigest()
    if digest != ident:
        raise StoreFormatError(f"{what} {ident[:12]}: stored JSON hashes to {digest[:12]}, not its id")
    return ident
