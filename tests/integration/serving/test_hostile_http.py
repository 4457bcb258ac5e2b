"""The hostile battery and a fuzz smoke run against `serve` (nginx in front of each stack)."""

from __future__ import annotations

import shutil
import time

import pytest
from fuzz.fuzzing import LocalServer, ping, run_cases, worker_deaths
from hostile import CASES, problems, send
from hostserver import require_nginx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["gunicorn", "mms"])
def server(request, tmp_path_factory, classifier_dir):
    require_nginx()
    base = tmp_path_factory.mktemp(f"hostile-{request.param}")
    shutil.copytree(classifier_dir, base / "model")
    running = LocalServer(base, request.param)
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_request_is_a_4xx_json_and_the_server_stays_up(server, case):
    reply = send(case, "127.0.0.1", server.port)
    # Framing errors too: nginx answers them itself, with a JSON body.
    assert problems(case, reply.status, reply.body) == []
    assert server.process.poll() is None
    assert ping(server.url) == 200


def test_fuzz_smoke_has_no_5xx_and_no_worker_death(server):
    # On MMS this ran into MMS's reply decoder dropping workers (see test_mms_decoder.py).
    tally = run_cases(server.url, cases=300, seconds=240, seed=7)
    assert tally.cases == 300
    assert tally.server_errors == 0, tally.failures[:10]
    assert tally.bad_errors == [], tally.bad_errors[:10]
    time.sleep(0.5)
    assert worker_deaths(server.log_text(), server.workers) == 0
    assert ping(server.url) == 200
