"""Benchmark of the Python package against the Swift code on the same data, in the same run.

1. Reads: whole rows and 1% of the columns of a split, Python (``Store.read_split``, the store
   opened once) versus the Swift reader in process (``h2t-bench read``: ``FeatureStore.read``)
   and ``h2t-store export`` (process start and .npy writing included).
2. A PyTorch ``DataLoader`` epoch over the same split with several workers: each worker decoding
   on its share of the cores (the default) against each on every core.
3. Capture: ``capture`` (every leaf module hooked, pooled, streamed to ``h2t-store ingest``) versus
   the same model's plain forward pass over the same batches, at 64x64 and 224x224.

Prints tables of medians over ``--reps`` repetitions with the machine, its load and the date.
Run through ``tools/bench-python.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from h2t_store import Store  # noqa: E402
from h2t_store._safetensors import write_safetensors  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    avx512 = 0
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        avx512 = sum(1 for line in text.splitlines() if line.startswith("flags") and "avx512" in line)
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return (f"{cpu}; {os.cpu_count()} cores; avx512 flags on {avx512} cores; load average "
            f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"Python {platform.python_version()}")


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_times(a, b, reps: int):
    """Medians of ``a`` and ``b`` timed alternately ``reps`` times each."""
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def run(binary: str, *arguments: str) -> None:
    done = subprocess.run([binary, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"h2t-store {arguments[0]} failed: {done.stderr.strip()}")


def make_store(args, binary: str, scratch: Path):
    """The reads' store (``--examples`` x ``--width`` log-normal values, 30% zeros, split
    bench/train), made once per run; returns its path and feature set id."""
    n, d = args.examples, args.width
    store = scratch / "store"
    if store.exists():
        with Store(store) as s:
            return store, s.feature_sets()[0].id
    rng = np.random.default_rng(0)
    per_file = max(1, 2_000_000 // d) * 32
    for first in range(0, n, per_file):
        count = min(per_file, n - first)
        values = rng.lognormal(-1, 1.5, size=(count, d)).astype(np.float32)
        values[rng.random(values.shape) < 0.3] = 0
        path = scratch / "acts.safetensors"
        write_safetensors(str(path), {"features": values}, {"example_ids": json.dumps([f"e{first + i}" for i in range(count)])})
        run(binary, "ingest", "--external", "bench", "--dataset", "bench", "--split", "train", "--target-size", "8192",
            "--store", str(store), "--quiet", str(path))
        path.unlink()
    with Store(store) as s:
        return store, s.feature_sets()[0].id


def bench_reads(args, binary: str, scratch: Path) -> None:
    n, d = args.examples, args.width
    print(f"\n## Reads: {n} examples x {d} features (one pass-through tap), bfloat16 + zstd, default layout", flush=True)
    store, fs = make_store(args, binary, scratch)
    rng = np.random.default_rng(1)
    columns = np.sort(rng.choice(d, size=max(1, d // 100), replace=False)).tolist()
    out = scratch / "x.npy"

    def swift_in_process(cols):
        extra = ["--columns", ",".join(map(str, cols))] if cols else []
        done = subprocess.run([args.bench_binary, "read", "--store", str(store), "--feature-set", fs, "--dataset", "bench",
                               "--split", "train", "--reps", str(args.reps), *extra], capture_output=True, text=True)
        if done.returncode != 0 or not done.stdout.strip().startswith("{"):
            raise SystemExit(f"h2t-bench read failed: {done.stderr.strip() or done.stdout.strip()}")
        return json.loads(done.stdout)["seconds"]

    def swift_export(cols):
        extra = ["--columns", *map(str, cols)] if cols else []
        return lambda: run(binary, "export", "--feature-set", fs, "--dataset", "bench", "--split", "train",
                           "--out", str(out), "--store", str(store), *extra)

    opened = Store(store)  # opened once, as the Swift reader's store is

    def python(cols):
        return lambda: opened.read_split(fs, "bench", "train", cols)

    rows = []
    for label, cols in [("whole rows", None), (f"1% of columns ({len(columns)})", columns)]:
        t_swift = swift_in_process(cols)
        t_export = median_time(swift_export(cols), args.reps)
        t_py = median_time(python(cols), args.reps)
        values = n * (d if cols is None else len(cols))
        rows.append((label, t_swift, t_export, t_py, values))
    print("| read | Swift reader s (in process) | `h2t-store export` s | Python s | Swift Mvalues/s | Python Mvalues/s | Python / Swift throughput |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, t_swift, t_export, t_py, values in rows:
        print(f"| {label} | {t_swift:.3f} | {t_export:.3f} | {t_py:.3f} | {values / t_swift / 1e6:.1f} | "
              f"{values / t_py / 1e6:.1f} | {t_swift / t_py:.2f} |")


def bench_loader(args, binary: str, scratch: Path) -> None:
    """An epoch of ``FeatureDataset`` through a ``DataLoader`` whose workers read at once: each
    worker decoding on its share of the cores (the default) against each on every core this
    process may use (``H2T_THREADS`` set to that count: the default before this change)."""
    import torch
    from torch.utils.data import DataLoader

    from h2t_store._cpus import usable_cores
    from h2t_store.datasets import FeatureDataset

    store, fs = make_store(args, binary, scratch)
    cores = usable_cores()
    workers = args.loader_workers or cores
    print(f"\n## DataLoader: an epoch of {args.examples} x {args.width}, batches of {args.loader_batch}, shuffled, "
          f"{workers} workers on {cores} cores", flush=True)
    dataset = FeatureDataset(str(store), fs, "bench", "train")

    def epoch(threads):
        def run_epoch():
            saved = os.environ.pop("H2T_THREADS", None)
            if threads is not None:
                os.environ["H2T_THREADS"] = str(threads)
            try:
                loader = DataLoader(dataset, batch_size=args.loader_batch, shuffle=True, num_workers=workers,
                                    generator=torch.Generator().manual_seed(0))
                assert sum(len(y) for _, y in loader) == args.examples
            finally:
                os.environ.pop("H2T_THREADS", None)
                if saved is not None:
                    os.environ["H2T_THREADS"] = saved
        return run_epoch

    shared, every = paired_median_times(epoch(None), epoch(cores), args.reps)
    print("| decode threads per worker | epoch s | examples/s |")
    print("| --- | --- | --- |")
    print(f"| {max(1, cores // workers)} (default: the cores shared among the workers) | {shared:.3f} | {args.examples / shared:.0f} |")
    print(f"| {cores} (every core in every worker) | {every:.3f} | {args.examples / every:.0f} |")
    print(f"| ratio (every / shared) | {every / shared:.2f} | |")


def bench_capture(args, binary: str, scratch: Path) -> None:
    import torch
    import torchvision
    from h2t_store.capture import capture

    from h2t_store.store import default_threads
    threads = default_threads()
    torch.set_num_threads(threads)
    print(f"\n## Capture: torchvision resnet18 (random weights), all 60 leaf modules hooked, CPU, torch threads {threads} "
          f"(H2T_THREADS={os.environ.get('H2T_THREADS', 'unset')}; the ingest subprocess follows the same policy), "
          f"chunk_size {args.capture_chunk_size}", flush=True)
    print("| input | F_T | images | forward s | capture s | overhead | capture images/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size, n in [(64, args.capture_images_64), (224, args.capture_images_224)]:
        if n <= 0:
            continue
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.randn(n, 3, size, size)
        batches = [(x[i:i + 16], torch.zeros(len(x[i:i + 16]), dtype=torch.long), [f"i{size}-{j}" for j in range(i, min(i + 16, n))])
                   for i in range(0, n, 16)]

        def forward():
            with torch.inference_mode():
                for b in batches:
                    model(b[0])

        for target in args.capture_target_sizes:
            def captured():
                store = scratch / f"capture-{size}"
                shutil.rmtree(store, ignore_errors=True)
                capture(model, batches, store=str(store), dataset="c", split="train", target_sizes=[target],
                        class_names=["x"], chunk_size=args.capture_chunk_size, binary=binary, progress=False)

            forward()  # warm-up
            # Alternated, so that a change in the machine's load hits both sides alike.
            t_forward, t_capture = paired_median_times(forward, captured, args.reps)
            label = f"{target} (default)" if target == 8192 else str(target)
            print(f"| {size}x{size} | {label} | {n} | {t_forward:.2f} | {t_capture:.2f} | {(t_capture / t_forward - 1) * 100:+.0f}% | "
                  f"{n / t_capture:.1f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("section", nargs="?", choices=["reads", "loader", "capture", "all"], default="all")
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=8_192)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--capture-images-64", type=int, default=1024)
    parser.add_argument("--capture-images-224", type=int, default=256)
    parser.add_argument("--capture-chunk-size", type=int, default=512, help="capture's chunk_size (its default: 512)")
    parser.add_argument("--capture-target-sizes", type=int, nargs="+", default=[8192],
                        help="F_T values (8192 is the CLI's and capture's default)")
    parser.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers (default: every usable core)")
    parser.add_argument("--loader-batch", type=int, default=256)
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.examples, args.width, args.reps, args.capture_images_64, args.capture_images_224 = 2000, 1024, 1, 32, 16
        args.capture_chunk_size = 16
    binary = os.environ.get("H2T_STORE_BIN", str(Path(__file__).resolve().parents[3] / ".build" / "release" / "h2t-store"))
    args.bench_binary = os.environ.get("H2T_BENCH_BIN", str(Path(binary).parent / "h2t-bench"))
    print(f"# h2t_store (Python) benchmark\n{machine()}")
    scratch = Path(tempfile.mkdtemp(prefix="h2t-bench-python-", dir=args.tmp))
    try:
        if args.section in ("reads", "all"):
            bench_reads(args, binary, scratch)
        if args.section in ("loader", "all"):
            bench_loader(args, binary, scratch)
        if args.section in ("capture", "all"):
            bench_capture(args, binary, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
