"""Tile decoding (``schemas/store-format.md`` section 5), vectorised with numpy.

A tile is split into frames of ``frameWidth`` columns, each stored column-major as byte planes
that zstd compresses one by one. Decoding gathers every needed plane of every needed frame, lets
zstandard decompress them all in one call (on several threads, outside the GIL), and assembles the
float32 values with whole-array numpy operations: the only Python loop is per frame (checksum and
slicing), never per value or per row.
"""

from __future__ import annotations

import struct
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import zstandard

from .errors import StoreFormatError

#: Tile format versions this reader understands (version 1 tiles carry no binding).
TILE_FORMAT_VERSIONS = (1, 2)
TILE_MAGIC = b"H2TT"
FIXED_HEADER = 28
#: dtype code -> (name, bytes per value = planes).
DTYPES = {0: ("float32", 4), 1: ("float16", 2), 2: ("bfloat16", 2)}


def tile_binding(key: bytes, rows: int) -> bytes:
    """What a version-2 tile stored under ``key`` for a segment of ``rows`` rows is bound to."""
    return bytes(key) + struct.pack("<I", rows)


class TileHeader:
    """A tile's checked header and frame table."""

    __slots__ = ("dtype", "planes", "compressed", "rows", "cols", "frame_width", "frame_count", "table", "data", "name")

    def __init__(self, tile: bytes, name: str, binding: bytes):
        self.name = name
        if len(tile) < FIXED_HEADER:
            raise StoreFormatError(f"tile {name}: truncated ({len(tile)} bytes)")
        if tile[:4] != TILE_MAGIC:
            raise StoreFormatError(f"tile {name}: bad magic")
        version, dtype_code, compression = struct.unpack_from("<HBB", tile, 4)
        if version not in TILE_FORMAT_VERSIONS:
            raise StoreFormatError(f"tile {name}: format version {version} (this reader reads 1..2)")
        if dtype_code not in DTYPES or compression > 1:
            raise StoreFormatError(f"tile {name}: unknown codec (dtype {dtype_code}, compression {compression})")
        self.dtype, self.planes = DTYPES[dtype_code]
        self.compressed = compression == 1
        self.rows, self.cols, self.frame_width, self.frame_count, header_crc = struct.unpack_from("<5I", tile, 8)
        if self.frame_width == 0 or self.frame_count != -(-self.cols // self.frame_width):
            raise StoreFormatError(f"tile {name}: inconsistent frame count")
        entry = 4 * (self.planes + 2)
        self.data = FIXED_HEADER + self.frame_count * entry
        if len(tile) < self.data:
            raise StoreFormatError(f"tile {name}: frame table cut short")
        crc = zlib.crc32(tile[FIXED_HEADER:self.data], zlib.crc32(tile[:24]))
        if version >= 2:
            crc = zlib.crc32(binding, crc)
        if crc != header_crc:
            raise StoreFormatError(f"tile {name}: header checksum mismatch (corrupted, misplaced, "
                                   "or its segment's row count disagrees)")
        # One row per frame: offset, plane lengths..., crc.
        self.table = np.frombuffer(tile, dtype="<u4", count=self.frame_count * (self.planes + 2),
                                   offset=FIXED_HEADER).reshape(self.frame_count, self.planes + 2).astype(np.int64)

    def frame_columns(self, frame: int) -> int:
        return min(self.frame_width, self.cols - frame * self.frame_width)


def _combine(planes: np.ndarray, dtype: str) -> np.ndarray:
    """Byte planes ``(P, ..., m)`` (plane p = byte p, least significant first) to float32 ``(..., m)``.

    Whole-array shifts and ors on each plane (contiguous, vectorised by numpy), never byte-strided
    writes; bfloat16 is the high half of a float32."""
    if dtype == "bfloat16":
        bits = np.left_shift(planes[1], 8, dtype=np.uint16)
        bits |= planes[0]
        return np.left_shift(bits, 16, dtype=np.uint32).view(np.float32)
    if dtype == "float16":
        bits = np.left_shift(planes[1], 8, dtype=np.uint16)
        bits |= planes[0]
        return bits.view(np.float16).astype(np.float32)
    word = planes[0].astype(np.uint32)
    for p in range(1, planes.shape[0]):
        word |= np.left_shift(planes[p], 8 * p, dtype=np.uint32)
    return word.view(np.float32)


def _frame_pieces(tile: bytes, header: TileHeader, frames: Sequence[int]) -> Tuple[List[object], List[bytes], List[int]]:
    """The planes of ``frames`` (ascending, unique) of a checked tile, each frame's CRC checked:
    ``pieces`` (raw planes as bytes, compressed ones as their decompressed size), the compressed
    planes, and their positions in ``pieces``."""
    rows, data = header.rows, header.data
    pieces: List[object] = []
    packed: List[bytes] = []
    packed_at: List[int] = []
    view = memoryview(tile)  # slices of a memoryview are not copies
    table = header.table[np.asarray(frames, dtype=np.int64)]
    ends = data + table[:, 0] + table[:, 1:-1].sum(axis=1)
    if len(ends) and ends.max() > len(tile):
        raise StoreFormatError(f"tile {header.name}: frame {frames[int(np.argmax(ends > len(tile)))]} runs past the end")
    for f, (offset, *lengths, stored_crc) in zip(frames, table.tolist()):
        start = data + offset
        if zlib.crc32(view[start:start + sum(lengths)]) != stored_crc:
            raise StoreFormatError(f"tile {header.name}: frame {f} checksum mismatch (corrupted)")
        m = header.frame_columns(f) * rows
        for p, length in enumerate(lengths):
            if length == m:
                pieces.append(view[start:start + length])  # a plane zstd could not shrink is stored as is
            elif not header.compressed:
                raise StoreFormatError(f"tile {header.name}: raw plane {p} of frame {f} has length {length}, not {m}")
            else:
                packed_at.append(len(pieces))
                pieces.append(m)
                packed.append(view[start:start + length])
            start += length
    return pieces, packed, packed_at


def _decompress(packed: List[bytes], sizes: List[int], name: str, decompressor: Optional[zstandard.ZstdDecompressor],
                threads: int) -> List[bytes]:
    """Decompresses every plane in one zstandard call (on ``threads`` threads, outside the GIL)."""
    if not packed:
        return []
    decompressor = decompressor or zstandard.ZstdDecompressor()
    try:
        decompressed = decompressor.multi_decompress_to_buffer(packed, decompressed_sizes=struct.pack(f"={len(sizes)}Q", *sizes),
                                                               threads=threads)
    except zstandard.ZstdError as error:
        raise StoreFormatError(f"tile {name}: a frame does not decompress: {error}") from None
    return list(decompressed)


def _assemble(header: TileHeader, frames: Sequence[int], pieces: List[object], decompressed: Sequence[object],
              packed_at: List[int], out: Optional[np.ndarray]) -> np.ndarray:
    """Lays the decompressed planes of ``frames`` into float32 ``(rows, k)``."""
    rows, planes = header.rows, header.planes
    _check_sizes(header, pieces, decompressed, packed_at)
    raw = np.frombuffer(b"".join(pieces), dtype=np.uint8)  # type: ignore[arg-type]
    widths = [header.frame_columns(f) for f in frames]
    if out is None:
        out = np.empty((rows, sum(widths)), dtype=np.float32)
    elif out.shape != (rows, sum(widths)):
        raise ValueError(f"tile {header.name}: output of shape {out.shape} for {rows}x{sum(widths)} values")
    # Frames of full width form one block decoded at once; a narrower last frame is decoded alone.
    full = sum(1 for w in widths if w == header.frame_width)
    fw = header.frame_width
    if full:
        block = raw[:full * planes * fw * rows].reshape(full, planes, fw * rows)
        values = _combine(np.moveaxis(block, 1, 0), header.dtype)  # (full, fw*rows), column-major per frame
        out[:, :full * fw] = values.reshape(full * fw, rows).T
    if full < len(widths):
        w = widths[-1]
        tail = raw[full * planes * fw * rows:].reshape(planes, w * rows)
        out[:, full * fw:] = _combine(tail, header.dtype).reshape(w, rows).T
    return out


def decode_frames(tile: bytes, header: TileHeader, frames: Sequence[int],
                  decompressor: Optional[zstandard.ZstdDecompressor] = None, out: Optional[np.ndarray] = None,
                  threads: int = 0) -> np.ndarray:
    """Decodes ``frames`` (ascending, unique) of a checked tile into float32 ``(rows, k)`` (into
    ``out`` when given), where ``k`` is the sum of the frames' widths, columns in frame order.
    Each frame's CRC is checked."""
    pieces, packed, packed_at = _frame_pieces(tile, header, frames)
    decompressed = _decompress(packed, [pieces[i] for i in packed_at], header.name, decompressor, threads)  # type: ignore[misc]
    return _assemble(header, frames, pieces, decompressed, packed_at, out)


def _assemble_columns(header: TileHeader, frames: np.ndarray, pieces: List[object], decompressed: Sequence[object],
                      packed_at: List[int], columns: np.ndarray) -> np.ndarray:
    """Lays only the tile-local ``columns`` (any order, repeats allowed) of the decompressed
    ``frames`` into float32 ``(rows, len(columns))``. A frame stores each plane column-major, so a
    column is ``rows`` contiguous bytes per plane: those are gathered, and only they are combined
    (a few columns of each frame is the usual selection; combining whole frames would cost more)."""
    rows, planes, fw = header.rows, header.planes, header.frame_width
    _check_sizes(header, pieces, decompressed, packed_at)
    raw = np.frombuffer(b"".join(pieces), dtype=np.uint8).reshape(-1, rows)  # type: ignore[arg-type]
    widths = np.minimum(fw, header.cols - frames * fw)
    first = np.zeros(len(frames), dtype=np.int64)  # first row of `raw` of each frame
    np.cumsum(widths[:-1] * planes, out=first[1:])
    position = np.zeros(header.frame_count, dtype=np.int64)
    position[frames] = np.arange(len(frames))
    at = position[columns // fw]
    start = first[at] + columns % fw  # plane p of a column is `widths` rows further per plane
    picked = raw[start[None, :] + np.arange(planes)[:, None] * widths[at][None, :]]  # (planes, k, rows)
    return _combine(picked, header.dtype).T


def _check_sizes(header: TileHeader, pieces: List[object], decompressed: Sequence[object], packed_at: List[int]) -> None:
    """Puts the decompressed planes in their places in ``pieces``, each checked for its size."""
    for i, segment in zip(packed_at, decompressed):
        if len(segment) != pieces[i]:  # type: ignore[arg-type]
            raise StoreFormatError(f"tile {header.name}: a plane decompresses to {len(segment)} bytes, not {pieces[i]}")  # type: ignore[arg-type]
        pieces[i] = segment


def _frames_of(header: TileHeader, columns: np.ndarray) -> np.ndarray:
    if columns.size and (columns.min() < 0 or columns.max() >= header.cols):
        raise StoreFormatError(f"tile {header.name}: column outside 0..<{header.cols}")
    return np.unique(columns // header.frame_width)


def decode_many(requests: Sequence[Tuple[bytes, bytes, Optional[np.ndarray], str]],
                decompressor: Optional[zstandard.ZstdDecompressor] = None, threads: int = 0) -> List[np.ndarray]:
    """Decodes several tiles' columns (``(tile, binding, columns or None, name)`` each, as
    ``decode_columns``) with one zstandard call for all their planes: a read of a few columns
    touches many tiles, each for a few frames, and one call per tile would cost more in hand-offs
    than in decompression."""
    prepared = []
    packed: List[bytes] = []
    sizes: List[int] = []
    for tile, binding, columns, name in requests:
        header = TileHeader(tile, name, binding)
        cols = None if columns is None else np.asarray(columns, dtype=np.int64)
        frames = np.arange(header.frame_count) if cols is None else _frames_of(header, cols)
        frame_list = frames.tolist()
        pieces, tile_packed, packed_at = _frame_pieces(tile, header, frame_list)
        prepared.append((header, frames, frame_list, cols, pieces, packed_at, len(packed)))
        packed.extend(tile_packed)
        sizes.extend(pieces[i] for i in packed_at)  # type: ignore[misc]
    decompressed = _decompress(packed, sizes, requests[0][3] if requests else "", decompressor, threads)
    results = []
    for header, frames, frame_list, cols, pieces, packed_at, first in prepared:
        mine = decompressed[first:first + len(packed_at)]
        if cols is None:
            results.append(_assemble(header, frame_list, pieces, mine, packed_at, None))
        else:
            results.append(_assemble_columns(header, frames, pieces, mine, packed_at, cols))
    return results


def decode_columns(tile: bytes, binding: bytes, columns: Optional[np.ndarray], name: str,
                   decompressor: Optional[zstandard.ZstdDecompressor] = None, out: Optional[np.ndarray] = None,
                   threads: int = 0) -> np.ndarray:
    """Decodes a tile (all columns, or the tile-local ``columns``, any order, repeats allowed) to
    float32 ``(rows, k)``; only the frames holding those columns are checked and decompressed.
    All columns can be decoded into ``out`` (a view of the caller's output). ``threads``: zstd
    decompression threads (0 or 1: this thread; n > 1: up to n, at most one per frame)."""
    header = TileHeader(tile, name, binding)
    if columns is None:
        return decode_frames(tile, header, range(header.frame_count), decompressor, out, threads)
    columns = np.asarray(columns, dtype=np.int64)
    frames = _frames_of(header, columns)
    frame_list = frames.tolist()
    pieces, packed, packed_at = _frame_pieces(tile, header, frame_list)
    decompressed = _decompress(packed, [pieces[i] for i in packed_at], header.name, decompressor, threads)  # type: ignore[misc]
    return _assemble_columns(header, frames, pieces, decompressed, packed_at, columns)
