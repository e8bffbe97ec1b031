#!/usr/bin/env python3
"""Fault campaign against the built `h2t-store`: the store's promises, tried the way an unlucky
operator or a hostile input would break them, each trial checked and counted.

    tools/fault_campaign.py [--trials N] [--seed S] [--binary PATH] [--json]

Campaigns (every trial starts from a fresh store in a temporary directory):

- kill-ingest: an ingest SIGKILLed at a random moment; the store must open and `verify` clean,
  and a re-run must complete it with features bit-identical to an uninterrupted ingest
  (`export` compared byte for byte) and every example exactly once.
- kill-fit: `fit --alias prod` SIGKILLed at a random moment; `verify` clean, and no registered
  version may be left without the alias (registration and alias move are one transaction).
- flip-byte: one byte of one stored tile flipped (a random position); `verify` must fail naming
  that tile, and `export` must fail instead of returning wrong values.
- swap-tiles: two tiles of equal size swapped (a misdirected write); `verify` and `export` must
  fail.
- concurrent: two ingests of overlapping inputs into one store while a reader exports in a loop;
  both ingests and every read must succeed, and every example be stored once.

Prints a table (trials, passed, what was checked) and exits non-zero if any trial failed.
It is a reliability benchmark, not a unit test: the unit and CLI tests cover each defect once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import lmdb
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_safetensors(path: Path, n: int, prefix: str, seed: int, start: int = 0) -> None:
    """A spatial tap [n, 16, 8, 8] and a vector tap [n, 32], 3 classes, ids `prefix<i>`."""
    rng = np.random.default_rng(seed)
    conv = rng.random((n, 16, 8, 8), dtype=np.float32)
    vec = rng.random((n, 32), dtype=np.float32)
    labels = [(start + i) % 3 for i in range(n)]
    for i, label in enumerate(labels):
        conv[i, label * 4:(label + 1) * 4] += 1.0
    meta = {"example_ids": json.dumps([f"{prefix}{start + i}" for i in range(n)]),
            "labels": json.dumps([f"c{label}" for label in labels]),
            "class_names": json.dumps(["c0", "c1", "c2"])}
    header = {"__metadata__": meta,
              "conv": {"dtype": "F32", "shape": list(conv.shape), "data_offsets": [0, conv.nbytes]},
              "pre_logits": {"dtype": "F32", "shape": list(vec.shape),
                             "data_offsets": [conv.nbytes, conv.nbytes + vec.nbytes]}}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + conv.tobytes() + vec.tobytes())


class Campaign:
    def __init__(self, binary: str, trials: int, rng: random.Random, work: Path):
        self.binary, self.trials, self.rng, self.work = binary, trials, rng, work
        self.inputs = work / "inputs"
        self.inputs.mkdir()
        write_safetensors(self.inputs / "a.safetensors", 3000, "x", seed=1)
        write_safetensors(self.inputs / "b.safetensors", 3000, "x", seed=1)   # same examples as a
        write_safetensors(self.inputs / "c.safetensors", 1500, "x", seed=2, start=3000)

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"h2t-store {' '.join(args)}: {result.stderr.strip()}")
        return result

    def ingest_args(self, store: Path, source: str, split: str = "train") -> List[str]:
        return ["ingest", "--store", str(store), "--external", "campaign", "--dataset", "d", "--split", split,
                "--target-size", "512", "--segment-rows", "64", "--json", str(self.inputs / source)]

    def export(self, store: Path, feature_set: str, split: str, out: Path) -> subprocess.CompletedProcess:
        return self.run("export", "--store", str(store), "--feature-set", feature_set, "--dataset", "d",
                        "--split", split, "--out", str(out))

    def fresh(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def reference(self) -> tuple[str, bytes, float]:
        store = self.fresh("reference")
        started = time.monotonic()
        summary = json.loads(self.run(*self.ingest_args(store, "a.safetensors"), check=True).stdout)
        seconds = time.monotonic() - started
        feature_set = summary["feature_sets"][0]["id"]
        self.export(store, feature_set, "train", self.work / "reference.npy").check_returncode()
        return feature_set, (self.work / "reference.npy").read_bytes(), seconds

    # ------------------------------------------------------------------ campaigns

    def kill_ingest(self) -> Dict:
        feature_set, expected, seconds = self.reference()
        passed, killed_mid = 0, 0
        for trial in range(self.trials):
            store = self.fresh(f"kill-ingest-{trial}")
            process = subprocess.Popen([self.binary, *self.ingest_args(store, "a.safetensors")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(self.rng.uniform(0, seconds * 1.2))
            process.send_signal(signal.SIGKILL)
            process.wait()
            ok = True
            if (store / "data.mdb").exists():
                killed_mid += 1
                ok &= self.run("verify", "--store", str(store)).returncode == 0
            resumed = self.run(*self.ingest_args(store, "a.safetensors"))
            ok &= resumed.returncode == 0
            out = self.work / f"kill-ingest-{trial}.npy"
            ok &= self.export(store, feature_set, "train", out).returncode == 0
            ok &= out.exists() and out.read_bytes() == expected
            ok &= self.run("verify", "--store", str(store)).returncode == 0
            passed += ok
            shutil.rmtree(store, ignore_errors=True)
        return {"campaign": "kill-ingest", "trials": self.trials, "passed": passed,
                "checked": f"verify clean after kill ({killed_mid} killed with a store on disk); resumed export bit-identical"}

    def kill_fit(self) -> Dict:
        base = self.fresh("kill-fit-base")
        self.run(*self.ingest_args(base, "a.safetensors"), check=True)
        self.run(*self.ingest_args(base, "c.safetensors", split="test"), check=True)
        fit = ["fit", "--dataset", "d", "--train-limit", "300", "--fractions", "0.1,0.5", "--lambdas", "0.1",
               "--ridges", "1e-4", "--folds", "3", "--alias", "prod", "--json"]
        started = time.monotonic()
        self.run(*fit, "--store", str(base), check=True)
        seconds = time.monotonic() - started
        passed, registered = 0, 0
        for trial in range(self.trials):
            store = self.fresh(f"kill-fit-{trial}")
            shutil.copytree(base, store)
            process = subprocess.Popen([self.binary, *fit, "--store", str(store)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Half the kills near the end, where the head is registered and the alias moved.
            time.sleep(self.rng.uniform(0, seconds) if trial % 2 else self.rng.uniform(0.85, 1.05) * seconds)
            process.send_signal(signal.SIGKILL)
            process.wait()
            ok = self.run("verify", "--store", str(store)).returncode == 0
            heads = self.run("heads", "--store", str(store), "--task", "d", "--json")
            ok &= heads.returncode == 0
            versions = len(json.loads(heads.stdout)["heads"]) if heads.returncode == 0 else -1
            registered += versions == 2
            shown = self.run("head", "show", "d@prod", "--store", str(store), "--json")
            ok &= shown.returncode == 0 and json.loads(shown.stdout)["version"] == versions
            passed += ok
            shutil.rmtree(store, ignore_errors=True)
        return {"campaign": "kill-fit", "trials": self.trials, "passed": passed,
                "checked": f"verify clean; alias on the newest version ({registered} kills after the new version landed)"}

    def tiles_of(self, store: Path) -> List[tuple[bytes, int]]:
        env = lmdb.open(str(store), readonly=True, lock=False, max_dbs=32, subdir=True)
        try:
            db = env.open_db(b"tiles", create=False)
            with env.begin() as txn:
                return [(bytes(k), len(v)) for k, v in txn.cursor(db=db)]
        finally:
            env.close()

    def tamper(self, store: Path, change: Callable) -> None:
        env = lmdb.open(str(store), max_dbs=32, subdir=True, map_size=64 << 30)
        try:
            db = env.open_db(b"tiles", create=False)
            with env.begin(write=True) as txn:
                change(txn, db)
        finally:
            env.close()

    def flip_byte(self) -> Dict:
        base = self.fresh("flip-base")
        summary = json.loads(self.run(*self.ingest_args(base, "a.safetensors"), check=True).stdout)
        feature_set = summary["feature_sets"][0]["id"]
        tiles = self.tiles_of(base)
        passed = 0
        for trial in range(self.trials):
            store = self.fresh(f"flip-{trial}")
            shutil.copytree(base, store)
            key, size = self.rng.choice(tiles)
            position = self.rng.randrange(size)

            def flip(txn, db):
                value = bytearray(txn.get(key, db=db))
                value[position] ^= 1 << self.rng.randrange(8)
                txn.put(key, bytes(value), db=db)
            self.tamper(store, flip)
            verify = self.run("verify", "--store", str(store))
            segment, block = struct.unpack(">II", key[16:24])
            named = f"rows@{segment}/block{block}" in verify.stdout + verify.stderr
            failed_read = self.export(store, feature_set, "train", self.work / "flip.npy").returncode != 0
            passed += verify.returncode != 0 and named and failed_read
            shutil.rmtree(store, ignore_errors=True)
        return {"campaign": "flip-byte", "trials": self.trials, "passed": passed,
                "checked": "verify fails naming the tile; export fails"}

    def swap_tiles(self) -> Dict:
        base = self.fresh("swap-base")
        summary = json.loads(self.run(*self.ingest_args(base, "a.safetensors"), "--dtype", "float32",
                                      "--zstd-level", "0", check=True).stdout)
        feature_set = summary["feature_sets"][0]["id"]
        by_size: Dict[int, List[bytes]] = {}
        for key, size in self.tiles_of(base):
            by_size.setdefault(size, []).append(key)
        pairs = [keys for keys in by_size.values() if len(keys) > 1]
        passed = 0
        for trial in range(self.trials):
            store = self.fresh(f"swap-{trial}")
            shutil.copytree(base, store)
            a, b = self.rng.sample(self.rng.choice(pairs), 2)

            def swap(txn, db):
                va, vb = txn.get(a, db=db), txn.get(b, db=db)
                txn.put(a, vb, db=db)
                txn.put(b, va, db=db)
            self.tamper(store, swap)
            verify = self.run("verify", "--store", str(store))
            failed_read = self.export(store, feature_set, "train", self.work / "swap.npy").returncode != 0
            passed += verify.returncode != 0 and failed_read
            shutil.rmtree(store, ignore_errors=True)
        return {"campaign": "swap-tiles", "trials": self.trials, "passed": passed,
                "checked": "verify fails; export fails (tiles bound to their keys)"}

    def concurrent(self) -> Dict:
        passed, reads = 0, 0
        for trial in range(self.trials):
            store = self.fresh(f"concurrent-{trial}")
            first = json.loads(self.run(*self.ingest_args(store, "c.safetensors", split="warm"), check=True).stdout)
            feature_set = first["feature_sets"][0]["id"]
            writers = [subprocess.Popen([self.binary, *self.ingest_args(store, name)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True) for name in ("a.safetensors", "b.safetensors")]
            ok = True
            while any(w.poll() is None for w in writers):
                ok &= self.export(store, feature_set, "warm", self.work / "read.npy").returncode == 0
                reads += 1
            ok &= all(w.wait() == 0 for w in writers)
            listing = json.loads(self.run("ls", "--store", str(store), "--json", check=True).stdout)
            rows = listing["feature_sets"][0]["rows"]
            ok &= rows == 4500
            ok &= self.run("verify", "--store", str(store)).returncode == 0
            passed += ok
            shutil.rmtree(store, ignore_errors=True)
        return {"campaign": "concurrent", "trials": self.trials, "passed": passed,
                "checked": f"two ingests of the same 3,000 examples both exit 0, each stored once; {reads} reads beside them all succeed"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per campaign (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--binary", default=str(ROOT / ".build/release/h2t-store"))
    parser.add_argument("--only", action="append", help="run only these campaigns (repeat)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    if not os.access(args.binary, os.X_OK):
        parser.error(f"no h2t-store binary at {args.binary}; build it with `swift build -c release`")
    results = []
    with tempfile.TemporaryDirectory(prefix="h2t-campaign-") as work:
        campaign = Campaign(args.binary, args.trials, random.Random(args.seed), Path(work))
        names = {"kill-ingest": campaign.kill_ingest, "kill-fit": campaign.kill_fit, "flip-byte": campaign.flip_byte,
                 "swap-tiles": campaign.swap_tiles, "concurrent": campaign.concurrent}
        for name in args.only or names:
            if name not in names:
                parser.error(f"unknown campaign '{name}' (known: {', '.join(names)})")
            results.append(names[name]())
            if not args.json:
                r = results[-1]
                print(f"{r['campaign']:<12} {r['passed']:>4}/{r['trials']:<4} {r['checked']}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(r["passed"] == r["trials"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
