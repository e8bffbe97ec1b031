#!/usr/bin/env python3
"""Checks that h2t-engines computes MobileNetV2: its seeded weights, input and logits (written
with ``h2t-engines --dump FILE``) against ONNX Runtime running the project's own reference graph
(``tools/onnx_reference.py``'s ``build_model``, torchvision layout, batch norm kept as a node).

The harness folds batch norm into each convolution's bias, so the state dict given to the
reference has identity batch norms (running mean 0, variance 1, scale sqrt(1 + eps)) whose shift
is that bias. Prints max |logits - ORT| / max |ORT| per file; exits 1 if any exceeds --tolerance.

    tools/engines/check_engines.py [--tolerance 1e-3] DUMP [DUMP ...]
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import onnx_reference  # noqa: E402


def read_dump(path):
    data = open(path, "rb").read()
    pos = 0

    def ints(n):
        nonlocal pos
        out = np.frombuffer(data, "<i4", n, pos)
        pos += 4 * n
        return [int(v) for v in out]

    def floats(n):
        nonlocal pos
        out = np.frombuffer(data, "<f4", n, pos)
        pos += 4 * n
        return out

    size, batch, count = ints(3)
    layers = []
    for _ in range(count):
        cout, cin, k, stride, groups = ints(5)
        weight = floats(cout * (cin // groups) * k * k).reshape(cout, cin // groups, k, k)
        layers.append((weight, floats(cout)))
    images = floats(batch * 3 * size * size).reshape(batch, 3, size, size)
    logits = floats(batch * 1000).reshape(batch, 1000)
    if pos != len(data):
        raise SystemExit(f"{path}: {len(data) - pos} trailing bytes; not an h2t-engines dump")
    return size, layers, images, logits


def state_dict(layers):
    """The checkpoint keys onnx_reference.build_model reads, in the harness's layer order."""
    state, it = {}, iter(layers)

    def conv_bn(conv_key, bn_key):
        weight, bias = next(it)
        state[conv_key + ".weight"] = weight
        channels = weight.shape[0]
        state[bn_key + ".weight"] = np.full(channels, np.sqrt(1 + 1e-5), np.float32)
        state[bn_key + ".bias"] = bias
        state[bn_key + ".running_mean"] = np.zeros(channels, np.float32)
        state[bn_key + ".running_var"] = np.ones(channels, np.float32)

    conv_bn("features.0.0", "features.0.1")
    for t, _, _, _, _, key in onnx_reference.blocks("mobilenet_v2"):
        if t != 1:
            conv_bn(f"{key}.conv.0.0", f"{key}.conv.0.1")
            conv_bn(f"{key}.conv.1.0", f"{key}.conv.1.1")
            conv_bn(f"{key}.conv.2", f"{key}.conv.3")
        else:
            conv_bn(f"{key}.conv.0.0", f"{key}.conv.0.1")
            conv_bn(f"{key}.conv.1", f"{key}.conv.2")
    conv_bn("features.18.0", "features.18.1")
    weight, bias = next(it)
    state["classifier.1.weight"] = weight.reshape(weight.shape[0], weight.shape[1])
    state["classifier.1.bias"] = bias
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("dumps", nargs="+")
    args = parser.parse_args()
    worst = 0.0
    for path in args.dumps:
        size, layers, images, logits = read_dump(path)
        model, _ = onnx_reference.build_model("mobilenet_v2", state_dict(layers), size, size, logits_only=True)
        reference = onnx_reference.session(model, 1).run(["logits"], {"input": images})[0]
        error = float(np.abs(logits - reference).max() / np.abs(reference).max())
        worst = max(worst, error)
        print(json.dumps({"kind": "check", "dump": os.path.basename(path), "size": size,
                          "max_abs_ref": float(np.abs(reference).max()),
                          # How much the logits depend on the image (a collapsed network would pass
                          # the comparison trivially): mean over classes of the std across the batch.
                          "signal": float(reference.std(axis=0).mean() / np.abs(reference).max()),
                          "relative_error": error,
                          "tolerance": args.tolerance, "ok": error <= args.tolerance}))
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
