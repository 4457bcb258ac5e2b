"""Host integration: sentence similarity and embeddings through `serve` (nginx + gunicorn)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import requests
from hostserver import Server, require_nginx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder_dir):
    require_nginx()
    base = tmp_path_factory.mktemp("serve-similarity")
    shutil.copytree(embedder_dir, base / "model")
    running = Server("gunicorn", base, base / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


def post(server, body, accept=None):
    headers = {"Content-Type": "application/json", **({"Accept": accept} if accept else {})}
    return requests.post(
        server.url + "/invocations", data=json.dumps(body), headers=headers, timeout=60
    )


def test_similarities_agree_with_the_served_embeddings(server):
    import numpy as np

    sentences = ["a cat sits", "the weather is cold", "a kitten rests"]
    reply = post(server, {"inputs": {"source_sentence": "a cat", "sentences": sentences}})
    assert reply.status_code == 200, reply.text
    scores = reply.json()["similarities"]
    vectors = np.load(
        io.BytesIO(post(server, {"inputs": ["a cat", *sentences]}, "application/x-npy").content)
    )
    assert vectors.shape == (4, 32)
    assert scores == pytest.approx((vectors[1:] @ vectors[0]).tolist(), abs=1e-5)


def test_a_similarity_request_without_sentences_is_a_json_400(server):
    reply = post(server, {"inputs": {"source_sentence": "a cat", "sentences": []}})
    assert reply.status_code == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    assert '"sentences" must be a non-empty list of strings' in reply.json()["error"]
