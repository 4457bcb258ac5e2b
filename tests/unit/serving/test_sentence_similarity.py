"""Feature extraction and sentence similarity on a feature-extraction artifact, against the
eager Hugging Face encoder with the same pooling: embeddings in JSON, CSV and NPY, the
toolkit's ``{"inputs": {"source_sentence", "sentences"}}`` → ``{"similarities"}``, and the
400s that say what a similarity request must hold."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from smneuron.errors import SmneuronError
from smneuron.serving.handler import Handler, WorkerInfo
from smneuron.serving.settings import ServingSettings
from tinymodels import minilm_dir, tiny_model

SOURCE = "A man is playing a guitar."
SENTENCES = [
    "Someone is making music.",
    "A dog runs across a snowy field in the early morning light.",
    "The man plays an instrument.",
    "Stock prices fell sharply today.",
    "guitar",
]


def compiled_encoder(model_dir: Path, pooling: str) -> Path:
    """A tiny random-weight BertModel + the MiniLM tokenizer, compiled with ``pooling``."""
    import torch
    from transformers import AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    torch.set_num_threads(1)
    model = tiny_model("feature-extraction", max_positions=128)
    model.save_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    tokenizer.save_pretrained(model_dir)
    compile_artifact(
        model_dir,
        model,
        task="feature-extraction",
        labels=[],
        batch_sizes=(1, 2, 4),
        sequence_lengths=(16, 32),
        backend=CpuBackend(),
        pooling=pooling,
    )
    return model_dir


def eager_embeddings(model_dir: Path, texts: list[str], pooling: str):
    """What the Hugging Face encoder gives in-process, pooled as the graph pools, unit-length."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1)


@pytest.fixture(scope="module", params=["mean", "cls"])
def served(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"sim-{request.param}")
    model_dir = compiled_encoder(base / "model", request.param)
    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(base)})
    from smneuron.artifact.backends import CpuBackend

    handler = Handler.load(model_dir, WorkerInfo(0, None, settings, CpuBackend()))
    yield handler, model_dir, request.param
    handler.model.close()


def invoke(handler, body, accept=None):
    return handler.invoke(json.dumps(body).encode(), "application/json", accept)


def test_similarities_are_the_cosines_of_the_eager_embeddings(served):
    handler, model_dir, pooling = served
    body = {"inputs": {"source_sentence": SOURCE, "sentences": SENTENCES}}
    answer = json.loads(invoke(handler, body).body)
    assert list(answer) == ["similarities"]
    vectors = eager_embeddings(model_dir, [SOURCE, *SENTENCES], pooling)
    want = (vectors[1:] @ vectors[0]).tolist()
    assert answer["similarities"] == pytest.approx(want, abs=1e-4)


def test_a_similarity_request_runs_in_shared_batches(served):
    handler, _, _ = served
    prediction = handler.model.predict([SOURCE, *SENTENCES[:3]], similarity=True)
    assert len(prediction.results["similarities"]) == 3
    assert max(prediction.batch_sizes) > 1  # the source and candidates ran together


def test_embeddings_in_the_toolkits_inputs_form_equal_the_eager_ones(served):
    handler, model_dir, pooling = served
    want = eager_embeddings(model_dir, SENTENCES[:2], pooling).tolist()
    as_json = json.loads(invoke(handler, {"inputs": SENTENCES[:2]}).body)
    lone = json.loads(invoke(handler, {"inputs": SENTENCES[0], "parameters": {}}).body)
    assert len(as_json) == 2 and len(as_json[0]) == 32
    for got, expected in zip(as_json, want, strict=True):
        assert got == pytest.approx(expected, abs=1e-4)
    assert lone[0] == pytest.approx(want[0], abs=1e-4)


def test_embeddings_and_similarities_as_csv_and_npy(served):
    import numpy as np

    handler, _, _ = served
    vectors = json.loads(invoke(handler, {"inputs": SENTENCES[:2]}).body)
    npy = invoke(handler, {"inputs": SENTENCES[:2]}, "application/x-npy")
    assert npy.content_type == "application/x-npy"
    array = np.load(io.BytesIO(npy.body), allow_pickle=False)
    assert array.dtype == np.float32 and array.shape == (2, 32)
    assert np.allclose(array, np.asarray(vectors), atol=1e-6)
    rows = invoke(handler, {"inputs": SENTENCES[:2]}, "text/csv").body.decode().splitlines()
    assert [float(v) for v in rows[1].split(",")] == pytest.approx(vectors[1], abs=1e-6)

    body = {"inputs": {"source_sentence": SOURCE, "sentences": SENTENCES[:3]}}
    scores = json.loads(invoke(handler, body).body)["similarities"]
    csv_rows = invoke(handler, body, "text/csv").body.decode().splitlines()
    assert [float(row) for row in csv_rows] == pytest.approx(scores, abs=1e-6)
    npy_scores = np.load(io.BytesIO(invoke(handler, body, "application/x-npy").body))
    assert npy_scores.shape == (3,) and npy_scores.tolist() == pytest.approx(scores, abs=1e-6)


@pytest.mark.parametrize(
    "inputs, words",
    [
        ({"sentences": ["a", "b"]}, ['"source_sentence" must be a string', "nothing"]),
        ({"source_sentence": "a", "sentences": []}, ['"sentences" must be a non-empty', "list"]),
        ({"source_sentence": "a"}, ['"sentences" must be a non-empty list of strings']),
        ({"source_sentence": 3, "sentences": ["b"]}, ["source_sentence", "JSON number"]),
        ({"source_sentence": "a", "sentences": "b"}, ['"sentences" must be', "JSON string"]),
        ({"source_sentence": "a", "sentences": ["b", 2]}, ['"sentences"[1] must be a string']),
        (
            {"source_sentence": "a", "sentences": ["b"], "top_k": 1},
            ["unknown key(s) top_k", '{"source_sentence": string, "sentences": [string, ...]}'],
        ),
        ([{"source_sentence": "a", "sentences": ["b"]}], ["not a list of them"]),
    ],
)
def test_malformed_similarity_requests_are_400s_that_say_what_is_expected(served, inputs, words):
    handler, _, _ = served
    with pytest.raises(SmneuronError) as caught:
        invoke(handler, {"inputs": inputs})
    assert caught.value.status_code == 400
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_similarity_on_a_classifier_is_a_400_naming_the_artifact_it_needs(tmp_path, classifier_dir):
    from smneuron.artifact.backends import CpuBackend

    shutil.copytree(classifier_dir, tmp_path / "model")
    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    handler = Handler.load(tmp_path / "model", WorkerInfo(0, None, settings, CpuBackend()))
    try:
        with pytest.raises(SmneuronError) as caught:
            invoke(handler, {"inputs": {"source_sentence": "a", "sentences": ["b"]}})
        assert caught.value.status_code == 400
        assert "feature-extraction artifact" in str(caught.value)
    finally:
        handler.model.close()
