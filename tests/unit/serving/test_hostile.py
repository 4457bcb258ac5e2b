"""The hostile-request battery (tests/hostile.py) against the in-process handler."""

from __future__ import annotations

import json
import logging

import pytest
from hostile import HANDLER_CASES, problems

from smneuron.job import Paths
from smneuron.serving.runtime import WorkerRuntime
from smneuron.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def runtime(classifier_dir) -> WorkerRuntime:
    loaded = WorkerRuntime(ServingSettings(paths=Paths(classifier_dir.parent)), None)
    loaded.load()
    return loaded


def test_the_battery_is_large_enough():
    assert len(HANDLER_CASES) >= 40


@pytest.mark.parametrize("case", HANDLER_CASES, ids=lambda case: case.name)
def test_hostile_request_is_a_4xx_json_and_the_worker_keeps_answering(runtime, case, caplog):
    with caplog.at_level(logging.INFO):
        response = runtime.invoke(case.body, case.content_type, case.accept)
    assert problems(case, response.status, response.body) == []
    assert response.content_type == "application/json"
    assert "Traceback" not in caplog.text  # a client's mistake is not a server fault
    after = runtime.invoke(b'{"inputs": "still here"}', "application/json", None)
    assert after.status == 200 and json.loads(after.body)[0]["label"]
    assert runtime.ready and runtime.health() == (True, "ok")
