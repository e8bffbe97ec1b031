#!/usr/bin/env python3
"""Read features from an h2t-store directory without the Swift code.

A standalone reader of the on-disk format described in ``schemas/store-format.md``: it opens the
LMDB environment read-only, finds a feature set by id (or id prefix), resolves a dataset split (or a
list of example ids) to rows, and decodes the tiles (header CRC and every touched frame's CRC are
verified) into a float32 matrix.

Dependencies (pinned in ``tools/requirements.txt``; install with
``python3 -m pip install -r tools/requirements.txt``):

    lmdb==3.0.0        (py-lmdb; bundles liblmdb 0.9.x)
    zstandard==0.25.0
    numpy==2.4.6

Library use::

    from read_store import list_feature_sets, read_split, read_rows
    X, labels = read_split("store", "3fa1", "flowers", "train")
    X = read_rows("store", "3fa1", ["<64 hex digits>", ...])

Command line::

    python3 tools/read_store.py STORE                     # list feature sets (JSON)
    python3 tools/read_store.py STORE --featureset 3fa1 --dataset flowers --split train \\
        --out features.npy [--labels-out labels.npy] [--columns 0,17,4096]
    python3 tools/read_store.py STORE --featureset 3fa1 --examples HEX,HEX --out rows.npy
    python3 tools/read_store.py STORE --manifests         # every manifest, ids checked (JSON)

Errors are one line on stderr and exit status 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import struct
import sys
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import lmdb
import numpy as np
import zstandard

#: Store format versions (``meta/format``, u32 little-endian) this reader understands. Version 2
#: only adds the optional ``poolingRule`` of feature-set manifests, which reading features ignores.
STORE_FORMAT_VERSIONS = (1, 2)
#: Tile format version (u16 at tile offset 4) this reader understands.
TILE_FORMAT_VERSION = 2
#: Oldest tile format version this reader understands (version 1 tiles carry no binding).
OLDEST_TILE_FORMAT_VERSION = 1
#: The named databases of the feature store this reader opens (the store also has ``matrices``, a
#: cache, and the registry keeps its own tables beside them; neither is needed to read features).
#: All are plain (no dupsort, no integer keys): LMDB refuses to open a named database with flags
#: other than those it was created with.
TABLES = ("meta", "backbones", "featuresets", "segments", "tiles", "rows", "rowexamples",
          "examples", "datasets", "splititems", "splitmembers")
#: Named-database slots to reserve (at least the number opened).
MAX_DBS = 16

_TILE_MAGIC = b"H2TT"
_TILE_FIXED_HEADER = 28
_DTYPES = {0: ("float32", 4), 1: ("float16", 2), 2: ("bfloat16", 2)}


class StoreFormatError(Exception):
    """The store, a record or a tile does not match the documented format (or is corrupted)."""


# ----------------------------------------------------------------------------------------------
# Environment


class _Store:
    """An open, read-only store: the environment and its named databases."""

    def __init__(self, path: str):
        try:
            # lock=True: take a reader slot in lock.mdb like any other reader, so a concurrent
            # Swift writer never reuses pages this reader still sees. readonly=True opens lock.mdb
            # without creating anything. map_size is taken from the file when larger than ours.
            self.env = lmdb.open(path, readonly=True, lock=True, create=False, subdir=True,
                                 max_dbs=MAX_DBS)
        except lmdb.Error as error:
            raise StoreFormatError(f"cannot open store {path}: {error}") from None
        self.path = path
        self.dbs = {}
        for name in TABLES:
            # No txn argument: py-lmdb then opens the handle in a transaction of its own that it
            # commits. A handle opened inside a read transaction we later end is invalid.
            try:
                self.dbs[name] = self.env.open_db(name.encode(), create=False)
            except lmdb.NotFoundError:
                self.env.close()
                raise StoreFormatError(f"{path} is not an h2t-store (no table '{name}')") from None
        with self.env.begin(buffers=False) as txn:
            raw = txn.get(b"format", db=self.dbs["meta"])
        if raw is None or len(raw) != 4:
            self.env.close()
            raise StoreFormatError(f"{path} is not an h2t-store (no format record)")
        (version,) = struct.unpack("<I", raw)
        if version not in STORE_FORMAT_VERSIONS:
            self.env.close()
            raise StoreFormatError(
                f"store {path} has format version {version}; this reader reads versions "
                f"{', '.join(map(str, STORE_FORMAT_VERSIONS))}")

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "_Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def begin(self) -> lmdb.Transaction:
        return self.env.begin(buffers=False)


def _scan_prefix(txn: lmdb.Transaction, db, prefix: bytes) -> Iterable[Tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


def _json_record(key: bytes, value: bytes, what: str) -> dict:
    try:
        return json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreFormatError(f"{what} {key!r} is not valid JSON: {error}") from None


def _check_identity(key: bytes, value: bytes, what: str) -> str:
    """A manifest's id is the SHA-256 (lowercase hex) of exactly the stored canonical JSON bytes."""
    ident = key.decode("ascii")
    digest = hashlib.sha256(value).hexdigest()
    if digest != ident:
        raise StoreFormatError(f"{what} {ident[:12]}: stored JSON hashes to {digest[:12]}, not its id")
    return ident


# ----------------------------------------------------------------------------------------------
# Feature sets, segments, datasets


def _fs_prefix(fs_id: str) -> bytes:
    """Key prefix of a feature set: the first 16 bytes of its SHA-256 id."""
    return bytes.fromhex(fs_id[:32])


def _segments(txn, store: _Store, fs_id: str) -> List[Tuple[int, int]]:
    """(first row, row count) of every segment of a feature set, in row order."""
    prefix = _fs_prefix(fs_id)
    out = []
    for key, value in _scan_prefix(txn, store.dbs["segments"], prefix):
        if len(key) != 20 or len(value) != 4:
            raise StoreFormatError(f"segment record {key.hex()} has the wrong size")
        (start,) = struct.unpack(">I", key[16:20])
        (count,) = struct.unpack("<I", value)
        out.append((start, count))
    expected = 0
    for start, count in out:
        if start != expected:
            raise StoreFormatError(f"feature set {fs_id[:12]}: segment at row {start}, expected {expected}")
        expected = start + count
    return out


def _feature_sets(store: _Store) -> List[dict]:
    out = []
    with store.begin() as txn:
        for key, value in txn.cursor(db=store.dbs["featuresets"]):
            ident = _check_identity(key, value, "feature set")
            segments = _segments(txn, store, ident)
            rows = segments[-1][0] + segments[-1][1] if segments else 0
            out.append({"id": ident, "manifest": _json_record(key, value, "feature set"),
                        "rows": rows, "segments": len(segments)})
    return out


def list_feature_sets(path: str) -> List[dict]:
    """Every feature set: ``{"id", "manifest", "rows", "segments"}``, sorted by id."""
    with _Store(path) as store:
        return _feature_sets(store)


def _resolve_feature_set(store: _Store, id_or_prefix: str) -> dict:
    every = _feature_sets(store)
    matches = [fs for fs in every
               if fs["id"] == id_or_prefix or (len(id_or_prefix) >= 4 and fs["id"].startswith(id_or_prefix))]
    if len(matches) > 1:
        raise StoreFormatError(f"feature set prefix '{id_or_prefix}' matches several feature sets; give more digits")
    if not matches:
        known = ", ".join(fs["id"][:12] for fs in every) or "none"
        raise StoreFormatError(f"unknown feature set '{id_or_prefix}' (known: {known})")
    return matches[0]


def _split_items(store: _Store, txn, dataset: str, split: str) -> Tuple[List[bytes], List[int], dict]:
    raw = txn.get(dataset.encode("utf-8"), db=store.dbs["datasets"])
    if raw is None:
        raise StoreFormatError(f"unknown dataset '{dataset}'")
    manifest = _json_record(dataset.encode("utf-8"), raw, "dataset")
    if split not in manifest.get("splits", {}):
        raise StoreFormatError(f"dataset '{dataset}' has no split '{split}' "
                               f"(splits: {', '.join(sorted(manifest.get('splits', {})))})")
    prefix = dataset.encode("utf-8") + b"\0" + split.encode("utf-8") + b"\0"
    examples, labels = [], []
    for key, value in _scan_prefix(txn, store.dbs["splititems"], prefix):
        if len(key) != len(prefix) + 4 or len(value) != 36:
            raise StoreFormatError(f"split item {key!r} has the wrong size")
        (index,) = struct.unpack(">I", key[len(prefix):])
        if index != len(examples):
            raise StoreFormatError(f"{dataset}/{split}: item {index} found where {len(examples)} was expected")
        examples.append(value[:32])
        labels.append(struct.unpack("<I", value[32:36])[0])
    if len(examples) != manifest["splits"][split]:
        raise StoreFormatError(f"{dataset}/{split}: {len(examples)} items, manifest says {manifest['splits'][split]}")
    return examples, labels, manifest


# ----------------------------------------------------------------------------------------------
# Tiles


class _TileHeader:
    __slots__ = ("dtype", "planes", "compressed", "rows", "cols", "frame_width", "frame_count", "table", "data")

    def __init__(self, tile: bytes, key: str, binding: bytes):
        if len(tile) < _TILE_FIXED_HEADER:
            raise StoreFormatError(f"tile {key}: truncated ({len(tile)} bytes)")
        if tile[:4] != _TILE_MAGIC:
            raise StoreFormatError(f"tile {key}: bad magic")
        version, dtype_code, compression = struct.unpack_from("<HBB", tile, 4)
        if not OLDEST_TILE_FORMAT_VERSION <= version <= TILE_FORMAT_VERSION:
            raise StoreFormatError(f"tile {key}: format version {version} (this reader reads "
                                   f"{OLDEST_TILE_FORMAT_VERSION}..{TILE_FORMAT_VERSION})")
        if dtype_code not in _DTYPES or compression > 1:
            raise StoreFormatError(f"tile {key}: unknown codec (dtype {dtype_code}, compression {compression})")
        self.dtype, self.planes = _DTYPES[dtype_code]
        self.compressed = compression == 1
        self.rows, self.cols, self.frame_width, self.frame_count, header_crc = struct.unpack_from("<5I", tile, 8)
        if self.frame_width == 0 or self.frame_count != -(-self.cols // self.frame_width):
            raise StoreFormatError(f"tile {key}: inconsistent frame count")
        entry = 4 * (self.planes + 2)
        self.data = _TILE_FIXED_HEADER + self.frame_count * entry
        if len(tile) < self.data:
            raise StoreFormatError(f"tile {key}: frame table cut short")
        crc = zlib.crc32(tile[_TILE_FIXED_HEADER:self.data], zlib.crc32(tile[:24]))
        if version >= 2:
            # Version 2 binds the tile to its key and its segment's row count (format doc, section 5).
            crc = zlib.crc32(binding, crc)
        if crc != header_crc:
            raise StoreFormatError(f"tile {key}: header checksum mismatch (corrupted, misplaced, "
                                   "or its segment's row count disagrees)")
        # Per frame: (offset from data start, [plane lengths], crc).
        self.table = []
        for f in range(self.frame_count):
            fields = struct.unpack_from(f"<{self.planes + 2}I", tile, _TILE_FIXED_HEADER + f * entry)
            self.table.append((fields[0], fields[1:-1], fields[-1]))

    def frame_columns(self, frame: int) -> int:
        return min(self.frame_width, self.cols - frame * self.frame_width)


def _decode_frame(tile: bytes, header: _TileHeader, frame: int, key: str,
                  decompressor: zstandard.ZstdDecompressor) -> np.ndarray:
    """The frame's values as float32, shape (frame columns, rows): frames are column-major."""
    offset, lengths, stored_crc = header.table[frame]
    start = header.data + offset
    end = start + sum(lengths)
    if end > len(tile):
        raise StoreFormatError(f"tile {key}: frame {frame} runs past the end")
    if zlib.crc32(tile[start:end]) != stored_crc:
        raise StoreFormatError(f"tile {key}: frame {frame} checksum mismatch (corrupted)")
    n = header.frame_columns(frame) * header.rows
    planes = np.empty((header.planes, n), dtype=np.uint8)
    cursor = start
    for p, length in enumerate(lengths):
        chunk = tile[cursor:cursor + length]
        cursor += length
        if length == n:
            raw = chunk  # a plane that zstd could not shrink is stored as is
        elif not header.compressed:
            raise StoreFormatError(f"tile {key}: raw plane {p} of frame {frame} has length {length}, not {n}")
        else:
            try:
                raw = decompressor.decompress(chunk, max_output_size=n)
            except zstandard.ZstdError as error:
                raise StoreFormatError(f"tile {key}: frame {frame} plane {p} does not decompress: {error}") from None
            if len(raw) != n:
                raise StoreFormatError(f"tile {key}: frame {frame} plane {p} is {len(raw)} bytes, not {n}")
        planes[p] = np.frombuffer(raw, dtype=np.uint8)
    # Plane p holds byte p (least significant first) of every stored value.
    if header.dtype == "float32":
        bits = (planes[0].astype(np.uint32) | planes[1].astype(np.uint32) << 8
                | planes[2].astype(np.uint32) << 16 | planes[3].astype(np.uint32) << 24)
        values = bits.view(np.float32)
    else:
        half = planes[0].astype(np.uint16) | planes[1].astype(np.uint16) << 8
        if header.dtype == "float16":
            values = half.view(np.float16).astype(np.float32)
        else:  # bfloat16: the high 16 bits of a float32
            values = (half.astype(np.uint32) << 16).view(np.float32)
    return values.reshape(header.frame_columns(frame), header.rows)


def tile_binding(key: bytes, rows: int) -> bytes:
    """What a version-2 tile stored under ``key`` for a segment of ``rows`` rows is bound to."""
    return bytes(key) + struct.pack("<I", rows)


def decode_tile(tile: bytes, binding: bytes, columns: Optional[Sequence[int]] = None, key: str = "?",
                decompressor: Optional[zstandard.ZstdDecompressor] = None) -> np.ndarray:
    """Decodes a tile (all columns, or only the tile-local ``columns``) to float32 ``(rows, k)``.

    The header CRC is always checked (for version 2, over ``binding`` too: see ``tile_binding``);
    each frame that is read is checked against its CRC.
    """
    header = _TileHeader(tile, key, binding)
    decompressor = decompressor or zstandard.ZstdDecompressor()
    wanted = list(range(header.cols)) if columns is None else list(columns)
    out = np.empty((header.rows, len(wanted)), dtype=np.float32)
    by_frame: Dict[int, List[int]] = {}
    for position, column in enumerate(wanted):
        if not 0 <= column < header.cols:
            raise StoreFormatError(f"tile {key}: column {column} outside 0..<{header.cols}")
        by_frame.setdefault(column // header.frame_width, []).append(position)
    for frame, positions in by_frame.items():
        values = _decode_frame(tile, header, frame, key, decompressor)
        first = frame * header.frame_width
        for position in positions:
            out[:, position] = values[wanted[position] - first]
    return out


def _tile_key_text(fs_id: str, segment_start: int, block: int) -> str:
    # Same wording as the Swift store's error messages.
    return f"tiles/{fs_id[:12]}/rows@{segment_start}/block{block}"


# ----------------------------------------------------------------------------------------------
# Reading rows


def _read(store: _Store, txn, fs: dict, examples: Sequence[bytes], columns: Optional[Sequence[int]]) -> np.ndarray:
    manifest = fs["manifest"]
    fs_id = fs["id"]
    width, block_width = manifest["width"], manifest["columnBlock"]
    if columns is None:
        columns = list(range(width))
    else:
        columns = [int(c) for c in columns]
        bad = [c for c in columns if not 0 <= c < width]
        if bad:
            raise StoreFormatError(f"column {bad[0]} is outside feature set {fs_id[:12]} (width {width})")
    out = np.zeros((len(examples), len(columns)), dtype=np.float32)
    if not examples or not columns:
        return out

    prefix = _fs_prefix(fs_id)
    segments = _segments(txn, store, fs_id)
    starts = [s for s, _ in segments]
    # Rows of each segment that we need: {segment index: ([local rows], [output rows])}.
    needed: Dict[int, Tuple[List[int], List[int]]] = {}
    for out_row, example in enumerate(examples):
        value = txn.get(prefix + example, db=store.dbs["rows"])
        if value is None:
            raise StoreFormatError(f"example {example.hex()} has no features in feature set {fs_id[:12]}")
        (row,) = struct.unpack(">I", value)
        seg = bisect.bisect_right(starts, row) - 1
        if seg < 0 or row >= starts[seg] + segments[seg][1]:
            raise StoreFormatError(f"row {row} of example {example.hex()[:12]} is in no segment")
        local, outs = needed.setdefault(seg, ([], []))
        local.append(row - starts[seg])
        outs.append(out_row)

    # Columns of each block that we need: {block: ([tile-local columns], [output columns])}.
    by_block: Dict[int, Tuple[List[int], List[int]]] = {}
    for out_col, column in enumerate(columns):
        local, outs = by_block.setdefault(column // block_width, ([], []))
        local.append(column % block_width)
        outs.append(out_col)

    decompressor = zstandard.ZstdDecompressor()
    for seg, (local_rows, out_rows) in sorted(needed.items()):
        start, count = segments[seg]
        for block, (local_cols, out_cols) in sorted(by_block.items()):
            key = prefix + struct.pack(">II", start, block)
            text = _tile_key_text(fs_id, start, block)
            tile = txn.get(key, db=store.dbs["tiles"])
            if tile is None:
                raise StoreFormatError(f"store is inconsistent: missing tile {text}")
            values = decode_tile(tile, tile_binding(key, count), local_cols, key=text, decompressor=decompressor)
            # decode_tile checked the header CRC, so these fields can be trusted.
            tile_rows, tile_cols = struct.unpack_from("<II", tile, 8)
            expected_cols = min(block_width, width - block * block_width)
            if tile_rows != count or tile_cols != expected_cols:
                raise StoreFormatError(f"tile {text}: {tile_rows}x{tile_cols}, expected {count}x{expected_cols}")
            out[np.ix_(out_rows, out_cols)] = values[local_rows]
    return out


def read_rows(path: str, fs: str, example_ids_hex: Sequence[str],
              columns: Optional[Sequence[int]] = None) -> np.ndarray:
    """Rows of the given examples (64-hex-digit ids) from feature set ``fs`` (id or prefix of at
    least 4 hex digits), all columns or only ``columns`` (global indices, in the order given)."""
    examples = []
    for text in example_ids_hex:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise StoreFormatError(f"'{text}' is not an example id (64 hex digits)")
        examples.append(raw)
    with _Store(path) as store:
        info = _resolve_feature_set(store, fs)
        with store.begin() as txn:
            return _read(store, txn, info, examples, columns)


def read_split(path: str, featureset_prefix: str, dataset: str, split: str,
               columns: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """A dataset split as ``(X, labels)``: ``X`` float32 ``(n, k)`` in split order (all columns or
    only ``columns``), ``labels`` int64 ``(n,)`` indexing the dataset's ``classNames``."""
    with _Store(path) as store:
        info = _resolve_feature_set(store, featureset_prefix)
        with store.begin() as txn:
            examples, labels, _ = _split_items(store, txn, dataset, split)
            return _read(store, txn, info, examples, columns), np.asarray(labels, dtype=np.int64)


def read_manifests(path: str) -> dict:
    """Every stored JSON record, with manifest ids checked against their bytes:
    ``{"backbones": {id: m}, "featuresets": {id: m}, "datasets": {name: m}, "examples": {hex: r}}``."""
    out = {"backbones": {}, "featuresets": {}, "datasets": {}, "examples": {}}
    with _Store(path) as store, store.begin() as txn:
        for table in ("backbones", "featuresets"):
            for key, value in txn.cursor(db=store.dbs[table]):
                out[table][_check_identity(key, value, table)] = _json_record(key, value, table)
        for key, value in txn.cursor(db=store.dbs["datasets"]):
            out["datasets"][key.decode("utf-8")] = _json_record(key, value, "dataset")
        for key, value in txn.cursor(db=store.dbs["examples"]):
            out["examples"][key.hex()] = _json_record(key, value, "example")
    return out


# ----------------------------------------------------------------------------------------------
# Command line


def _parse_columns(text: Optional[str]) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"read_store.py: --columns must be comma-separated integers, got '{text}'") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Read features from an h2t-store without the Swift code.")
    parser.add_argument("store", help="store directory (holds data.mdb)")
    parser.add_argument("--featureset", help="feature set id or prefix (>= 4 hex digits)")
    parser.add_argument("--dataset", help="dataset name")
    parser.add_argument("--split", help="split name")
    parser.add_argument("--examples", help="comma-separated example ids (64 hex digits) instead of a split")
    parser.add_argument("--columns", help="comma-separated global column indices (default: all)")
    parser.add_argument("--out", help="write the float32 matrix here (.npy)")
    parser.add_argument("--labels-out", help="write the int64 labels here (.npy; splits only)")
    parser.add_argument("--manifests", action="store_true", help="print every manifest as JSON, ids checked")
    args = parser.parse_args(argv)

    try:
        if args.manifests:
            json.dump(read_manifests(args.store), sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
            print()
            return 0
        if args.featureset is None:
            listing = [{"id": fs["id"], "rows": fs["rows"], "segments": fs["segments"],
                        "width": fs["manifest"]["width"], "dtype": fs["manifest"]["codec"]["dtype"]}
                       for fs in list_feature_sets(args.store)]
            json.dump(listing, sys.stdout, indent=1)
            print()
            return 0
        if args.out is None:
            parser.error("--out is required with --featureset")
        columns = _parse_columns(args.columns)
        labels = None
        if args.examples is not None:
            ids = [part.strip() for part in args.examples.split(",") if part.strip()]
            matrix = read_rows(args.store, args.featureset, ids, columns)
        elif args.dataset is not None and args.split is not None:
            matrix, labels = read_split(args.store, args.featureset, args.dataset, args.split, columns)
        else:
            parser.error("give --dataset and --split, or --examples")
        np.save(args.out, matrix)
        if args.labels_out is not None:
            if labels is None:
                parser.error("--labels-out needs --dataset and --split")
            np.save(args.labels_out, labels)
        json.dump({"rows": matrix.shape[0], "cols": matrix.shape[1], "out": args.out}, sys.stdout)
        print()
        return 0
    except StoreFormatError as error:
        print(f"read_store.py: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
