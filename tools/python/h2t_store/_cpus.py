"""How many cores this process may use: the project's policy (``Parallel.defaultWorkers`` and
``CgroupCPULimit`` in the Swift code), so that Python and the CLI pick the same default.

The affinity mask (``taskset``, cpusets, Slurm's binding) bounded by a cgroup CPU quota
(``docker run --cpus``, a Kubernetes CPU limit, systemd's ``CPUQuota=``), which the mask does not
show. Every hierarchy that limits CPU time is read in the process's group and each ancestor up
to the hierarchy's root: cgroup v2's ``cpu.max``, cgroup v1's ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``. The tightest limit wins; ``quota / period`` is rounded up.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Callable, Iterator, List, Optional, Tuple


def affinity_cores() -> int:
    """CPUs in this process's affinity mask (the machine's count where there is no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity mask on this platform
        return os.cpu_count() or 1


def usable_cores() -> int:
    """Every core this process may use: the affinity mask bounded by a cgroup CPU quota."""
    cores = affinity_cores()
    limit = _current_limit()
    return min(cores, limit) if limit is not None else cores


@functools.lru_cache(maxsize=1)
def _current_limit() -> Optional[int]:
    """This process's quota, read once (as the Swift code reads it: it rarely changes while a
    program runs)."""
    return cgroup_cpu_limit()


def cgroup_cpu_limit(root: str = "") -> Optional[int]:
    """The cgroup CPU quota of this process in whole cores (rounded up), or None when there is
    none or it cannot be read. Paths are prefixed with ``root`` (a directory standing for ``/``)."""

    def read(path: str) -> Optional[str]:
        # Bytes that are not UTF-8 (a mount point named in another encoding) become U+FFFD, as in
        # the Swift reader: such a path is then not found, and only its limit is missed.
        try:
            with open(root + path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return None

    groups, mounts = read("/proc/self/cgroup"), read("/proc/self/mountinfo")
    if groups is None or mounts is None:
        return None
    return limit_from(groups, mounts, read)


def limit_from(groups: str, mounts: str, read: Callable[[str], Optional[str]]) -> Optional[int]:
    """The limit given the texts of ``/proc/self/cgroup`` and ``/proc/self/mountinfo``."""
    limits: List[int] = []
    for version, mount_root, mount_point in _cgroup_mounts(mounts):
        group = _membership(groups, version)
        if group is None:
            continue
        for directory in _directories(group, mount_root, mount_point):
            if version == 2:
                limit = _v2_limit(read(directory + "/cpu.max"))
            else:
                limit = _v1_limit(read(directory + "/cpu.cfs_quota_us"), read(directory + "/cpu.cfs_period_us"))
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _membership(groups: str, version: int) -> Optional[str]:
    for line in groups.split("\n"):
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if version == 2 and fields[0] == "0":
            return fields[2]
        if version == 1 and "cpu" in fields[1].split(","):
            return fields[2]
    return None


def _cgroup_mounts(mounts: str) -> Iterator[Tuple[int, str, str]]:
    """(version, mounted root, mount point) of cgroup v2 mounts and cgroup v1 mounts with ``cpu``."""
    for line in mounts.split("\n"):
        fields = line.split(" ")
        if len(fields) < 5 or "-" not in fields:
            continue
        dash = fields.index("-")
        if dash + 1 >= len(fields):
            continue
        kind = fields[dash + 1]
        if kind == "cgroup2":
            version = 2
        elif kind == "cgroup" and dash + 3 < len(fields) and "cpu" in fields[dash + 3].split(","):
            version = 1
        else:
            continue
        yield version, _unescaped(fields[3]), _unescaped(fields[4])


def _unescaped(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal escapes."""
    def octal(match: "re.Match[str]") -> str:
        code = int(match.group(1), 8)
        return chr(code) if code < 256 else match.group(0)
    return re.sub(r"\\([0-7]{3})", octal, field)


def _directories(group: str, mount_root: str, mount_point: str) -> List[str]:
    """The group's directory and each ancestor's up to the mount's root, nearest first; none
    when the group is not under the mounted part of the hierarchy."""
    path = group
    if mount_root != "/":
        if not (path == mount_root or path.startswith(mount_root + "/")):
            return []
        path = path[len(mount_root):]
    components = [c for c in path.split("/") if c]
    if ".." in components:
        return []
    directories = []
    while True:
        directories.append(mount_point + "/" + "/".join(components) if components else mount_point)
        if not components:
            return directories
        components.pop()


def _whole_cores(quota: int, period: int) -> Optional[int]:
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))


def _integer(text: str) -> Optional[int]:
    """A decimal integer as the Swift reader parses one (ASCII digits, an optional sign; no
    ``_`` separators or other scripts' digits, which Python's ``int`` would take)."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None


def _v2_limit(text: Optional[str]) -> Optional[int]:
    fields = (text or "").split()
    if len(fields) != 2:
        return None
    quota, period = _integer(fields[0]), _integer(fields[1])  # "max": no limit
    return _whole_cores(quota, period) if quota is not None and period is not None else None


def _v1_limit(quota: Optional[str], period: Optional[str]) -> Optional[int]:
    q, p = _integer((quota or "").strip()), _integer((period or "").strip())
    return _whole_cores(q, p) if q is not None and p is not None else None
