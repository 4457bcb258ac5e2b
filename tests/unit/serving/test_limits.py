"""Bounded work per request: inputs, characters, deadline, queue, a dead batcher thread."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from smneuron.artifact.backends import CpuBackend
from smneuron.errors import ConfigurationError
from smneuron.job import Paths
from smneuron.serving.handler import Handler, Hook, WorkerInfo
from smneuron.serving.runtime import WorkerRuntime
from smneuron.serving.settings import ServingSettings


def runtime_for(base, **settings) -> WorkerRuntime:
    worker = WorkerInfo(0, None, ServingSettings(paths=Paths(base), **settings), CpuBackend())
    runtime = WorkerRuntime(worker.settings, None)
    runtime.handler = Handler.load(base / "model", worker)
    return runtime


def call(runtime, payload, content_type="application/json"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = runtime.invoke(body, content_type, None)
    return response, json.loads(response.body)


class Gate:
    """Stands in for every compiled graph: blocks each forward until opened."""

    def __init__(self, model) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.graphs = dict(model.graphs)
        for bucket, graph in self.graphs.items():
            model.graphs[bucket] = self._wrap(graph)

    def _wrap(self, graph):
        def forward(*inputs):  # ids, mask (and token_type_ids)
            self.entered.set()
            self.open.wait(30)
            return graph(*inputs)

        return forward


def test_defaults_are_documented_values():
    settings = ServingSettings.from_env({})
    assert (settings.max_inputs, settings.max_text_chars, settings.max_queue) == (1000, 32768, 4096)
    assert settings.deadline_s == pytest.approx(54.0)
    assert ServingSettings.from_env({"SMNEURON_REQUEST_DEADLINE_S": "2.5"}).deadline_s == 2.5
    with pytest.raises(ConfigurationError, match="SMNEURON_MAX_QUEUE"):
        ServingSettings.from_env({"SMNEURON_MAX_QUEUE": "10", "SMNEURON_MAX_INPUTS": "20"})


def test_more_inputs_than_the_limit_is_a_413_naming_it(opt_ml):
    runtime = runtime_for(opt_ml, max_inputs=3)
    response, body = call(runtime, {"inputs": ["a", "b", "c", "d"]})
    assert response.status == 413
    assert "4 inputs" in body["error"] and "limit of 3" in body["error"]
    assert "SMNEURON_MAX_INPUTS" in body["error"]
    assert call(runtime, {"inputs": ["a", "b", "c"]})[0].status == 200


def test_a_long_text_is_cut_by_characters_before_tokenizing(opt_ml):
    runtime = runtime_for(opt_ml, max_text_chars=200)
    text = "free money now " * 400_000  # 6 MB
    response, long_answer = call(runtime, text.encode(), "text/plain")
    assert response.status == 200
    _, short_answer = call(runtime, text[:200].encode(), "text/plain")
    assert long_answer == short_answer


def test_a_long_text_under_reject_is_a_413_naming_the_limit(opt_ml):
    runtime = runtime_for(opt_ml, max_text_chars=200, overflow="reject")
    response, body = call(runtime, ("x" * 201).encode(), "text/plain")
    assert response.status == 413
    assert "201 characters" in body["error"] and "SMNEURON_MAX_TEXT_CHARS" in body["error"]


def test_a_stuck_forward_is_a_504_and_the_handler_reports_unhealthy(opt_ml):
    runtime = runtime_for(opt_ml, request_deadline_s=2.0)
    gate = Gate(runtime.handler.model)
    try:
        response, body = call(runtime, {"inputs": "hello"})
        assert response.status == 504 and body["code"] == 504
        assert body["type"] == "DeadlineExceeded"
        assert gate.entered.is_set()  # it was the forward that hung, not the queue
        for _ in range(500):  # the batch is still stuck: it passes the deadline for health too
            if not runtime.handler.healthy():
                break
            threading.Event().wait(0.02)
        ok, reason = runtime.handler.health()
        assert not ok and "running for" in reason
    finally:
        gate.open.set()
    response, _ = call(runtime, {"inputs": "hello"})
    assert response.status == 200
    assert runtime.handler.health() == (True, "ok")


def test_a_full_queue_is_a_503_with_retry_after(opt_ml):
    runtime = runtime_for(opt_ml, max_inputs=4, max_queue=4)
    gate = Gate(runtime.handler.model)
    pool = ThreadPoolExecutor(2)
    try:
        running = pool.submit(call, runtime, {"inputs": ["one"]})
        assert gate.entered.wait(10)
        queued = pool.submit(call, runtime, {"inputs": ["a", "b", "c", "d"]})
        for _ in range(1000):
            if runtime.handler.model.batcher._waiting >= 4:
                break
            threading.Event().wait(0.01)
        response = runtime.invoke(b'{"inputs": "one too many"}', "application/json", None)
        assert response.status == 503
        assert dict(response.headers) == {"Retry-After": "1"}
        assert json.loads(response.body)["type"] == "Overloaded"
        gate.open.set()
        assert running.result(30)[0].status == 200
        assert queued.result(30)[0].status == 200
    finally:
        gate.open.set()
        pool.shutdown()


class _Fatal(BaseException):
    pass


def test_a_dead_batcher_fails_requests_fast_and_the_handler_reports_unhealthy(opt_ml):
    runtime = runtime_for(opt_ml)
    model = runtime.handler.model

    def fatal(*inputs):
        raise _Fatal("the forward ended the thread")

    for bucket in model.graphs:
        model.graphs[bucket] = fatal
    original_hook = threading.excepthook
    threading.excepthook = lambda args: None
    try:
        response, body = call(runtime, {"inputs": "hello"})
        assert response.status == 503 and body["type"] == "BatcherDied"
        model.batcher._thread.join(5)
        assert not runtime.handler.healthy()
        assert "batcher thread stopped" in runtime.handler.health()[1]
        response, _ = call(runtime, {"inputs": "again"})
        assert response.status == 503  # refused at once, not queued behind a dead thread
    finally:
        threading.excepthook = original_hook


def test_a_hung_predict_fn_is_a_504_at_the_deadline_and_the_worker_withdraws(opt_ml, tmp_path):
    from smneuron.serving.runtime import mark_ready, ready_workers

    release = threading.Event()
    runtime = runtime_for(opt_ml, request_deadline_s=1.0)
    runtime.handler.hooks["predict_fn"] = Hook(lambda data, model: release.wait(30), False, True)
    runtime.runtime_dir = tmp_path
    runtime.state = "ready"
    mark_ready(tmp_path, runtime.slot)
    exits: list[int] = []
    exited = threading.Event()
    runtime.watch(lambda code: (exits.append(code), exited.set()), interval_s=0.05)
    try:
        response, body = call(runtime, {"inputs": "hello"})
        assert response.status == 504 and body["type"] == "DeadlineExceeded"
        assert "SMNEURON_REQUEST_DEADLINE_S" in body["error"]
        assert exited.wait(30), "the stuck worker never asked to be replaced"
        assert exits == [70]
        assert ready_workers(tmp_path, 1) == 0  # /ping stops counting it at once
        assert "stuck" in runtime.health()[1]
    finally:
        release.set()
