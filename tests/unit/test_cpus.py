"""CPUs the container may use (cgroup v2/v1 quota, affinity) and the CPU worker/thread plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from smneuron.cpus import cpu_limit
from smneuron.errors import ConfigurationError
from smneuron.serving.layout import cpu_plan, plan_layout


def cgroup_v2(tmp_path: Path, cpu_max: str | None, own: str = "/", nested: str | None = None):
    root = tmp_path / "cgroup"
    root.mkdir()
    if cpu_max is not None:
        (root / "cpu.max").write_text(cpu_max + "\n")
    if nested is not None:
        leaf = root.joinpath(*own.strip("/").split("/"))
        leaf.mkdir(parents=True)
        (leaf / "cpu.max").write_text(nested + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def cgroup_v1(tmp_path: Path, quota: str, period: str = "100000", own: str = "/"):
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text(quota + "\n")
    (cpu / "cpu.cfs_period_us").write_text(period + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"12:memory:{own}\n4:cpu,cpuacct:{own}\n1:name=systemd:{own}\n")
    return root, proc


def test_cgroup_v2_quota_below_the_affinity_wins(tmp_path):
    root, proc = cgroup_v2(tmp_path, "200000 100000")  # docker run --cpus 2
    limit = cpu_limit(root, proc, affinity=lambda: 96)
    assert (limit.cpus, limit.affinity, limit.quota) == (2, 96, 2.0)
    assert limit.source == "cgroup v2 cpu.max"


def test_cgroup_v2_without_a_quota_is_the_affinity(tmp_path):
    root, proc = cgroup_v2(tmp_path, "max 100000")
    limit = cpu_limit(root, proc, affinity=lambda: 6)
    assert (limit.cpus, limit.quota, limit.source) == (6, None, "affinity")


def test_a_fractional_quota_rounds_down_but_never_below_one(tmp_path):
    root, proc = cgroup_v2(tmp_path, "150000 100000")
    assert cpu_limit(root, proc, affinity=lambda: 8).cpus == 1
    (root / "cpu.max").write_text("50000 100000\n")
    assert cpu_limit(root, proc, affinity=lambda: 8).cpus == 1


def test_affinity_below_the_quota_wins(tmp_path):
    root, proc = cgroup_v2(tmp_path, "800000 100000")  # 8 CPUs of quota, pinned to 3
    limit = cpu_limit(root, proc, affinity=lambda: 3)
    assert (limit.cpus, limit.source) == (3, "affinity")


def test_the_process_own_nested_cgroup_is_read_and_the_tightest_limit_wins(tmp_path):
    root, proc = cgroup_v2(tmp_path, "max 100000", own="/kubepods/pod1/ctr", nested="300000 100000")
    assert cpu_limit(root, proc, affinity=lambda: 64).cpus == 3


def test_cgroup_v1_cfs_quota(tmp_path):
    root, proc = cgroup_v1(tmp_path, "400000")
    limit = cpu_limit(root, proc, affinity=lambda: 32)
    assert (limit.cpus, limit.source) == (4, "cgroup v1 cfs quota")


def test_cgroup_v1_without_a_quota_is_the_affinity(tmp_path):
    root, proc = cgroup_v1(tmp_path, "-1")
    assert cpu_limit(root, proc, affinity=lambda: 5).cpus == 5


def test_no_cgroup_files_at_all_is_the_affinity(tmp_path):
    limit = cpu_limit(tmp_path / "none", tmp_path / "no-proc", affinity=lambda: 7)
    assert (limit.cpus, limit.quota) == (7, None)


def test_garbage_in_cpu_max_is_ignored(tmp_path):
    root, proc = cgroup_v2(tmp_path, "lots of cpus")
    assert cpu_limit(root, proc, affinity=lambda: 4).cpus == 4


# --------------------------------------------------------------------------------------------
# The plan: workers x torch threads never above the CPUs


@pytest.mark.parametrize(
    ("cpus", "asked", "planned"),
    [
        (2, {}, (2, 1)),
        (16, {}, (16, 1)),
        (8, {"workers": 2}, (2, 4)),
        (8, {"workers": 3}, (3, 2)),
        (1, {}, (1, 1)),
        (8, {"workers": 2, "torch_threads": 3}, (2, 3)),
        (2, {"workers": 1}, (1, 2)),
        (8, {"torch_threads": 4}, (2, 4)),
        (2, {"torch_threads": 2}, (1, 2)),
    ],
)
def test_workers_times_threads_fit_the_cpus(cpus, asked, planned):
    plan = cpu_plan(cpus, **asked)
    assert (plan.workers, plan.torch_threads) == planned
    assert plan.workers * plan.torch_threads <= cpus


def test_more_workers_than_cpus_is_refused_with_the_numbers():
    with pytest.raises(ConfigurationError, match="=3 workers need at least 3 CPUs.*may use 2"):
        cpu_plan(2, workers=3)


def test_threads_that_oversubscribe_are_refused_with_the_fix():
    with pytest.raises(
        ConfigurationError, match=r"2 worker\(s\) × SMNEURON_TORCH_THREADS=3 need 6"
    ):
        cpu_plan(4, workers=2, torch_threads=3)


def test_http_threads_follow_the_largest_batch_unless_set():
    assert cpu_plan(2, max_batch=1).http_threads == 8
    assert cpu_plan(2, max_batch=8).http_threads == 16
    assert cpu_plan(2, max_batch=32).http_threads == 64
    assert cpu_plan(2, max_batch=8, threads_per_worker=5).http_threads == 5


def test_serve_layout_from_a_fake_cgroup(tmp_path, monkeypatch):
    """plan_layout on CPU takes its CPUs from the cgroup, not os.cpu_count()."""
    from smneuron.cpus import cpu_limit as real
    from smneuron.job import Paths
    from smneuron.serving.settings import ServingSettings

    root, proc = cgroup_v2(tmp_path, "300000 100000")
    monkeypatch.setattr("os.cpu_count", lambda: 128)
    monkeypatch.setattr("smneuron.cpus.cpu_limit", lambda: real(root, proc, affinity=lambda: 128))
    layout = plan_layout(ServingSettings(paths=Paths(tmp_path)), "cpu", None)
    assert (layout.workers, layout.torch_threads) == (3, 1)  # one per CPU of the quota
    layout = plan_layout(ServingSettings(paths=Paths(tmp_path), workers=1), "cpu", None)
    assert (layout.workers, layout.torch_threads) == (1, 3)
    with pytest.raises(ConfigurationError, match="may use 3"):
        plan_layout(ServingSettings(paths=Paths(tmp_path), workers=4), "cpu", None)
