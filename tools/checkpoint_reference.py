#!/usr/bin/env python3
"""Independent reference for the Swift PyTorch checkpoint reader (standard library only, no torch).

  checksums PATH [--out FILE]   read a legacy or zip .pth and print/write per-tensor checksums
  fixtures DIR                  write the tiny legacy/zip checkpoint fixtures and their expected values

Checksums (must match H2TBackboneTests/CheckpointTests.swift): for each tensor in file order, with
elements v[i] in row-major order of the tensor's *view* (storage offset and strides applied) as
Python floats (IEEE double):
  sum      = v[0] + v[1] + ...                         (left to right)
  weighted = v[0]*w(0) + v[1]*w(1) + ...,  w(i) = (i % 251) + 1
Storages are read with pickle.Unpickler.persistent_load; find_class only hands out the
state-dict globals, mirroring the Swift reader's whitelist.
"""

import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# (struct code, element size) per storage type
STORAGE_TYPES = {
    "FloatStorage": ("f", 4, "float32"), "DoubleStorage": ("d", 8, "float64"),
    "HalfStorage": ("e", 2, "float16"), "LongStorage": ("q", 8, "int64"),
    "IntStorage": ("i", 4, "int32"), "ShortStorage": ("h", 2, "int16"),
    "CharStorage": ("b", 1, "int8"), "ByteStorage": ("B", 1, "uint8"), "BoolStorage": ("?", 1, "bool"),
}


# ---- reading -------------------------------------------------------------------------------

class StorageType:
    def __init__(self, name):
        self.name = name
        self.code, self.size, self.dtype = STORAGE_TYPES[name]


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    return {"storage": storage, "offset": offset, "size": tuple(size), "stride": tuple(stride)}


class StateDictUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages  # key -> {"type": StorageType, "numel": n, "data": bytes|None}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid):
        assert pid[0] == "storage"
        storage_type, key, numel = pid[1], pid[2], pid[4]
        entry = self.storages.setdefault(key, {"type": storage_type, "numel": numel, "data": None})
        view = pid[5] if len(pid) > 5 else None
        return {"key": key, "view_offset": view[1] if view else 0}


def read_checkpoint(path):
    with open(path, "rb") as f:
        raw = f.read()
    storages = {}
    if raw[:4] == b"PK\x03\x04":
        z = zipfile.ZipFile(io.BytesIO(raw))
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        prefix = pkl[: -len("data.pkl")]
        state = StateDictUnpickler(io.BytesIO(z.read(pkl)), storages).load()
        for key, entry in storages.items():
            entry["data"] = z.read(prefix + "data/" + key)
    else:
        f = io.BytesIO(raw)
        assert pickle.load(f) == LEGACY_MAGIC
        assert pickle.load(f) == LEGACY_PROTOCOL
        pickle.load(f)  # sys info
        state = StateDictUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            entry = storages[key]
            assert count == entry["numel"], (key, count, entry["numel"])
            entry["data"] = f.read(count * entry["type"].size)
        assert f.read() == b"", "trailing bytes"
    tensors = collections.OrderedDict()
    for name, t in state.items():
        entry = storages[t["storage"]["key"]]
        st = entry["type"]
        elements = struct.unpack("<%d%s" % (entry["numel"], st.code), entry["data"][: entry["numel"] * st.size])
        base = t["storage"]["view_offset"] + t["offset"]
        values = []
        shape, stride = t["size"], t["stride"]

        def walk(axis, offset):
            if axis == len(shape):
                values.append(elements[offset])
                return
            for i in range(shape[axis]):
                walk(axis + 1, offset + i * stride[axis])

        walk(0, base)
        values = [float(v) for v in values]
        tensors[name] = {"shape": list(shape), "dtype": st.dtype, "values": values}
    return tensors


def checksums(tensors):
    out = collections.OrderedDict()
    for name, t in tensors.items():
        total = 0.0
        weighted = 0.0
        for i, v in enumerate(t["values"]):
            total += v
            weighted += v * ((i % 251) + 1)
        out[name] = {"shape": t["shape"], "dtype": t["dtype"], "sum": total, "weighted": weighted}
    return out


# ---- writing fixtures the way torch.save lays them out ---------------------------------------

def install_fake_torch():
    """Stand-ins registered as `torch` / `torch._utils` so that pickle writes the same GLOBALs."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    torch._utils = utils
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    classes = {}
    for name in STORAGE_TYPES:
        cls = type(name, (), {})
        cls.__module__ = "torch"
        setattr(torch, name, cls)
        classes[name] = cls

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("never called")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    return classes, _rebuild_tensor_v2


class FakeStorage:
    def __init__(self, key, type_name, values):
        self.key, self.type_name, self.values = key, type_name, values

    def raw(self):
        code, _, _ = STORAGE_TYPES[self.type_name]
        return struct.pack("<%d%s" % (len(self.values), code), *self.values)


class FakeTensor:
    rebuild = None

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, protocol):
        return (FakeTensor.rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride),
                                     False, collections.OrderedDict()))


def fixture_state():
    s0 = FakeStorage("0", "FloatStorage", [0.5, -1.25, 2.0, 3.5, -4.0, 8.125])
    s1 = FakeStorage("1", "FloatStorage", [float(i) * 0.1 for i in range(10)])
    s2 = FakeStorage("2", "HalfStorage", [1.5, -2.0, 0.25, 65504.0])
    s3 = FakeStorage("3", "LongStorage", [7])
    s4 = FakeStorage("4", "DoubleStorage", [1.0 / 3.0, -2.5, 1e-3])
    state = collections.OrderedDict()
    state["a.weight"] = FakeTensor(s0, 0, [2, 3], [3, 1])
    state["a.weight_t"] = FakeTensor(s0, 0, [3, 2], [1, 3])      # transposed view, shared storage
    state["b.strided"] = FakeTensor(s1, 4, [3], [2])             # offset 4, stride 2: 0.4 0.6 0.8
    state["c.half"] = FakeTensor(s2, 0, [2, 2], [2, 1])
    state["bn.num_batches_tracked"] = FakeTensor(s3, 0, [], [])  # int64 scalar
    state["e.double"] = FakeTensor(s4, 0, [3], [1])
    state["f.empty"] = FakeTensor(s1, 0, [0, 4], [4, 1])
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("a", {"version": 2})])
    return state, [s0, s1, s2, s3, s4]


def pickle_state(state, persistent_id):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)
    p.persistent_id = persistent_id
    p.dump(state)
    return buf.getvalue()


class FakeStorageView:
    """A legacy (torch < 0.4) storage view: elements [offset, offset + size) of a root storage."""
    def __init__(self, root, view_key, offset, size):
        self.root, self.view_key, self.offset, self.size = root, view_key, offset, size


def write_legacy(path, classes, state, storages):
    def pid(obj):
        if isinstance(obj, FakeStorage):
            return ("storage", classes[obj.type_name], obj.key, "cpu", len(obj.values), None)
        if isinstance(obj, FakeStorageView):
            root = obj.root
            return ("storage", classes[root.type_name], root.key, "cpu", len(root.values),
                    (obj.view_key, obj.offset, obj.size))
        return None
    out = io.BytesIO()
    pickle.dump(LEGACY_MAGIC, out, protocol=2)
    pickle.dump(LEGACY_PROTOCOL, out, protocol=2)
    pickle.dump({"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, out, protocol=2)
    out.write(pickle_state(state, pid))
    keys = sorted(s.key for s in storages)
    pickle.dump(keys, out, protocol=2)
    by_key = {s.key: s for s in storages}
    for key in keys:
        out.write(struct.pack("<q", len(by_key[key].values)))
        out.write(by_key[key].raw())
    with open(path, "wb") as f:
        f.write(out.getvalue())


def write_zip(path, members):
    """Stored members, data 64-byte aligned through a padding extra field, fixed timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            offset = z.fp.tell()
            pad = (-(offset + 30 + len(name.encode()) + 4)) % 64
            info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            z.writestr(info, data)


def write_zip_checkpoint(path, classes, state, storages):
    def pid(obj):
        if isinstance(obj, FakeStorage):
            return ("storage", classes[obj.type_name], obj.key, "cpu", len(obj.values))
        return None
    members = [("archive/data.pkl", pickle_state(state, pid)), ("archive/byteorder", b"little")]
    members += [("archive/data/" + s.key, s.raw()) for s in storages]
    members += [("archive/version", b"3\n"), ("archive/.data/serialization_id", b"0123456789")]
    write_zip(path, members)


def write_evil_zip(path, marker):
    """A zip checkpoint whose data.pkl calls os.system: a loader that executes would create `marker`."""
    payload = (b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(b"touch " + marker.encode()))
               + b"touch " + marker.encode() + b"q\x01\x85q\x02Rq\x03.")
    write_zip(path, [("archive/data.pkl", payload), ("archive/version", b"3\n")])


def write_deflated_zip(path):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("archive/data.pkl", date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, b"\x80\x02}q\x00." * 8)


def write_safetensors(path):
    """A small safetensors weights file (header JSON, then little-endian data in header order)."""
    tensors = [
        ("conv.weight", "F32", [2, 2], struct.pack("<4f", 0.5, -1.5, 2.25, 3.0)),
        ("conv.bias", "F16", [2], struct.pack("<2e", 0.125, -8.0)),
        ("bn.num_batches_tracked", "I64", [], struct.pack("<q", 42)),
        ("head.scale", "BF16", [1], struct.pack("<H", 0x3FC0)),  # 1.5
    ]
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + data)


def make_fixtures(directory):
    classes, rebuild = install_fake_torch()
    FakeTensor.rebuild = rebuild
    os.makedirs(directory, exist_ok=True)
    state, storages = fixture_state()
    legacy = os.path.join(directory, "tiny_legacy.pth")
    zipped = os.path.join(directory, "tiny_zip.pth")
    write_legacy(legacy, classes, state, storages)
    write_zip_checkpoint(zipped, classes, state, storages)
    write_evil_zip(os.path.join(directory, "evil_os_system_zip.pth"), "/tmp/h2t-evil-pickle-marker-zip")
    write_deflated_zip(os.path.join(directory, "deflated_zip.pth"))
    write_safetensors(os.path.join(directory, "tiny_weights.safetensors"))
    # Legacy storage views: two tensors reading slices of one root storage through views.
    root = FakeStorage("0", "FloatStorage", [float(i) for i in range(12)])
    view_state = collections.OrderedDict()
    view_state["v.a"] = FakeTensor(FakeStorageView(root, "v1", 2, 6), 1, [2, 2], [2, 1])  # 3 4 5 6
    view_state["v.b"] = FakeTensor(FakeStorageView(root, "v2", 8, 4), 0, [2, 2], [1, 2])  # 8 10 9 11
    write_legacy(os.path.join(directory, "tiny_legacy_views.pth"), classes, view_state, [root])
    assert read_checkpoint(os.path.join(directory, "tiny_legacy_views.pth")) == {
        "v.a": {"shape": [2, 2], "dtype": "float32", "values": [3.0, 4.0, 5.0, 6.0]},
        "v.b": {"shape": [2, 2], "dtype": "float32", "values": [8.0, 10.0, 9.0, 11.0]}}
    # The expected values come from reading the written files back with the reference reader.
    expected = read_checkpoint(legacy)
    assert read_checkpoint(zipped) == expected
    with open(os.path.join(directory, "tiny_checkpoint_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("checksums")
    c.add_argument("path")
    c.add_argument("--out")
    fx = sub.add_parser("fixtures")
    fx.add_argument("directory")
    args = parser.parse_args()
    if args.command == "checksums":
        sums = checksums(read_checkpoint(args.path))
        text = json.dumps({"file": os.path.basename(args.path), "tensors": sums}, indent=1) + "\n"
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    else:
        make_fixtures(args.directory)


if __name__ == "__main__":
    main()
