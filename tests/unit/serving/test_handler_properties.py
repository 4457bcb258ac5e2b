"""Property-based tests of the whole handler: any request is answered, never with a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smneuron.job import Paths
from smneuron.serving import codecs
from smneuron.serving.runtime import WorkerRuntime
from smneuron.serving.settings import ServingSettings

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CONTENT_TYPES = st.sampled_from([*codecs.DECODERS, None, "", "application/xml"]) | st.text(
    max_size=20
)
ACCEPTS = st.sampled_from(
    [None, "*/*", *codecs.ENCODERS, "text/*", "image/png", "application/json;q=0.1, text/csv"]
) | st.text(max_size=30)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@pytest.fixture(scope="module")
def runtime(classifier_dir) -> WorkerRuntime:
    loaded = WorkerRuntime(ServingSettings(paths=Paths(classifier_dir.parent)), None)
    loaded.load()
    return loaded


def answered(runtime, body, content_type, accept) -> int:
    response = runtime.invoke(body, content_type, accept)
    assert response.status in (200, 400, 406, 413, 415), response.body[:200]
    if response.status != 200:
        error = json.loads(response.body)
        assert error["code"] == response.status and error["error"]
        assert response.content_type == "application/json"
    else:
        assert response.content_type in codecs.ENCODERS
    return response.status


@PROPERTY
@given(body=st.binary(max_size=400), content_type=CONTENT_TYPES, accept=ACCEPTS)
def test_any_bytes_any_types_are_answered_without_a_5xx(runtime, body, content_type, accept):
    answered(runtime, body, content_type, accept)


@PROPERTY
@given(
    texts=st.lists(TEXT, min_size=1, max_size=6),
    top_k=st.none() | st.integers(1, 3),
    accept=st.sampled_from([None, "application/json", "application/jsonlines", "text/csv"]),
)
def test_valid_requests_get_one_answer_per_input(runtime, texts, top_k, accept):
    payload = {"inputs": texts, **({"parameters": {"top_k": top_k}} if top_k else {})}
    response = runtime.invoke(json.dumps(payload).encode(), "application/json", accept)
    assert response.status == 200
    body = response.body.decode()
    if accept in (None, "application/json"):
        results = json.loads(body)
    elif accept == "application/jsonlines":
        results = [json.loads(line) for line in body.splitlines()]
    else:
        results = body.rstrip("\n").split("\n")
    assert len(results) == len(texts)
