"""The front: nginx.conf rendered from settings, /ping's state files, the supervisor's readiness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from smneuron.job import Paths
from smneuron.serving.runtime import Layout, clear_ready, mark_ready, record_failure
from smneuron.serving.settings import ServingSettings
from smneuron.serving.stacks import nginx
from smneuron.serving.stacks.mms import mms_properties
from smneuron.serving.stacks.nginx import PingState, Upstream, render_config
from smneuron.serving.stacks.supervisor import Child, Readiness

GUNICORN = Upstream("unix:/run/x/gunicorn.sock", "/invocations")


def settings(tmp_path, **values) -> ServingSettings:
    return ServingSettings(paths=Paths(tmp_path), **values)


def test_config_follows_the_settings(tmp_path):
    conf = render_config(
        settings(tmp_path, port=9123, max_payload_mb=20, model_server_timeout=90),
        tmp_path,
        GUNICORN,
    )
    assert "listen 0.0.0.0:9123 " in conf
    assert "client_max_body_size 20m;" in conf
    assert "proxy_read_timeout 90s;" in conf and "proxy_send_timeout 90s;" in conf
    assert "server unix:/run/x/gunicorn.sock" in conf
    assert "proxy_pass http://model_server/invocations;" in conf
    assert "proxy_request_buffering on;" in conf
    assert "daemon off;" in conf and "master_process on;" in conf
    assert f"pid {tmp_path / 'nginx' / 'nginx.pid'};" in conf
    assert "the limit of 20 MB" in conf


@pytest.mark.parametrize(
    ("timeout", "deadline", "expected"),
    [(60, None, 60), (60, 58.5, 64), (30, 120.0, 125)],
)
def test_upstream_timeouts_stay_above_the_request_deadline(tmp_path, timeout, deadline, expected):
    # Our worker answers 504 JSON naming the deadline; nginx and MMS must not time out first.
    chosen = settings(tmp_path, model_server_timeout=timeout, request_deadline_s=deadline)
    assert chosen.upstream_timeout_s == expected > chosen.deadline_s
    conf = render_config(chosen, tmp_path, GUNICORN)
    assert f"proxy_read_timeout {expected}s;" in conf
    assert f"proxy_send_timeout {expected}s;" in conf
    props = mms_properties(chosen, Layout("cpu", 1), 20001, 20002, tmp_path)
    assert props["default_response_timeout"] == str(expected)


def test_as_root_nginx_workers_run_ahead_of_the_model_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(nginx.os, "geteuid", lambda: 0)
    assert "worker_priority -5;" in render_config(settings(tmp_path), tmp_path, GUNICORN)
    monkeypatch.setattr(nginx.os, "geteuid", lambda: 1000)
    assert "worker_priority" not in render_config(settings(tmp_path), tmp_path, GUNICORN)


def test_every_error_nginx_makes_has_a_json_body(tmp_path):
    conf = render_config(settings(tmp_path), tmp_path, GUNICORN)
    for code in (400, 404, 405, 408, 413, 414, 502, 503, 504):
        assert f"error_page {code} " in conf, code
    for line in conf.splitlines():
        line = line.strip()
        if line.startswith("return ") and "'" in line:
            status, body = line[len("return ") :].split(" ", 1)
            data = json.loads(body.rstrip(";").strip("'").replace("\\'", "'"))
            assert data["code"] == int(status) and data["error"] and data["type"]


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed on this host")
def test_nginx_accepts_the_rendered_config(tmp_path):
    command, _ = nginx.prepare(
        settings(tmp_path, port=18999), tmp_path / "rt", GUNICORN, {"BatchStrategy": "x"}, 1
    )
    result = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_ping_state_switches_atomically_and_keeps_a_reason(tmp_path):
    ping = PingState(tmp_path)
    state = nginx.state_dir(tmp_path)
    assert ping.set(False, "the model is loading (0 of 2 workers ready)")
    assert not (state / nginx.READY_FILE).exists()
    reason = json.loads((state / nginx.NOT_READY_FILE).read_text())
    assert reason == {
        "error": "the model is loading (0 of 2 workers ready)",
        "type": "NotReady",
        "code": 503,
    }
    assert not ping.set(False, "the model is loading (0 of 2 workers ready)")  # unchanged
    assert ping.set(True, "2 of 2 workers ready")
    assert json.loads((state / nginx.READY_FILE).read_text())["status"] == "ready"
    ping.set(False, "stopping")
    assert not (state / nginx.READY_FILE).exists()
    assert not list(state.glob(".*tmp"))


def test_readiness_needs_every_worker_once_then_any_live_one(tmp_path):
    readiness = Readiness(tmp_path, 2)
    mark_ready(tmp_path, 0)
    assert readiness.check() == (False, "the model is loading (1 of 2 workers ready)")
    mark_ready(tmp_path, 1)
    assert readiness.check()[0]
    clear_ready(tmp_path, pid=os.getpid())  # both markers name this process
    ready, reason = readiness.check()
    assert not ready and "being restarted" in reason
    mark_ready(tmp_path, 1)
    assert readiness.check() == (True, "1 of 2 workers ready")


def test_a_load_failure_is_the_reason_and_never_ready(tmp_path):
    readiness = Readiness(tmp_path, 1)
    record_failure(tmp_path, "compiled/bucket-16.pt is not a TorchScript file")
    ready, reason = readiness.check()
    assert not ready
    assert reason.startswith("the model failed to load: compiled/bucket-16.pt")


def test_a_zombie_worker_does_not_count(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        (tmp_path / "ready-0.json").write_text(json.dumps({"pid": child.pid}))
        zombie = False
        for _ in range(200):  # exited, not reaped yet: a zombie
            stat = open(f"/proc/{child.pid}/stat").read()
            zombie = stat.rsplit(")", 1)[1].split()[0] == "Z"
            if zombie:
                break
            time.sleep(0.05)
        assert zombie
        assert Readiness(tmp_path, 1).check()[0] is False
    finally:
        child.wait()


def test_child_stop_escalates_to_kill(tmp_path):
    stubborn = Child(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, "
            f"signal.SIG_IGN); open({str(tmp_path / 'up')!r}, 'w'); time.sleep(60)",
        ],
        dict(os.environ),
    )
    stubborn.start()
    assert stubborn.wait_until((tmp_path / "up").exists, 30)
    assert stubborn.stop(grace_s=0.5) == -9
    assert stubborn.exited() == -9
