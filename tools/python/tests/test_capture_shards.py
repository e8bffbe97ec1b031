"""capture(shard=K/N): N captures of one loader, each into a sealed shard store, merge into what a
single capture of all the inputs stores (export compared bit for bit); a sealed shard re-run does
nothing; bad shard specs and loaders are refused before anything is written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from conftest import BINARY, cli_json, run_cli  # noqa: E402
from h2t_store import CaptureError, Store  # noqa: E402
from h2t_store.capture import capture, parse_shard, shard_range  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

SIZES = [64, 512]


def loader(n: int = 12, batch: int = 2) -> DataLoader:
    # Shard boundaries (0, 4, 8, 12 of 3 shards; 0, 6, 12 of 2) fall on batch boundaries: torch's
    # batched kernels may round an example differently in a batch of another size.
    g = torch.Generator().manual_seed(7)
    return DataLoader(TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 2), batch_size=batch)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


def run(store: Path, shard=None):
    return capture(model(), loader(), store=str(store), dataset="imgs", split="train", target_sizes=SIZES,
                   class_names=["a", "b"], chunk_size=2, binary=BINARY, progress=False, shard=shard)


def exports(store: Path, featuresets, tmp: Path):
    out = {}
    for size, fs in featuresets.items():
        path = tmp / f"{store.name}-{size}.npy"
        run_cli("export", "--store", str(store), "--feature-set", fs, "--dataset", "imgs", "--split", "train", "--out", str(path))
        out[size] = path.read_bytes()
    with Store(str(store)) as s:
        split = s.split("imgs", "train")
        out["ids"], out["labels"] = split.hex_ids(), list(map(int, split.labels))
    return out


def test_sharded_captures_merge_into_a_single_capture(tmp_path, monkeypatch, capsys):
    single = run(tmp_path / "single")
    shards = []
    for k in range(3):
        if k == 2:
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
            spec = "auto/3"
        else:
            spec = f"{k}/3"
        summary = run(tmp_path / f"shard-{k}", shard=spec)
        assert summary.featuresets == single.featuresets and summary.backbone == single.backbone
        assert summary.shard["state"] == "started" and summary.shard["sealed"]
        assert summary.examples_computed == len(shard_range(12, k, 3)) == summary.shard["items"]
        shards.append(summary)
    assert len({s.shard["plan"] for s in shards}) == 1  # one plan for the run's N captures

    # Re-running a sealed shard does nothing and says so.
    capsys.readouterr()
    again = run(tmp_path / "shard-1", shard="1/3")
    assert again.shard["state"] == "already_sealed" and again.examples_computed == 0
    assert "already sealed: nothing to do" in capsys.readouterr().err
    with Store(str(tmp_path / "shard-1")) as s:
        assert len(s.split("imgs", "train")) == len(shard_range(12, 1, 3))

    run_cli("merge", "--into", str(tmp_path / "merged"), *[str(tmp_path / f"shard-{k}") for k in (2, 0, 1)])
    run_cli("verify", "--store", str(tmp_path / "merged"))
    assert exports(tmp_path / "merged", single.featuresets, tmp_path) == exports(tmp_path / "single", single.featuresets, tmp_path)


def test_interrupted_shard_is_refused_by_merge_then_resumes_and_seals(tmp_path, monkeypatch):
    # Interrupted just before the sealing part (every row stored, no seal): merge refuses the
    # shard; the same capture again skips what is stored and seals the shard with an empty part.
    module = sys.modules["h2t_store.capture"]
    calls = {"n": 0}
    real = module.write_chunk

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # probe, three parts of 2 rows, then the sealing part
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "write_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "shard-0", shard="0/2")
    monkeypatch.setattr(module, "write_chunk", real)
    run(tmp_path / "shard-1", shard="1/2")
    refused = run_cli("merge", "--into", str(tmp_path / "m"), str(tmp_path / "shard-0"), str(tmp_path / "shard-1"), check=False)
    assert refused.returncode != 0 and "not sealed" in refused.stderr, refused.stderr
    resumed = run(tmp_path / "shard-0", shard="0/2")
    assert resumed.shard["state"] == "resumed" and resumed.shard["sealed"] and resumed.examples_skipped == 4
    assert resumed.shard["items"] == len(shard_range(12, 0, 2))


@pytest.mark.parametrize("spec, message", [("3/2", "K must be in 0...1"), ("0/0", "N must be at least 1"),
                                           ("x/2", "K must be a number"), ("1-2", "not K/N"), ("auto/2", "SLURM_ARRAY_TASK_ID")])
def test_bad_shard_specs_are_refused(tmp_path, monkeypatch, spec, message):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    with pytest.raises(ValueError, match=message):
        run(tmp_path / "store", shard=spec)
    assert not (tmp_path / "store").exists()


def test_shards_need_an_ordered_sized_loader(tmp_path):
    data = loader()
    for bad, message in [(list(data), "needs a torch DataLoader"),
                         (DataLoader(data.dataset, batch_size=3, shuffle=True), "in order"),
                         (DataLoader(data.dataset, batch_size=3, drop_last=True), "drop_last")]:
        with pytest.raises(CaptureError, match=message):
            capture(model(), bad, store=str(tmp_path / "store"), dataset="imgs", split="train", target_sizes=SIZES,
                    class_names=["a", "b"], binary=BINARY, progress=False, shard="0/2")
        assert not (tmp_path / "store").exists()
    assert parse_shard((1, 4)) == (1, 4) and parse_shard("auto/4", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4"}) == (1, 4)


def test_cli_refuses_inconsistent_part_options(tmp_path):
    store = str(tmp_path / "store")
    for arguments, message in [(["--shard-total", "10", "--shard-plan", "x"], "go with --shard and --external"),
                               (["--shard", "0/2", "--shard-open"], "go together"),
                               (["--shard", "0/2", "--shard-total", "0", "--shard-plan", "x"], "--shard-total")]:
        done = run_cli("ingest", "--external", "m", "--dataset", "d", "--store", store, *arguments, str(tmp_path / "none.safetensors"),
                       check=False)
        assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "store" / "data.mdb").exists()


def test_more_shards_than_inputs_gives_empty_sealed_shards_that_merge(tmp_path):
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    data = DataLoader(TensorDataset(torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 0])), batch_size=1)

    def go(store, shard=None):
        return capture(small, data, store=str(store), dataset="imgs", split="train", target_sizes=[16],
                       class_names=["a", "b"], binary=BINARY, progress=False, shard=shard)

    single = go(tmp_path / "single")
    empty = go(tmp_path / "shard-0", "0/4")  # 3 inputs in 4 shards: shard 0 takes none
    assert empty.shard["sealed"] and empty.shard["items"] == 0 and empty.examples_computed == 0
    for k in range(1, 4):
        go(tmp_path / f"shard-{k}", f"{k}/4")
    run_cli("merge", "--into", str(tmp_path / "merged"), *[str(tmp_path / f"shard-{k}") for k in range(4)])
    assert exports(tmp_path / "merged", single.featuresets, tmp_path) == exports(tmp_path / "single", single.featuresets, tmp_path)
