"""``h2t_store.ray.sharded_ingest`` on a local Ray cluster (2 CPUs): one shard's worker is killed
mid-shard on purpose; Ray retries the task, the shard resumes, and the merged store exports
exactly what a single-process ingest of the same inputs exports."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import lmdb
import pytest

ray = pytest.importorskip("ray")

from conftest import BINARY, activations, run_cli, write_raw  # noqa: E402
from h2t_store._cpus import usable_cores  # noqa: E402
from h2t_store.errors import H2TStoreError  # noqa: E402
from h2t_store.ray import _task_threads, shard_path, sharded_ingest  # noqa: E402

PACKAGE = str(Path(__file__).resolve().parents[1])
N_EXAMPLES = 6000
SHARDS = 4
VICTIM = 1


@pytest.fixture(scope="module")
def cluster():
    # Workers import h2t_store from this tree, as the driver does (not a stale installed copy).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE, os.environ.get("PYTHONPATH")]))
    os.environ.pop("H2T_THREADS", None)  # the workers inherit it, and it would override the tasks' CPUs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def ingest_arguments(inputs: Path):
    return ["--external", "toy-net", "--dataset", "toy", "--split", "train", "--target-size", "64",
            "--column-block", "64", "--segment-rows", "64", str(inputs)]


def shard_record(shard_dir: str):
    """The shard store's ``meta["shard"]`` record (None until the ingest has written it)."""
    if not os.path.exists(os.path.join(shard_dir, "data.mdb")):
        return None
    try:
        env = lmdb.open(shard_dir, readonly=True, lock=True, create=False, subdir=True, max_dbs=20)
    except lmdb.Error:
        return None
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            return txn.get(b"shard", db=meta)
    except lmdb.Error:  # the store is being created: its tables are not there yet
        return None
    finally:
        env.close()


def shard_ingest(shard_dir: str):
    """``(pid, parent pid)`` of the ``h2t-store ingest`` of ``shard_dir`` (Linux /proc), or None."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if cmdline[0] == BINARY.encode() and shard_dir.encode() in cmdline:
            return int(pid), parent
    return None


def kill_worker_mid_shard(shard_dir: str, killed: list) -> None:
    """Waits until shard ``shard_dir`` has begun, stops its ingest (SIGSTOP), and if the shard is
    still not sealed, SIGKILLs the Ray worker running it and the ingest. Stopping first closes
    the race between seeing the shard unsealed and the kill landing after it sealed."""
    deadline = time.time() + 120
    while time.time() < deadline:
        record = shard_record(shard_dir)
        if record is not None:
            if b'"seal"' in record:
                return
            found = shard_ingest(shard_dir)
            if found is not None:
                ingest, worker = found
                try:
                    os.kill(ingest, signal.SIGSTOP)
                except ProcessLookupError:  # it ended meanwhile: look again
                    continue
                if b'"seal"' in (shard_record(shard_dir) or b""):
                    os.kill(ingest, signal.SIGCONT)
                    return
                killed.append(worker)
                os.kill(worker, signal.SIGKILL)
                os.kill(ingest, signal.SIGKILL)
                return
        time.sleep(0.01)


def exports(store: str, tmp: Path):
    listing = run_cli("ls", "--json", "--store", store).stdout
    import json
    out = {}
    for fs in json.loads(listing)["feature_sets"]:
        path = tmp / f"{fs['id'][:12]}-{abs(hash(store))}.npy"
        run_cli("export", "--store", store, "--feature-set", fs["id"], "--dataset", "toy", "--split", "train", "--out", str(path))
        out[fs["id"]] = path.read_bytes()
    return out


def test_killed_task_is_retried_resumes_and_the_merge_equals_one_ingest(cluster, tmp_path: Path):
    inputs = tmp_path / "acts.safetensors"
    write_raw(inputs, activations(N_EXAMPLES, 7), [f"ex-{i}" for i in range(N_EXAMPLES)])
    shard_root = str(tmp_path / "shards")
    killed: list = []
    killer = threading.Thread(target=kill_worker_mid_shard, args=(shard_path(shard_root, VICTIM), killed))
    killer.start()
    result = sharded_ingest(str(tmp_path / "merged"), shard_root, SHARDS, ingest_arguments(inputs), max_retries=2,
                            binary=BINARY)
    killer.join()
    assert killed, "the shard finished before its worker could be killed: make the input larger"
    states = [s["shard"]["state"] for s in result.shards]
    assert states[VICTIM] == "resumed", states
    assert [s["shard"]["shard"] for s in result.shards] == list(range(SHARDS))
    assert sum(s["shard"]["items"] for s in result.shards) == N_EXAMPLES
    assert result.merge is not None and result.merge["rows_added"] == N_EXAMPLES and result.merge["tiles_reencoded"] == 0

    run_cli("ingest", "--store", str(tmp_path / "single"), "--quiet", *ingest_arguments(inputs))
    assert exports(str(tmp_path / "merged"), tmp_path) == exports(str(tmp_path / "single"), tmp_path)

    # Again: every shard is sealed (nothing recomputed) and the merge adds nothing.
    again = sharded_ingest(str(tmp_path / "merged"), shard_root, SHARDS, ingest_arguments(inputs), binary=BINARY)
    assert {s["shard"]["state"] for s in again.shards} == {"already_sealed"}
    assert again.merge["rows_added"] == 0 and all(s["already_merged"] for s in again.merge["shards"])


def test_a_shard_that_keeps_failing_is_reported_with_the_cli_error(cluster, tmp_path: Path):
    with pytest.raises(H2TStoreError, match=r"shard 0/2 failed after 1 retries: .*absent\.safetensors"):
        sharded_ingest(str(tmp_path / "merged"), str(tmp_path / "shards"), 2,
                       ["--external", "toy-net", "--dataset", "toy", str(tmp_path / "absent.safetensors")],
                       max_retries=1, binary=BINARY)
    assert not os.path.exists(tmp_path / "merged")
    with pytest.raises(ValueError, match="--shard"):
        sharded_ingest(str(tmp_path / "m"), str(tmp_path / "s"), 2, ["--shard", "0/2"], binary=BINARY)


def test_each_shard_computes_on_the_cpus_its_task_was_given(cluster, tmp_path: Path):
    # Ray does not pin workers to cores: without --threads every shard's CLI would start a thread
    # for each core it sees (2 here) in every task running at once.
    inputs = tmp_path / "acts.safetensors"
    write_raw(inputs, activations(256, 3), [f"ex-{i}" for i in range(256)])

    def threads(num_cpus, extra=()):
        result = sharded_ingest(str(tmp_path / f"merged-{num_cpus}-{len(extra)}"), str(tmp_path / f"shards-{num_cpus}-{len(extra)}"), 2,
                                [*ingest_arguments(inputs), *extra], num_cpus=num_cpus, binary=BINARY)
        return [s["threads"] for s in result.shards]

    assert threads(1) == [1, 1]
    assert threads(0.5) == [1, 1]
    assert threads(2) == [min(2, usable_cores())] * 2
    assert threads(1, ["--threads", "2"]) == [2, 2]


def test_the_task_thread_rule():
    assert _task_threads(1.0, [], {}) == 1
    assert _task_threads(0.25, [], {}) == 1
    assert _task_threads(None, [], {}) == 1
    assert _task_threads(1.9, [], {}) == 1
    assert _task_threads(10_000.0, [], {}) == usable_cores()
    assert _task_threads(4.0, ["--threads", "3"], {}) is None
    assert _task_threads(4.0, ["--threads=3"], {}) is None
    assert _task_threads(4.0, [], {"H2T_THREADS": "3"}) is None
    assert _task_threads(4.0, [], {"H2T_THREADS": ""}) == min(4, usable_cores())  # empty: unset, as for the CLI
