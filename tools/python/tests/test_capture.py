"""capture: the stored features equal pooling the hooked outputs in torch (within bfloat16
rounding), the feature sets are exactly those an ingest of the raw activations creates, a killed
capture resumes, and bad outputs are refused before anything is written."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import BINARY, run_cli  # noqa: E402
from h2t_store import CaptureError, Store, example_id  # noqa: E402
from h2t_store._safetensors import write_safetensors  # noqa: E402
from h2t_store.capture import Codec, capture, state_dict_sha256  # noqa: E402

BF16 = 2 ** -8


def batches(n: int, size: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % 2
    ids = [f"img-{i}" for i in range(n)]
    return [(x[i:i + batch], y[i:i + batch], ids[i:i + batch]) for i in range(0, n, batch)]


def raw_taps(model, x):
    """Every leaf module's outputs, in call order (a module called twice gives ``name#2``), as
    per-example channel-first arrays: token sequences split into class token and patch grid."""
    taps, calls, handles = [], {}, []
    for name, module in model.named_modules():
        if any(True for _ in module.children()):
            continue
        def hook(m, i, out, name=name):
            calls[name] = calls.get(name, 0) + 1
            tap = name if calls[name] == 1 else f"{name}#{calls[name]}"
            a = out.detach().float().numpy().copy()  # in-place modules (ReLU) change it later
            if a.ndim == 3:
                n, t, d = a.shape
                g = math.isqrt(t - 1)
                if g * g == t - 1:
                    taps.append((tap + ":cls", a[:, 0]))
                    taps.append((tap, a[:, 1:].reshape(n, g, g, d).transpose(0, 3, 1, 2)))
                    return
                g = math.isqrt(t)
                taps.append((tap, a.reshape(n, g, g, d).transpose(0, 3, 1, 2)))
                return
            taps.append((tap, a))
        handles.append(module.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return taps


def numpy_pool(a: np.ndarray, target: int) -> np.ndarray:
    """Head2Toe's rule, written from docs/architecture.md independently of the package."""
    n = len(a)
    if a.ndim == 2:
        return a
    c, h, w = a.shape[1:]
    p = None
    if c < target:
        k = int(math.sqrt(target // c))
        p = w // k if k > 0 else 0
    if not p:
        return a.mean(axis=(2, 3), dtype=np.float64).astype(np.float32)
    oh, ow = (h - p) // p + 1, (w - p) // p + 1
    cut = a[:, :, :oh * p, :ow * p].reshape(n, c, oh, p, ow, p)
    return cut.mean(axis=(3, 5), dtype=np.float64).astype(np.float32).reshape(n, -1)


def check_capture(model, data, tmp_path, sizes, name):
    store = str(tmp_path / "store")
    summary = capture(model, data, store=store, dataset="imgs", split="train", target_sizes=sizes, name=name,
                      class_names=["a", "b"], chunk_size=5, binary=BINARY, progress=False)
    x = torch.cat([b[0] for b in data])
    taps = raw_taps(model, x)
    assert [t for t, _ in summary.taps] == [t for t, _ in taps]
    with Store(store) as s:
        for size in sizes:
            fs = s.feature_set(summary.featuresets[size])
            assert [t["sourceShape"] for t in fs.taps] == [list(a.shape[1:]) for _, a in taps]
            stored, labels = s.read_split(fs, "imgs", "train")
            expected = np.concatenate([numpy_pool(a, size).reshape(len(x), -1) for _, a in taps], axis=1)
            assert stored.shape == expected.shape
            np.testing.assert_allclose(stored, expected, rtol=BF16, atol=1e-6)
            np.testing.assert_array_equal(labels, np.arange(len(x)) % 2)

    # The Swift pooling of the same raw activations: same backbone, same feature sets, same features.
    raw = tmp_path / "raw.safetensors"
    write_safetensors(str(raw), {t: np.ascontiguousarray(a) for t, a in taps},
                      {"example_ids": json.dumps([i for b in data for i in b[2]]),
                       "labels": json.dumps([int(v) for b in data for v in b[1]]), "class_names": json.dumps(["a", "b"])})
    swift_store = str(tmp_path / "swift")
    arguments = ["ingest", "--external", name, "--weights-sha256", state_dict_sha256(model), "--dataset", "imgs",
                 "--split", "train", *[a for s in sizes for a in ("--target-size", str(s))], *Codec().arguments(),
                 "--store", swift_store, "--json", str(raw)]
    result = json.loads(run_cli(*arguments).stdout)
    assert result["backbone"] == summary.backbone
    assert {fs["target_size"]: fs["id"] for fs in result["feature_sets"]} == summary.featuresets
    with Store(store) as a, Store(swift_store) as b:
        for size in sizes:
            ours, _ = a.read_split(summary.featuresets[size], "imgs", "train")
            theirs, _ = b.read_split(summary.featuresets[size], "imgs", "train")
            # Summation order differs (torch versus the Swift kernels): at most one bfloat16 step.
            np.testing.assert_allclose(ours, theirs, rtol=2 * BF16, atol=1e-6)
    run_cli("verify", "--store", store)
    return summary


def test_resnet18_capture_equals_torch_and_swift_pooling(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    summary = check_capture(model, batches(12, 32, 4, seed=1), tmp_path, [64, 1024], "resnet18-random")
    names = [t for t, _ in summary.taps]
    assert "layer1.0.relu#2" in names and names[-1] == "fc"
    assert summary.examples_computed == 12 and summary.examples_skipped == 0


def test_vit_capture_pools_the_patch_grid_and_keeps_the_class_token(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=5)
    summary = check_capture(model, batches(6, 64, 3, seed=2), tmp_path, [1024], "vit-tiny-random")
    shapes = dict(summary.taps)
    assert shapes["blocks.0.norm1:cls"] == [192] and shapes["blocks.0.norm1"] == [192, 4, 4]


def test_capture_skips_what_is_stored_and_refuses_bad_outputs(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(16, 2))
    data = batches(10, 12, 4, seed=3)
    store = str(tmp_path / "store")
    first = capture(model, data, store=store, dataset="d", split="train", target_sizes=[32], class_names=["a", "b"],
                    binary=BINARY, progress=False)
    again = capture(model, data, store=store, dataset="d", split="train", target_sizes=[32], class_names=["a", "b"],
                    binary=BINARY, progress=False)
    assert (again.examples_computed, again.examples_skipped) == (4, 6)  # the first batch always runs
    assert again.featuresets == first.featuresets
    with Store(store) as s:
        assert len(s.split("d", "train")) == 10

    for value in ("nan", "-inf", "inf"):
        class Bad(torch.nn.Module):
            def forward(self, x):
                out = x.clone()
                out[1, 0, 0, 0] = float(value)
                return out
        with pytest.raises(CaptureError, match="NaN or Inf in tap 'bad' for example 'img-1'"):
            capture(torch.nn.Sequential(OrderedDict(conv=torch.nn.Conv2d(3, 3, 1), bad=Bad())),
                    data, store=str(tmp_path / value), dataset="d", split="train", class_names=["a", "b"],
                    binary=BINARY, progress=False)
        assert not os.path.exists(tmp_path / value)

    class Pair(torch.nn.Module):
        def forward(self, x):
            return x, x
    with pytest.raises(CaptureError, match="module 'pair' returned tuple, not a tensor"):
        capture(torch.nn.Sequential(OrderedDict(pair=Pair())), data,
                store=str(tmp_path / "pair"), dataset="d", split="train", class_names=["a", "b"], binary=BINARY, progress=False)
    assert not os.path.exists(tmp_path / "pair")
    with pytest.raises(Exception, match="has no module 'nope'"):
        capture(model, data, store=store, dataset="d", split="train", layers=["nope"], class_names=["a", "b"], binary=BINARY)
    with pytest.raises(CaptureError, match="give class_names"):
        capture(model, data, store=store, dataset="d", split="train", binary=BINARY, progress=False)

    # A model whose taps change after the first batch: another module in the middle or one more
    # at the end (caught by the hooks pooling into place), or one fewer (caught after the pass).
    for change in ("middle", "end", "fewer"):
        class Moody(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b, self.c = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 4, 1)
                self.calls = 0

            def forward(self, x):
                self.calls += 1
                x = self.a(x)
                if self.calls > 1 and change == "middle":
                    x = self.c(x)
                if self.calls > 1 and change == "fewer":
                    return x
                x = self.b(x)
                return self.c(x) if self.calls > 1 and change == "end" else x
        with pytest.raises(CaptureError, match="hooked taps changed between batches"):
            capture(Moody(), data, store=str(tmp_path / change), dataset="d", split="train", class_names=["a", "b"],
                    chunk_size=100, binary=BINARY, progress=False)
        assert not os.path.exists(tmp_path / change)


def test_a_store_being_created_by_the_cli_is_not_read_before_its_first_commit(tmp_path):
    """The CLI storing the first chunk creates the store's file before its first commit; batches
    that follow meanwhile must not open it (it is not a store yet). A stand-in for the CLI leaves
    an empty data.mdb in place for a second before running the real one."""
    slow = tmp_path / "slow-h2t-store"
    slow.write_text("#!/bin/sh\n"
                    "for a in \"$@\"; do case \"$prev\" in --store) mkdir -p \"$a\" && touch \"$a/data.mdb\";; esac; prev=\"$a\"; done\n"
                    f"sleep 1\nexec {BINARY} \"$@\"\n")
    slow.chmod(0o755)
    def loader():  # the next batch comes while the first chunk's CLI is still sleeping
        for batch in batches(24, 12, 4, seed=8):
            time.sleep(0.2)
            yield batch
    store = str(tmp_path / "store")
    done = capture(small_model(), loader(), store=store, dataset="d", split="train", target_sizes=[32], class_names=["a", "b"],
                   chunk_size=8, binary=str(slow), progress=False)
    assert (done.examples_computed, done.examples_skipped) == (24, 0)
    with Store(store) as s:
        assert len(s.split("d", "train")) == 24


KILLED = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {package!r}); sys.path.insert(0, {tests!r})
    from h2t_store.capture import capture
    from test_capture import batches, small_model
    data = batches(40, 12, 4, seed=5)
    def loader():
        for i, batch in enumerate(data):
            if i == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch
    capture(small_model(), loader(), store=sys.argv[1], dataset="d", split="train", target_sizes=[32, 256],
            class_names=["a", "b"], chunk_size=4, binary={binary!r}, progress=False)
""")


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))


def _capture_scratch():
    return {os.path.join(d, e) for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)
            for e in os.listdir(d) if e.startswith("h2t-capture-")}


def test_killed_capture_resumes(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "killed.py"
    script.write_text(KILLED.format(package=os.path.dirname(here), tests=here, binary=BINARY))
    store = str(tmp_path / "store")
    scratch_before = _capture_scratch()
    done = subprocess.run([sys.executable, str(script), store, "6"], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    # The chunk in flight lived in an anonymous memory file: nothing is left in /dev/shm or /tmp.
    assert _capture_scratch() == scratch_before
    data = batches(40, 12, 4, seed=5)
    resumed = capture(small_model(), data, store=store, dataset="d", split="train", target_sizes=[32, 256],
                      class_names=["a", "b"], chunk_size=4, binary=BINARY, progress=False)
    assert resumed.examples_skipped >= 12  # at least the chunks stored before the kill
    clean = str(tmp_path / "clean")
    capture(small_model(), data, store=clean, dataset="d", split="train", target_sizes=[32, 256],
            class_names=["a", "b"], chunk_size=16, binary=BINARY, progress=False)
    ids = [example_id(i) for b in data for i in b[2]]
    with Store(store) as a, Store(clean) as b:
        split = a.split("d", "train")
        assert len(split) == 40 and sorted(split.hex_ids()) == sorted(ids)
        for fs in resumed.featuresets.values():
            assert a.feature_set(fs).rows == 40
            np.testing.assert_array_equal(a.read_examples(fs, ids), b.read_examples(fs, ids))
    run_cli("verify", "--store", store)
