"""The override contract as users write it: natural input_fn results, hooks that raise."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from servingfixtures import LABELS, with_handler
from smneuron.errors import HTTPError
from smneuron.job import Paths
from smneuron.serving.runtime import WorkerRuntime
from smneuron.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, classifier_dir):
    """loaded(name): a WorkerRuntime with tests/resources/handlers/<name>.py, loaded once."""
    runtimes: dict[str, WorkerRuntime] = {}

    def load(name: str) -> WorkerRuntime:
        if name not in runtimes:
            base = tmp_path_factory.mktemp(name)
            shutil.copytree(classifier_dir, base / "model")
            with_handler(base, name)
            runtimes[name] = WorkerRuntime(ServingSettings(paths=Paths(base)), None)
            runtimes[name].load()
        return runtimes[name]

    return load


def answer(runtime, body, content_type="application/json", accept=None):
    response = runtime.invoke(body, content_type, accept)
    return response.status, json.loads(response.body)


def test_hugging_face_style_input_fn_dict_with_parameters(loaded):
    runtime = loaded("hf_style")
    status, body = answer(runtime, b'{"inputs": "win money", "parameters": {"top_k": 2}}')
    assert status == 200
    assert sorted(entry["label"] for entry in body) == sorted(LABELS)  # lone input: flat
    status, body = answer(runtime, b'{"inputs": ["a", "b"]}')
    assert status == 200 and [entry["label"] in LABELS for entry in body] == [True, True]


def test_input_fn_returning_a_string_or_a_list_of_strings(loaded):
    runtime = loaded("natural_inputs")
    status, body = answer(runtime, b"just one text", "text/plain")
    assert status == 200 and len(body) == 1 and body[0]["label"] in LABELS
    status, body = answer(runtime, b"first\nsecond\nthird\n", "text/csv")
    assert status == 200 and len(body) == 3


def test_input_fn_returning_another_type_is_a_500_whose_log_names_the_accepted_types(
    loaded, caplog
):
    runtime = loaded("natural_inputs")
    with caplog.at_level(logging.ERROR):
        status, body = answer(runtime, b"abc", "application/x-count")
    assert status == 500
    assert "got a value of type int from input_fn" in caplog.text
    for accepted in ("a str", "a list of str", '{"inputs"', "Inputs"):
        assert accepted in caplog.text


def test_exception_in_input_fn_is_a_400_with_its_message(loaded, caplog):
    runtime = loaded("natural_inputs")
    with caplog.at_level(logging.INFO):
        status, body = answer(runtime, b"<a/>", "application/xml")
    assert status == 400
    assert body["error"] == "this endpoint reads text/plain or text/csv, not application/xml"
    runtime = loaded("raising_hooks")
    status, body = answer(runtime, b"bad input")
    assert (status, body["error"]) == (400, "the body must be JSON with an 'inputs' field")


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        ("unprocessable", 422, "inputs must be at least two words"),
        ("slow down", 429, "too many requests from this tenant"),
    ],
)
def test_a_hook_chooses_its_4xx(loaded, text, status, message):
    runtime = loaded("raising_hooks")
    got, body = answer(runtime, json.dumps({"inputs": text}).encode())
    assert (got, body["code"], body["error"]) == (status, status, message)


@pytest.mark.parametrize("text", ["boom", "boom-output"])
def test_exception_in_predict_fn_or_output_fn_is_a_500_without_details(loaded, text, caplog):
    runtime = loaded("raising_hooks")
    with caplog.at_level(logging.ERROR):
        status, body = answer(runtime, json.dumps({"inputs": text}).encode())
    assert status == 500 and body["code"] == 500
    assert "secret" not in json.dumps(body)
    assert "secret detail" in caplog.text  # the trace is in the log
    status, _ = answer(runtime, b'{"inputs": "fine"}')
    assert status == 200  # the worker keeps serving


def test_http_error_takes_only_error_statuses():
    assert HTTPError(404, "no such thing").to_dict() == {
        "error": "no such thing",
        "type": "HTTPError",
        "code": 404,
    }
    assert HTTPError(404, "x").client_error and not HTTPError(503, "x").client_error
    with pytest.raises(ValueError):
        HTTPError(200, "fine")
