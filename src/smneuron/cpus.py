"""The CPUs this container may really use: cgroup CPU quota and CPU affinity, not the host's.

``os.cpu_count()`` is the host's count: inside a container limited to 2 CPUs on a 96-core host
it says 96, and a server that sizes its workers or torch threads from it runs 48× more threads
than it has CPUs. The limit is the smallest of:

- the CPU affinity mask (``os.sched_getaffinity``: ``docker run --cpuset-cpus``, taskset);
- cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``: ``docker run --cpus``,
  Kubernetes limits), for this process's cgroup and every parent up to the root;
- cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: none) in the ``cpu``
  (or ``cpu,cpuacct``) hierarchy.

A fractional quota is rounded down (1.5 CPUs: 1), never below 1: threads above the quota are
throttled, not run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True)
class CpuLimit:
    """What limits this process: ``cpus`` usable, and where each number came from."""

    cpus: int
    affinity: int
    quota: float | None  # CPUs allowed by the cgroup quota; None: no quota
    source: str  # "affinity", "cgroup v2 cpu.max", "cgroup v1 cfs quota"


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller."""
    text = _read(proc_cgroup) or ""
    v2 = v1 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidates(base: Path, own: str | None) -> list[Path]:
    """``base`` joined with ``own`` and each of its parents, down to ``base`` itself.

    In a container (its own cgroup namespace) ``own`` is ``/`` and ``base`` is its cgroup.
    """
    dirs = [base]
    if own and own.strip("/"):
        parts = [part for part in own.strip("/").split("/") if part]
        for depth in range(len(parts), 0, -1):
            dirs.insert(len(dirs) - 1, base.joinpath(*parts[:depth]))
    return dirs


def _v2_quota(root: Path, own: str | None) -> float | None:
    limits = []
    for directory in _candidates(root, own):
        text = _read(directory / "cpu.max")
        if not text:
            continue
        fields = text.split()
        if len(fields) != 2 or fields[0] == "max":
            continue
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        if quota > 0 and period > 0:
            limits.append(quota / period)
    return min(limits) if limits else None


def _v1_quota(root: Path, own: str | None) -> float | None:
    limits = []
    for name in V1_CPU_DIRS:
        for directory in _candidates(root / name, own):
            quota = _read(directory / "cpu.cfs_quota_us")
            period = _read(directory / "cpu.cfs_period_us")
            try:
                q, p = int(quota or ""), int(period or "")
            except ValueError:
                continue
            if q > 0 and p > 0:
                limits.append(q / p)
    return min(limits) if limits else None


def cpu_limit(
    root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    affinity: Callable[[], int] = _affinity,
) -> CpuLimit:
    """The CPUs this process may use and why (see the module docstring)."""
    mask = max(1, affinity())
    v2_own, v1_own = _own_paths(proc_cgroup)
    quota, source = _v2_quota(root, v2_own), "cgroup v2 cpu.max"
    if quota is None:
        quota, source = _v1_quota(root, v1_own), "cgroup v1 cfs quota"
    if quota is None or int(quota) >= mask:
        return CpuLimit(mask, mask, quota, "affinity")
    return CpuLimit(max(1, int(quota)), mask, quota, source)


def available_cpus() -> int:
    """``cpu_limit().cpus`` for this process: what workers × threads may add up to."""
    return cpu_limit().cpus
