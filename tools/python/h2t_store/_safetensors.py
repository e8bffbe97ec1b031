"""Writing safetensors files (the format of ``h2t-store ingest --external``), with numpy only."""

from __future__ import annotations

import json
import struct
from typing import Any, Dict

import numpy as np


def write_safetensors(path: str, tensors: Dict[str, np.ndarray], metadata: Dict[str, str]) -> None:
    """A safetensors file (8-byte LE header length, JSON header, data) of float32/float16/float64
    arrays in the given order, with ``__metadata__``."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64"}
    header: Dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for tensor_name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype.newbyteorder("<") not in codes:
            raise ValueError(f"tensor '{tensor_name}' has dtype {array.dtype}; write float32, float16 or float64")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[tensor_name] = {"dtype": codes[array.dtype.newbyteorder("<")], "shape": list(array.shape),
                               "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for blob in blobs:
            out.write(blob)
