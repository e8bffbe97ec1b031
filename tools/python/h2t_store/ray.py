"""Sharded ingest on Ray: N ``h2t-store ingest --shard K/N`` runs as Ray tasks, then the merge.

Each task runs the CLI (the one writer of a store) into a shard store of its own under
``shard_root``; Ray retries a task whose worker died or whose ingest failed, and the retried
ingest resumes its shard (an unsealed shard store keeps what it committed; a sealed one is not
redone). When every shard is sealed, the driver runs ``h2t-store merge`` into ``store``, which
gives the store a single-process ingest of all the inputs would have given (docs/scaling-out.md).

Shard stores must be on storage every node can reach and the driver can read (LMDB needs a local
file system on each writer: a node-local disk plus a copy, or a shared file system that supports
``mmap`` and locks, not NFS)::

    import ray
    from h2t_store.ray import sharded_ingest

    ray.init()
    summary = sharded_ingest("/data/imagenet.store", "/data/shards", 64,
                             ["--backbone", "mobilenet_v2", "--folder", "/data/imagenet/train",
                              "--dataset", "imagenet", "--split", "train", "--target-size", "512"],
                             num_cpus=8)
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import ray

from . import cli
from ._cpus import usable_cores
from .errors import H2TStoreError

__all__ = ["ShardedIngestResult", "sharded_ingest", "shard_path"]


@dataclass
class ShardedIngestResult:
    """What ``sharded_ingest`` did: each shard's ``ingest --json`` summary (of its last, successful
    attempt) in shard order, and the ``merge --json`` summary (``None`` with ``merge=False``)."""

    shards: List[Dict[str, Any]]
    merge: Optional[Dict[str, Any]]


def shard_path(shard_root: str, k: int) -> str:
    """The store directory of shard ``k``: ``shard_root/shard-K``."""
    return os.path.join(shard_root, f"shard-{k}")


def _die_with_parent() -> None:
    """In the CLI's child process: be killed when the Ray worker that started it dies (Linux), so
    that a retried task never runs beside an orphan still writing the same shard."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _chooses_threads(arguments: Sequence[str]) -> bool:
    """Whether the ingest arguments set the thread count themselves."""
    return any(a == "--threads" or a.startswith("--threads=") for a in arguments)


def _task_threads(assigned_cpus: Optional[float], arguments: Sequence[str], environment: Dict[str, str]) -> Optional[int]:
    """The ``--threads`` a shard's CLI gets: None where the caller chose (``--threads`` in the
    ingest arguments, or a non-empty ``H2T_THREADS`` in the task's environment, which the CLI
    reads and checks), else the CPUs Ray assigned the task by Ray's own rule for
    ``OMP_NUM_THREADS`` (rounded down, at least 1; 1 where none were assigned), at most the cores
    the worker may use. Ray does not pin its workers to cores, so the CLI would otherwise start a
    thread for every core it sees in every task that runs at once."""
    if _chooses_threads(arguments) or environment.get("H2T_THREADS", "").strip():
        return None
    cpus = max(math.floor(assigned_cpus), 1) if assigned_cpus else 1
    return min(cpus, usable_cores())


def _ingest_shard(binary: str, shard_dir: str, k: int, n: int, arguments: List[str]) -> Dict[str, Any]:
    """One Ray task: ``h2t-store ingest --store SHARD_DIR --shard K/N ARGUMENTS --json``, with as
    many threads as the task has CPUs (``_task_threads``)."""
    threads = _task_threads(ray.get_runtime_context().get_assigned_resources().get("CPU"), arguments, dict(os.environ))
    command = [binary, "ingest", "--store", shard_dir, "--shard", f"{k}/{n}", *arguments,
               *(["--threads", str(threads)] if threads is not None else []), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_die_with_parent)
    if done.returncode < 0:
        raise H2TStoreError(f"shard {k}/{n}: h2t-store ingest was killed by signal {-done.returncode}")
    return cli.parse_result(command[1:], done.returncode, done.stdout, done.stderr)


def sharded_ingest(store: str, shard_root: str, num_shards: int, ingest_arguments: Sequence[str], *,
                   max_retries: int = 3, num_cpus: float = 1, merge: bool = True,
                   binary: Optional[str] = None) -> ShardedIngestResult:
    """Ingests the inputs named by ``ingest_arguments`` (any ``h2t-store ingest`` options but
    ``--store``, ``--shard`` and ``--json``) as ``num_shards`` Ray tasks, shard K into
    ``shard_root/shard-K``, each retried up to ``max_retries`` times; then merges the shards into
    ``store`` on the driver.

    Connects to the running Ray cluster (``ray.init`` first; a local one is started otherwise).
    ``num_cpus`` is each task's CPU reservation, and its CLI computes on that many threads (rounded
    down, at least 1, at most the cores the worker may use) unless ``ingest_arguments`` has
    ``--threads`` or the task's environment sets ``H2T_THREADS``. Raises
    ``H2TStoreError`` with the CLI's one-line error when a shard still fails after its retries,
    or when the merge refuses the shards.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    forbidden = {"--store", "--shard", "--json"}.intersection(ingest_arguments)
    if forbidden:
        raise ValueError(f"ingest_arguments must not contain {sorted(forbidden)}: sharded_ingest sets them")
    executable = cli.binary(binary)
    os.makedirs(shard_root, exist_ok=True)
    task = ray.remote(_ingest_shard).options(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=True)
    refs = [task.remote(executable, shard_path(shard_root, k), k, num_shards, list(ingest_arguments))
            for k in range(num_shards)]
    shards: List[Dict[str, Any]] = []
    for k, ref in enumerate(refs):
        try:
            shards.append(ray.get(ref))
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None) or error
            raise H2TStoreError(f"shard {k}/{num_shards} failed after {max_retries} retries: {cause}") from None
        except ray.exceptions.WorkerCrashedError:
            raise H2TStoreError(f"shard {k}/{num_shards}: its worker died {max_retries + 1} times") from None
    merged = None
    if merge:
        merged = cli.run_json(["merge", "--into", store, *(shard_path(shard_root, k) for k in range(num_shards))], executable)
    return ShardedIngestResult(shards=shards, merge=merged)
