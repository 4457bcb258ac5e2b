"""A served artifact with batch sizes 1, 2, 4, 8: a lone request runs on the batch-1 graph."""

from __future__ import annotations

import json
import time

import pytest
import requests
from hostserver import Server, require_nginx

from servingfixtures import LABELS

pytestmark = pytest.mark.slow

SIZES = (1, 2, 4, 8)
BUCKETS = (16, 32)


@pytest.fixture(scope="module")
def bucketed_dir(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact
    from tinymodels import minilm_dir, tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bucketed") / "model"
    model = tiny_model("text-classification", LABELS, max_positions=64)
    model.save_pretrained(root)
    AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True).save_pretrained(root)
    compile_artifact(
        root,
        model,
        task="text-classification",
        labels=LABELS,
        batch_sizes=SIZES,
        sequence_lengths=BUCKETS,
        backend=CpuBackend(),
    )
    return root


@pytest.fixture(scope="module", params=["gunicorn", "mms"])
def server(request, tmp_path_factory, bucketed_dir):
    import shutil

    require_nginx()
    base = tmp_path_factory.mktemp(f"buckets-{request.param}")
    shutil.copytree(bucketed_dir, base / "model")
    running = Server(request.param, base, base / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


def invocations(server) -> list[dict]:
    return [
        json.loads(line)
        for line in server.log_text().splitlines()
        if '"message": "invocation"' in line
    ]


def post_and_log(server, payload) -> tuple[requests.Response, dict]:
    before = len(invocations(server))
    reply = requests.post(
        server.url + "/invocations",
        data=json.dumps(payload),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    for _ in range(50):  # the worker's log line may land just after the answer
        lines = invocations(server)
        if len(lines) > before:
            return reply, lines[before]
        time.sleep(0.1)
    raise AssertionError("no invocation log line: " + server.log_text()[-2000:])


def batch8_reference(model_dir, text: str) -> dict:
    """The same text through the batch-8 graph, padded with seven empty rows."""
    import torch
    from transformers import AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.serving.shapes import choose_bucket, pad_row

    manifest = read_manifest(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer(text)["input_ids"]
    bucket = choose_bucket(len(ids), manifest.sequence_lengths)
    row_ids, row_mask = pad_row(ids, bucket, tokenizer.pad_token_id)
    graph = CpuBackend().load(manifest.graph_path(model_dir, bucket, 8))
    pad_ids, pad_mask = [tokenizer.pad_token_id] * bucket, [0] * bucket
    inputs = [
        torch.tensor([row_ids] + [pad_ids] * 7),
        torch.tensor([row_mask] + [pad_mask] * 7),
    ]
    if "token_type_ids" in manifest.input_names:  # BERT-style: one segment, all zeros
        inputs.append(torch.zeros_like(inputs[0]))
    with torch.no_grad():
        logits = graph(*inputs)[0]
    probs = torch.softmax(logits, -1)
    best = int(probs.argmax())
    return {"label": LABELS[best], "score": float(probs[best])}


def test_the_manifest_lists_every_batch_size(bucketed_dir):
    from smneuron.artifact.manifest import read_manifest

    manifest = read_manifest(bucketed_dir)
    assert manifest.batch_sizes == SIZES
    assert len(list((bucketed_dir / "compiled").glob("*.pt"))) == len(SIZES) * len(BUCKETS)


def test_a_single_request_runs_on_the_batch_1_graph_with_the_batch_8_answer(server, bucketed_dir):
    text = "congratulations, you won a free cruise"
    reply, logged = post_and_log(server, {"inputs": text})
    assert reply.status_code == 200, reply.text
    assert logged["graph_batches"] == [1] and logged["batch_sizes"] == [1]
    got = reply.json()[0]
    want = batch8_reference(bucketed_dir, text)
    assert got["label"] == want["label"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_three_inputs_of_one_bucket_run_on_the_batch_4_graph(server):
    reply, logged = post_and_log(server, {"inputs": ["ok", "see you", "free prize"]})
    assert reply.status_code == 200, reply.text
    assert logged["graph_batches"] == [4, 4, 4]
