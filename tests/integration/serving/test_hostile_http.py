"""The hostile battery and a fuzz smoke run against `serve` (gunicorn) over real HTTP."""

from __future__ import annotations

import shutil
import time

import pytest
from fuzz.fuzzing import LocalServer, ping, run_cases, worker_deaths
from hostile import CASES, problems, send

pytestmark = pytest.mark.slow

# Framing cases only nginx in front answers right; gunicorn alone answers a non-hex chunk
# size with a 500 (the front's tests in the stack tier hold these to 4xx).
NEEDS_FRONT = {"non-hex-chunk-size"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, classifier_dir):
    base = tmp_path_factory.mktemp("hostile-gunicorn")
    shutil.copytree(classifier_dir, base / "model")
    running = LocalServer(base, "gunicorn")
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_request_is_a_4xx_json_and_the_server_stays_up(server, case):
    if case.name in NEEDS_FRONT:
        pytest.xfail("answered by nginx in front; gunicorn alone gets it wrong")
    reply = send(case, "127.0.0.1", server.port)
    # Framing errors are answered by the HTTP layer itself: JSON once nginx is in front.
    assert problems(case, reply.status, reply.body, json_required=case.raw is None) == []
    assert ping(server.url) == 200


def test_fuzz_smoke_has_no_5xx_and_no_worker_death(server):
    tally = run_cases(server.url, cases=300, seconds=240, seed=7)
    assert tally.cases == 300
    assert tally.server_errors == 0, tally.failures[:10]
    assert tally.bad_errors == [], tally.bad_errors[:10]
    time.sleep(0.5)
    assert worker_deaths(server.log_text(), server.workers) == 0
    assert ping(server.url) == 200
