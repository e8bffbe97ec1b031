"""The default thread count: the affinity mask bounded by a cgroup CPU quota, as in the Swift code
(one table of cases for both: Tests/Fixtures/cgroup-cpu-limits.json), and in a real cgroup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Optional

import pytest

from h2t_store import _cpus
from h2t_store.store import default_threads

REPO = Path(__file__).resolve().parents[3]
CASES = json.loads((REPO / "Tests" / "Fixtures" / "cgroup-cpu-limits.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_quota_cases(case):
    assert _cpus.limit_from(case["cgroup"], case["mountinfo"], case["files"].get) == case["cores"]


def test_files_are_read_under_a_root(tmp_path):
    case = CASES[1]  # a parent's limit, three levels deep
    for name, text in {"/proc/self/cgroup": case["cgroup"], "/proc/self/mountinfo": case["mountinfo"], **case["files"]}.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert _cpus.cgroup_cpu_limit(str(tmp_path)) == case["cores"]
    assert _cpus.cgroup_cpu_limit(str(tmp_path / "missing")) is None


def test_h2t_threads_wins(monkeypatch):
    monkeypatch.setenv("H2T_THREADS", "7")
    assert default_threads() == 7
    monkeypatch.setenv("H2T_THREADS", "")
    assert default_threads() == _cpus.usable_cores() <= _cpus.affinity_cores()


def writable_cpu_group() -> Optional[Path]:
    """A new child of this process's cgroup with the cpu controller, or None when this machine
    does not let us make one (not root, read-only cgroup file system, no cpu controller)."""
    try:
        groups = Path("/proc/self/cgroup").read_text()
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    for version, root, point in _cpus._cgroup_mounts(mounts):
        group = _cpus._membership(groups, version)
        if group is None or root != "/":
            continue
        child = Path(point + group) / f"h2t-test-{uuid.uuid4().hex[:12]}"
        try:
            child.mkdir()
        except OSError:
            continue
        if (child / ("cpu.max" if version == 2 else "cpu.cfs_quota_us")).exists():
            return child
        child.rmdir()
    return None


def set_quota(group: Path, cpus: float) -> None:
    quota = int(cpus * 100000)
    if (group / "cpu.max").exists():
        (group / "cpu.max").write_text(f"{quota} 100000")
    else:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(quota))


def test_a_real_quota_bounds_the_default():
    group = writable_cpu_group()
    if group is None:
        pytest.skip("cannot create a cgroup with the cpu controller here (needs root and a writable cgroup file system)")
    try:
        set_quota(group, 1)
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from h2t_store import _cpus; from h2t_store.store import default_threads; "
                "print(_cpus.cgroup_cpu_limit(), default_threads(), _cpus.affinity_cores())")
        env = {k: v for k, v in os.environ.items() if k != "H2T_THREADS"}
        done = subprocess.run(["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group),
                               sys.executable, "-c", code, str(REPO / "tools" / "python")],
                              capture_output=True, text=True, env=env, check=True)
        limit, threads, affinity = done.stdout.split()
        assert limit == "1" and threads == "1" and int(affinity) >= 1
    finally:
        group.rmdir()


def test_a_mountinfo_that_is_not_utf8(tmp_path):
    """A mount point named in another encoding is not read (as in the Swift reader); the other
    hierarchies still are, and nothing raises."""
    files = {
        "proc/self/cgroup": b"4:cpu:/job\n0::/job\n",
        "proc/self/mountinfo": b"32 31 0:29 / /mnt/caf\xe9 rw - cgroup cgroup rw,cpu\n"
                               b"41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "mnt/caf\xe9/job/cpu.cfs_quota_us".encode("latin-1"): b"100000",
        "mnt/caf\xe9/job/cpu.cfs_period_us".encode("latin-1"): b"100000",
        "sys/fs/cgroup/job/cpu.max": b"300000 100000",
    }
    for name, data in files.items():
        path = os.path.join(os.fsencode(str(tmp_path)), name if isinstance(name, bytes) else name.encode())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    assert _cpus.cgroup_cpu_limit(str(tmp_path)) == 3
