"""Shared fixtures: a small store written by the real CLI (``$H2T_STORE_BIN``, default the release
build that ``tools/test`` makes first), with two heads fitted on it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import sys

import numpy as np
import pytest

# The package in this tree, installed or not (tools/setup installs it; a stale install elsewhere
# must not shadow the code under test).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from h2t_store._safetensors import write_safetensors  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
BINARY = os.environ.get("H2T_STORE_BIN", str(REPO / ".build" / "release" / "h2t-store"))
CLASSES = ["cat", "dog", "bird"]
#: Raw taps of the toy backbone: two spatial maps and a vector (149 pooled columns at F_T 64).
TAPS = {"stem": (4, 8, 8), "block": (32, 4, 4), "head": (53,)}


def run_cli(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"h2t-store binary not found at {BINARY}: build it (swift build -c release) or set H2T_STORE_BIN")
    done = subprocess.run([BINARY, *arguments], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"h2t-store {' '.join(arguments)} failed: {done.stderr}")
    return done


def cli_json(*arguments: str) -> Any:
    return json.loads(run_cli(*arguments, "--json").stdout)


def activations(n: int, seed: int) -> Dict[str, np.ndarray]:
    """Activation-like values with a class signal in every tap (labels = index % 3)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    out = {}
    for name, shape in TAPS.items():
        x = rng.lognormal(mean=-1, sigma=1.5, size=(n, *shape)).astype(np.float32)
        x[rng.random(x.shape) < 0.15] = 0
        signal = np.zeros(x.shape, np.float32)
        flat = signal.reshape(n, -1)
        for c in range(3):
            flat[labels == c, c::7] = 1.5
        out[name] = x + signal
    return out


def write_raw(path: Path, acts: Dict[str, np.ndarray], names: List[str], first: int = 0) -> None:
    """A safetensors file of raw activations; example ``first + i`` has class ``(first + i) % 3``."""
    labels = [CLASSES[(first + i) % 3] for i in range(len(names))]
    write_safetensors(str(path), acts, {"example_ids": json.dumps(names), "labels": json.dumps(labels),
                                        "class_names": json.dumps(CLASSES)})


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A store: train (3 files → interleaved segments of at most 16 rows) and test splits, column
    blocks of 64 and frames of 3 (a partial last frame), two heads (unit and raw input rules)."""
    root = tmp_path_factory.mktemp("toy")
    store = str(root / "store")
    train, test = activations(72, 1), activations(30, 2)
    names = [f"ex-{i}" for i in range(72)]
    parts = [(slice(0, 30), "a"), (slice(30, 50), "b"), (slice(50, 72), "c")]
    common = ["--external", "toy-net", "--target-size", "64", "--target-size", "16", "--column-block", "64",
              "--frame-width", "3", "--segment-rows", "16", "--store", store]
    for part, tag in parts:
        path = root / f"train-{tag}.safetensors"
        write_raw(path, {k: v[part] for k, v in train.items()}, names[part], part.start)
        summary = cli_json("ingest", *common, "--dataset", "toy", "--split", "train", str(path))
    test_path = root / "test.safetensors"
    write_raw(test_path, test, [f"test-{i}" for i in range(30)])
    cli_json("ingest", *common, "--dataset", "toy", "--split", "test", str(test_path))
    featuresets = {fs["target_size"]: fs["id"] for fs in summary["feature_sets"]}
    fit = ["fit", "--dataset", "toy", "--feature-set", featuresets[64], "--fractions", "0.5", "--lambdas", "0.03",
           "--ridges", "0.001", "--folds", "2", "--probe-tap", "head", "--store", store, "--quiet"]
    run_cli(*fit, "--task", "toy", "--alias", "prod")
    run_cli(*fit, "--task", "toy", "--kept-scaling", "training-constant")
    run_cli(*fit, "--task", "other")
    run_cli("tag", "toy@v2", "stage=raw", "--store", store)
    return {"store": store, "featuresets": featuresets, "train": train, "names": names, "root": root}
