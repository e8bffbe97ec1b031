"""Writing safetensors files (the format of ``h2t-store ingest --external``), with numpy only."""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, List, Sequence, Union

import numpy as np


def write_safetensors(path: str, tensors: Dict[str, Union[np.ndarray, Sequence[np.ndarray]]], metadata: Dict[str, str],
                      overwrite_in_place: bool = False) -> None:
    """A safetensors file (8-byte LE header length, JSON header, data) of float32, float16, float64
    or bfloat16 (given as uint16 bit patterns) arrays in the given order, with ``__metadata__``.
    A tensor may be given as a list of arrays of one dtype and trailing shape, stacked along the
    first axis as they are written (no concatenated copy). ``overwrite_in_place``: an existing
    file is written over and then cut to size, not truncated first, so that its pages (of a
    file in memory, such as /dev/shm) are reused instead of freed and allocated again; only for
    a file nobody else reads meanwhile."""
    # uint16 arrays hold bfloat16 bit patterns (numpy has no bfloat16).
    codes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64", np.dtype("<u2"): "BF16"}
    header: Dict[str, Any] = {"__metadata__": metadata}
    blobs: List[Any] = []
    offset = 0
    for tensor_name, given in tensors.items():
        parts = [given] if isinstance(given, np.ndarray) else list(given)
        if not parts or any(p.dtype != parts[0].dtype or p.shape[1:] != parts[0].shape[1:] for p in parts):
            raise ValueError(f"tensor '{tensor_name}': give an array, or arrays of one dtype and trailing shape")
        dtype = parts[0].dtype.newbyteorder("<")
        if dtype not in codes:
            raise ValueError(f"tensor '{tensor_name}' has dtype {parts[0].dtype}; write float32, float16, float64 or uint16 (bfloat16 bits)")
        data = [np.ascontiguousarray(p.astype(dtype, copy=False)) for p in parts]
        size = sum(p.nbytes for p in data)
        shape = [sum(p.shape[0] for p in parts), *parts[0].shape[1:]] if parts[0].ndim else []
        header[tensor_name] = {"dtype": codes[dtype], "shape": shape, "data_offsets": [offset, offset + size]}
        blobs.extend(data)
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    reuse = overwrite_in_place and os.path.isfile(path)
    with open(path, "r+b" if reuse else "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for blob in blobs:
            out.write(blob.reshape(-1).view(np.uint8))
        if reuse:
            out.truncate()
