#!/usr/bin/env python3
"""Independent reference for the Swift backbones: ONNX graphs built from the pinned checkpoints.

Builds MobileNetV2 (torchvision layout) and EfficientNet-Lite0 (TF "SAME" padding, BN eps 1e-3)
as ONNX graphs with numpy + onnx only (no torch: the legacy PyTorch pickles are read with
``pickle.Unpickler`` + ``persistent_load``, accepting only the globals a state dict needs), runs
them in ONNX Runtime with every tap exposed as a graph output, and writes the committed fixtures
under ``Tests/H2TBackboneTests/Fixtures/``:

- ``network_inputs.bin``: the test images as uint8 RGB, height x width x 3, already resized, so
  that Swift and Python start from the same bytes; both normalise them with the same float32
  formula ``(x / 255 - mean) / std``.
- ``network_reference.json``: per network, the ordered taps (name, shape) and per image and tap:
  max |x|, its flat index, mean, root-mean-square, four +-1 projections (means of sign * x), and
  where to find the sampled values; full taps are listed in ``full``.
- ``network_reference.bin``: little-endian float32 blob: for every (network, image, tap) 128
  values at pseudo-random flat indices (splitmix64, see ``sample_indices``), then the taps kept
  in full.

Every statistic is bounded by max |Delta| (|mean(Delta)|, |rms(a) - rms(b)| and every projection
difference are <= max |Delta|), so a Swift tap that passes the issue's criterion
max|Delta| / max|ref| <= 1e-3 also passes these checks, and a wrong tap fails them.

Also ``bench``: throughput of ONNX Runtime returning all intermediates (used by
``tools/bench-backbone.sh`` to compare with the Swift benchmark in the same run), or with
``--outputs logits`` only the logits, a plain inference (``tools/bench-ingest``).

Requirements (pinned; ``pip install -r`` these lines):
    numpy==2.4.6
    onnx==1.23.2
    onnxruntime==1.32.0

Usage:
    tools/onnx_reference.py fixtures [--cache DIR] [--out Tests/H2TBackboneTests/Fixtures]
    tools/onnx_reference.py classify --network mobilenet_v2 IMAGE.png [--size 224]
    tools/onnx_reference.py bench [--size 64] [--batch 32] [--threads 2] [--seconds 10] [--json]
                                  [--outputs all|logits] [--idx FILE.gz --count 512] [--clock wall|cpu]

The checkpoints are read from the artefact cache (``$H2T_CACHE`` or ``~/.cache/h2t-store``,
fetched by ``tools/fetch-artifacts``); the images from the cache (scikit-image's chelsea.png and
coffee.png) and from /usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``).
"""

import argparse
import collections
import gzip
import hashlib
import json
import os
import pickle
import struct
import sys
import time
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

M64 = (1 << 64) - 1
SAMPLES_PER_TAP = 128
PROJECTIONS = 4

# ---------------------------------------------------------------------------------------------
# Legacy PyTorch checkpoint reader (executes nothing: only the globals a state dict needs).

_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "DoubleStorage": np.float64,
           "HalfStorage": np.float16, "IntStorage": np.int32}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: ("tensor", storage, offset, tuple(size), tuple(stride))
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, size)
        return {"type": pid[1], "key": pid[2]}


def read_legacy_checkpoint(path):
    """Returns an OrderedDict name -> numpy array from a pre-zip PyTorch checkpoint.

    After the pickled state dict and the pickled storage key list, each storage is an int64
    element count followed by its raw little-endian elements.
    """
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        up = _Unpickler(f)
        state = up.load()
        keys = pickle.load(f)
        types = {}
        for _, storage, *_ in state.values():
            types[storage["key"]] = storage["type"]
        storages = {}
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            dtype = np.dtype(_DTYPES[types[key]])
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    out = collections.OrderedDict()
    for name, (_, storage, offset, size, stride) in state.items():
        flat = storages[storage["key"]]
        if len(size) == 0:
            out[name] = flat[offset:offset + 1].reshape(())
            continue
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                               strides=[s * flat.itemsize for s in stride])
        out[name] = np.array(view)
    return out


# ---------------------------------------------------------------------------------------------
# Architectures (the same tables as the descriptions in Sources/H2TBackbone/Networks/Backbones/).

WEIGHTS = {
    "mobilenet_v2": ("weights/mobilenet_v2-b0353104.pth",
                     "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
    "efficientnet_lite0": ("weights/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
}

NORMALISATION = {
    "mobilenet_v2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # TF EfficientNet-Lite preprocessing: (x - 127) / 128 on 0...255 pixels.
    "efficientnet_lite0": ((127.0 / 255, 127.0 / 255, 127.0 / 255), (128.0 / 255, 128.0 / 255, 128.0 / 255)),
}


def blocks(network):
    """(expand ratio, kernel, stride, in, out, key prefix) per inverted-residual block."""
    out = []
    if network == "mobilenet_v2":
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                    (6, 160, 3, 2), (6, 320, 1, 1)]
        cin, index = 32, 1
        for t, c, n, s in settings:
            for i in range(n):
                out.append((t, 3, s if i == 0 else 1, cin, c, f"features.{index}"))
                cin, index = c, index + 1
    else:
        settings = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
        cin, index = 32, 0
        for t, k, s, c, n in settings:
            for i in range(n):
                out.append((t, k, s if i == 0 else 1, cin, c, f"_blocks.{index}"))
                cin, index = c, index + 1
    return out


def same_padding(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class GraphBuilder:
    def __init__(self, network, state, height, width, logits_only=False):
        self.network, self.state = network, state
        self.logits_only = logits_only
        self.nodes, self.inits, self.taps = [], [], []
        self.eps = 1e-5 if network == "mobilenet_v2" else 1e-3
        self.h, self.w = height, width
        self.height, self.width = height, width
        self.counter = 0

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def tmp(self):
        self.counter += 1
        return f"t{self.counter}"

    def tap(self, name, value, shape):
        # Logits only: no intermediate is a graph output, so ORT may fuse across taps (Conv+BN+Clip)
        # as in a plain inference.
        if self.logits_only and name != "logits":
            return
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.taps.append((name, shape))

    def conv_bn(self, x, channels_in, conv_key, bn_key, kernel, stride, groups, tap_name):
        weight = self.state[conv_key + ".weight"]
        cout = weight.shape[0]
        if self.network == "mobilenet_v2":
            p = (kernel - 1) // 2
            pads = (p, p, p, p)
        else:
            top, bottom = same_padding(self.h, kernel, stride)
            left, right = same_padding(self.w, kernel, stride)
            pads = (top, left, bottom, right)
        conv = self.tmp()
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(conv_key + ".weight", weight)], [conv], kernel_shape=[kernel, kernel],
            strides=[stride, stride], pads=list(pads), group=groups))
        self.h = (self.h + pads[0] + pads[2] - kernel) // stride + 1
        self.w = (self.w + pads[1] + pads[3] - kernel) // stride + 1
        bn = self.tmp()
        s = self.state
        self.nodes.append(helper.make_node(
            "BatchNormalization",
            [conv, self.const(bn_key + ".weight", s[bn_key + ".weight"]), self.const(bn_key + ".bias", s[bn_key + ".bias"]),
             self.const(bn_key + ".running_mean", s[bn_key + ".running_mean"]),
             self.const(bn_key + ".running_var", s[bn_key + ".running_var"])],
            [bn], epsilon=self.eps))
        self.tap(tap_name, bn, [cout, self.h, self.w])
        return bn, cout

    def relu6(self, x, channels, tap_name):
        y = self.tmp()
        lo, hi = self.const(self.tmp() + "_lo", np.array(0, np.float32)), self.const(self.tmp() + "_hi", np.array(6, np.float32))
        self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        self.tap(tap_name, y, [channels, self.h, self.w])
        return y

    def build(self):
        mb = self.network == "mobilenet_v2"
        x, c = self.conv_bn("input", 3, "features.0.0" if mb else "_conv_stem", "features.0.1" if mb else "_bn0",
                            3, 2, 1, "stem.conv_bn")
        x = self.relu6(x, c, "stem.relu6")
        for i, (t, k, s, cin, cout, key) in enumerate(blocks(self.network)):
            block_in = x
            hidden = cin * t
            if mb:
                parts = (["conv.0.0", "conv.0.1"] if t != 1 else []) + \
                        (["conv.1.0", "conv.1.1", "conv.2", "conv.3"] if t != 1 else ["conv.0.0", "conv.0.1", "conv.1", "conv.2"])
            else:
                parts = (["_expand_conv", "_bn0"] if t != 1 else []) + ["_depthwise_conv", "_bn1", "_project_conv", "_bn2"]
            parts = [f"{key}.{p}" for p in parts]
            if t != 1:
                x, _ = self.conv_bn(x, cin, parts[0], parts[1], 1, 1, 1, f"block{i}.expand.conv_bn")
                x = self.relu6(x, hidden, f"block{i}.expand.relu6")
                parts = parts[2:]
            x, _ = self.conv_bn(x, hidden, parts[0], parts[1], k, s, hidden, f"block{i}.depthwise.conv_bn")
            x = self.relu6(x, hidden, f"block{i}.depthwise.relu6")
            x, _ = self.conv_bn(x, hidden, parts[2], parts[3], 1, 1, 1, f"block{i}.project.conv_bn")
            if s == 1 and cin == cout:
                y = self.tmp()
                self.nodes.append(helper.make_node("Add", [x, block_in], [y]))
                self.tap(f"block{i}.residual_add", y, [cout, self.h, self.w])
                x = y
        x, c = self.conv_bn(x, 320, "features.18.0" if mb else "_conv_head", "features.18.1" if mb else "_bn1",
                            1, 1, 1, "head.conv_bn")
        x = self.relu6(x, c, "head.relu6")
        pooled4, pooled = self.tmp(), self.tmp()
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled4]))
        self.nodes.append(helper.make_node("Flatten", [pooled4], [pooled], axis=1))
        self.tap("pool", pooled, [c])
        fc_w, fc_b = ("classifier.1.weight", "classifier.1.bias") if mb else ("_fc.weight", "_fc.bias")
        logits = self.tmp()
        self.nodes.append(helper.make_node("Gemm", [pooled, self.const(fc_w, self.state[fc_w]), self.const(fc_b, self.state[fc_b])],
                                           [logits], transB=1))
        self.tap("logits", logits, [self.state[fc_w].shape[0]])
        graph = helper.make_graph(
            self.nodes, self.network,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, self.height, self.width])],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch"] + shape) for name, shape in self.taps],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model, self.taps


def build_model(network, state, height, width, logits_only=False):
    return GraphBuilder(network, state, height, width, logits_only).build()


def session(model, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# Images: a small PNG decoder (8-bit, non-interlaced), IDX reader, bilinear resize, normalisation.

def decode_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0, f"{path}: unsupported PNG"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * channels
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 255
        else:
            for i in range(stride):
                a = cur[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 255
        out[y] = cur
        prev = cur
    image = out.reshape(height, width, channels)
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def read_idx_image(path, index):
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051
        f.seek(16 + index * rows * cols)
        pixels = np.frombuffer(f.read(rows * cols), np.uint8).reshape(rows, cols)
    return np.repeat(pixels[:, :, None], 3, axis=2)


def resize_bilinear(image, height, width):
    """Half-pixel-centre bilinear resize (no antialiasing), rounded to uint8."""
    h, w, _ = image.shape
    src = image.astype(np.float64)

    def axis(n_out, n_in):
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    top = src[y0][:, x0] * (1 - fx)[None, :, None] + src[y0][:, x1] * fx[None, :, None]
    bottom = src[y1][:, x0] * (1 - fx)[None, :, None] + src[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def normalise(images_u8, network):
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W, computed as (x / 255 - mean) / std in float32."""
    mean, std = NORMALISATION[network]
    x = images_u8.astype(np.float32) / np.float32(255)
    x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Fixture statistics (mirrored by Tests/H2TBackboneTests/NetworkReferenceTests.swift).

def splitmix(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def splitmix_array(z):
    with np.errstate(over="ignore"):
        z = z.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_indices(tap_order, count):
    return [splitmix((tap_order << 32) | j) % count for j in range(SAMPLES_PER_TAP)]


def projection_signs(p, count):
    """+1/-1 per flat index for projection p: the low bit of splitmix64((p + 1) << 40 | i)."""
    bits = splitmix_array(np.arange(count, dtype=np.uint64) | np.uint64((p + 1) << 40)) & np.uint64(1)
    return bits.astype(np.float64) * 2 - 1


def tap_statistics(values, order):
    flat = values.astype(np.float64).ravel()
    n = flat.size
    arg = int(np.argmax(np.abs(flat)))
    return {
        "max_abs": float(abs(flat[arg])),
        "argmax": arg,
        "mean": float(flat.mean()),
        "rms": float(np.sqrt((flat * flat).mean())),
        "projections": [float((projection_signs(p, n) * flat).mean()) for p in range(PROJECTIONS)],
    }, flat[sample_indices(order, n)].astype(np.float32)


# ---------------------------------------------------------------------------------------------

def cache_dir(explicit):
    return explicit or os.environ.get("H2T_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "h2t-store")


def load_state(network, cache):
    rel, digest = WEIGHTS[network]
    path = os.path.join(cache, rel)
    if not os.path.exists(path):
        sys.exit(f"{path}: missing; run tools/fetch-artifacts {network}")
    actual = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if actual != digest:
        sys.exit(f"{path}: sha256 {actual} != pinned {digest}")
    return read_legacy_checkpoint(path)


FIXTURE_IMAGES = [
    # name, source, size
    ("chelsea_64", "images/chelsea.png", 64),
    ("coffee_64", "images/coffee.png", 64),
    ("fashion_train_0_64", "train-images-idx3-ubyte.gz#0", 64),
    ("fashion_test_7_64", "t10k-images-idx3-ubyte.gz#7", 64),
    ("chelsea_224", "images/chelsea.png", 224),
    ("coffee_224", "images/coffee.png", 224),
]
# Taps stored in full (a few, small): the classifier end, and the last feature map at 64x64.
FULL_TAPS = {64: ["logits", "pool", "head.relu6"], 224: ["logits", "pool"]}
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def load_image(source, cache):
    if "#" in source:
        name, index = source.split("#")
        return read_idx_image(os.path.join(FASHION_DIR, name), int(index))
    return decode_png(os.path.join(cache, source))


def command_fixtures(args):
    cache = cache_dir(args.cache)
    os.makedirs(args.out, exist_ok=True)
    images = []
    inputs_blob = bytearray()
    for name, source, size in FIXTURE_IMAGES:
        pixels = resize_bilinear(load_image(source, cache), size, size)
        images.append({"name": name, "source": source, "height": size, "width": size,
                       "offset": len(inputs_blob), "sha256": hashlib.sha256(pixels.tobytes()).hexdigest()})
        inputs_blob += pixels.tobytes()
    blob = bytearray()
    networks = {}
    for network in ["mobilenet_v2", "efficientnet_lite0"]:
        state = load_state(network, cache)
        per_image = []
        taps_by_size = {}
        for image, (_, _, size) in zip(images, FIXTURE_IMAGES):
            if size not in taps_by_size:
                model, taps = build_model(network, state, size, size)
                taps_by_size[size] = (session(model, 2), taps)
            sess, taps = taps_by_size[size]
            pixels = np.frombuffer(bytes(inputs_blob[image["offset"]:image["offset"] + size * size * 3]),
                                   np.uint8).reshape(1, size, size, 3)
            outputs = sess.run([t for t, _ in taps], {"input": normalise(pixels, network)})
            entries, full = [], {}
            for order, ((tap, shape), value) in enumerate(zip(taps, outputs)):
                assert list(value.shape[1:]) == shape, (tap, value.shape, shape)
                stats, samples = tap_statistics(value[0], order)
                stats["samples_offset"] = len(blob)
                blob += samples.astype("<f4").tobytes()
                entries.append(stats)
            for tap in FULL_TAPS[size]:
                order = [t for t, _ in taps].index(tap)
                full[tap] = {"offset": len(blob), "count": int(outputs[order][0].size)}
                blob += outputs[order][0].astype("<f4").tobytes()
            top5 = np.argsort(-outputs[-1][0])[:5].tolist()
            per_image.append({"image": image["name"], "taps": entries, "full": full, "top5": top5})
            print(f"{network} {image['name']}: top-5 {top5}")
        networks[network] = {
            "weights_sha256": WEIGHTS[network][1],
            "normalisation": {"mean": NORMALISATION[network][0], "std": NORMALISATION[network][1]},
            "taps": {str(size): [{"name": t, "shape": s} for t, s in taps] for size, (_, taps) in taps_by_size.items()},
            "results": per_image,
        }
    manifest = {
        "format": 1,
        "generator": "tools/onnx_reference.py fixtures",
        "versions": {"numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "samples_per_tap": SAMPLES_PER_TAP,
        "projections": PROJECTIONS,
        "images": images,
        "networks": networks,
    }
    with open(os.path.join(args.out, "network_inputs.bin"), "wb") as f:
        f.write(inputs_blob)
    with open(os.path.join(args.out, "network_reference.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(args.out, "network_reference.json"), "w") as f:
        json.dump(manifest, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out}: inputs {len(inputs_blob)} B, reference {len(blob)} B")


def command_classify(args):
    cache = cache_dir(args.cache)
    state = load_state(args.network, cache)
    model, taps = build_model(args.network, state, args.size, args.size)
    pixels = resize_bilinear(decode_png(args.image), args.size, args.size)[None]
    logits = session(model, 2).run(["logits"], {"input": normalise(pixels, args.network)})[0][0]
    top = np.argsort(-logits)[:5]
    print(json.dumps({"top5": top.tolist(), "logits": [float(logits[i]) for i in top]}))


def bench_images(args):
    """The batch the benchmark runs: random normal values, or (``--idx``) the first ``--count``
    images of an IDX file preprocessed as the Swift ingest does (bilinear resize, normalisation)."""
    if not args.idx:
        rng = np.random.default_rng(0)
        return rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    with gzip.open(args.idx, "rb") if args.idx.endswith(".gz") else open(args.idx, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{args.idx}: not an IDX image file"
        n = min(count, args.count)
        pixels = np.frombuffer(f.read(n * rows * cols), np.uint8).reshape(n, rows, cols)
    resized = np.stack([resize_bilinear(np.repeat(p[:, :, None], 3, axis=2), args.size, args.size) for p in pixels])
    return normalise(resized, args.network)


def command_bench(args):
    cache = cache_dir(args.cache)
    network = args.network
    state = load_state(network, cache)
    model, taps = build_model(network, state, args.size, args.size, logits_only=args.outputs == "logits")
    sess = session(model, args.threads)
    images = bench_images(args)
    names = [t for t, _ in taps]
    batches = [images[i:i + args.batch] for i in range(0, len(images), args.batch)]

    def one_pass():
        for b in batches:
            sess.run(names, {"input": b})

    # cpu: CPU seconds of the whole process, the steadier measure of a one-thread run on a loaded
    # machine (with more threads it also counts the thread pool's spinning).
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    one_pass()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds or len(times) < 3:
        t = clock()
        one_pass()
        times.append(clock() - t)
    times.sort()
    median = times[len(times) // 2]
    result = {"engine": "onnxruntime " + ort.__version__, "network": network, "size": args.size,
              "batch": args.batch, "threads": args.threads, "taps": len(names), "runs": len(times),
              "images": len(images), "outputs": args.outputs, "isa": mlas_isa(), "clock": args.clock,
              "median_seconds": median, "images_per_second": len(images) / median}
    print(json.dumps(result) if args.json else
          f"ORT {network} {args.size}x{args.size} batch {args.batch} threads {args.threads} {args.outputs} outputs: "
          f"{len(images) / median:.1f} img/s (median of {len(times)}, ISA {result['isa']})")


def mlas_isa():
    """The widest x86 kernels ORT's MLAS dispatches to on this CPU (it picks them from CPUID, with
    no override): AVX-512F, else AVX2+FMA, else SSE."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags and "fma" in flags:
        return "avx2"
    return "sse"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fixtures")
    p.add_argument("--cache")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "H2TBackboneTests", "Fixtures"))
    p.set_defaults(run=command_fixtures)
    p = sub.add_parser("classify")
    p.add_argument("--cache")
    p.add_argument("--network", default="mobilenet_v2", choices=sorted(WEIGHTS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("image")
    p.set_defaults(run=command_classify)
    p = sub.add_parser("bench")
    p.add_argument("--cache")
    p.add_argument("--network", default="mobilenet_v2", choices=sorted(WEIGHTS))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--outputs", choices=["all", "logits"], default="all",
                   help="all: every tap is a graph output; logits: a plain inference")
    p.add_argument("--idx", help="IDX image file: bench on its first --count images, preprocessed")
    p.add_argument("--count", type=int, default=512)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=command_bench)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
