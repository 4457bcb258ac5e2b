"""Handler resolution with real inference.py files, the default pipeline, and the boundary."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from servingfixtures import LABELS, RESOURCES, with_handler
from smneuron.artifact.backends import CpuBackend
from smneuron.errors import ArtifactError
from smneuron.job import Paths
from smneuron.serving.handler import (
    Handler,
    WorkerInfo,
    import_user_module,
    resolve_hooks,
    takes_context,
)
from smneuron.serving.runtime import WorkerRuntime
from smneuron.serving.settings import ServingSettings

HANDLERS = Path(__file__).resolve().parents[3] / "handlers"


def worker(base: Path, **overrides) -> WorkerInfo:
    settings = ServingSettings(paths=Paths(base), **overrides)
    return WorkerInfo(index=3, cores=None, settings=settings, backend=CpuBackend())


def code_dir(tmp_path: Path, name: str) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(RESOURCES / f"{name}.py", code / "inference.py")
    return code


def test_context_passed_only_where_the_signature_takes_it(tmp_path):
    hooks = resolve_hooks(import_user_module(code_dir(tmp_path, "with_context")))
    assert hooks["predict_fn"].user and hooks["predict_fn"].with_context
    assert hooks["output_fn"].user and not hooks["output_fn"].with_context
    assert not hooks["input_fn"].user and hooks["input_fn"].with_context


def test_takes_context_rules():
    assert takes_context(lambda data, content_type, context: None, 2)
    assert takes_context(lambda data, content_type, ctx: None, 2)
    assert takes_context(lambda *args: None, 2)
    assert not takes_context(lambda data, content_type: None, 2)


def test_transform_fn_alone_is_accepted(tmp_path):
    hooks = resolve_hooks(import_user_module(code_dir(tmp_path, "transform")))
    assert hooks["transform_fn"].user and not hooks["transform_fn"].with_context


def test_transform_fn_mixed_with_input_fn_is_a_startup_error(tmp_path):
    module = import_user_module(code_dir(tmp_path, "mixed"))
    with pytest.raises(ArtifactError, match="transform_fn together with input_fn"):
        resolve_hooks(module)


def test_broken_user_module_names_the_file(tmp_path):
    with pytest.raises(ArtifactError, match="inference.py failed to import.*cannot be imported"):
        import_user_module(code_dir(tmp_path, "broken_import"))


def test_no_user_code_means_defaults(tmp_path):
    assert import_user_module(tmp_path / "code") is None
    assert not any(hook.user for hook in resolve_hooks(None).values())


def test_default_pipeline_matches_the_eager_model(opt_ml, eager_classifier):
    handler = Handler.load(opt_ml / "model", worker(opt_ml))
    texts = ["win a free cruise now", "see you at lunch tomorrow", "x " * 200]
    response = handler.invoke(json.dumps({"inputs": texts}).encode(), "application/json", None)
    got = json.loads(response.body)
    want = eager_classifier(texts[:2])
    assert [g["label"] for g in got[:2]] == [w["label"] for w in want]
    for g, w in zip(got[:2], want, strict=True):
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)
    assert got[2]["label"] in LABELS  # longer than the largest bucket: truncated by default


def test_top_k_and_csv_accept(opt_ml):
    handler = Handler.load(opt_ml / "model", worker(opt_ml))
    body = json.dumps({"inputs": "hello", "parameters": {"top_k": 2}}).encode()
    # A lone string with top_k: the ranked list itself, as the Hugging Face pipeline answers.
    ranked = json.loads(handler.invoke(body, "application/json", None).body)
    assert sorted(entry["label"] for entry in ranked) == sorted(LABELS)
    assert ranked[0]["score"] >= ranked[1]["score"]
    assert sum(entry["score"] for entry in ranked) == pytest.approx(1.0)
    csv = handler.invoke(b"hello", "text/plain", "text/csv")
    assert csv.content_type == "text/csv"
    assert csv.body.decode().split(",")[0] in LABELS


def test_embeddings(tmp_path, embedder_dir):
    shutil.copytree(embedder_dir, tmp_path / "model")
    handler = Handler.load(tmp_path / "model", worker(tmp_path))
    vectors = json.loads(handler.invoke(b'["a", "b c"]', "application/json", None).body)
    assert len(vectors) == 2 and len(vectors[0]) == 32
    assert sum(v * v for v in vectors[0]) == pytest.approx(1.0, abs=1e-4)


def test_user_hooks_get_request_context(opt_ml):
    with_handler(opt_ml, "with_context")
    handler = Handler.load(opt_ml / "model", worker(opt_ml))
    response = handler.invoke(b'{"inputs": "hi"}', "application/json", None, "trace=7")
    data = json.loads(response.body)
    assert data["worker"] == 3
    assert data["attributes"] == "trace=7"
    assert data["content_type"] == "application/json"
    assert data["results"][0]["label"] in LABELS


def test_transform_fn_gets_raw_bytes(opt_ml):
    with_handler(opt_ml, "transform")
    handler = Handler.load(opt_ml / "model", worker(opt_ml))
    response = handler.invoke(b"abcd", "text/plain", "*/*")
    assert (response.body, response.content_type) == (b"4,text/plain,application/json", "text/csv")


def test_overflow_reject_is_413(opt_ml):
    handler = Handler.load(opt_ml / "model", worker(opt_ml, overflow="reject"))
    runtime = WorkerRuntime(handler.worker.settings, None)
    runtime.handler = handler
    response = runtime.invoke(json.dumps({"inputs": "word " * 100}).encode(), None, None)
    assert response.status == 413
    assert "largest compiled sequence length 64" in json.loads(response.body)["error"]


def test_error_boundary_hides_internals(opt_ml, caplog):
    with_handler(opt_ml, "integration")
    (opt_ml / "model" / "code" / "inference.py").write_text(
        (RESOURCES / "integration.py").read_text().replace("LOAD_DELAY_S = 3.0", "LOAD_DELAY_S = 0")
    )
    runtime = WorkerRuntime(ServingSettings(paths=Paths(opt_ml)), None)
    assert runtime.invoke(b'"x"', None, None).status == 503  # not loaded yet
    runtime.load()
    with caplog.at_level(logging.ERROR):
        response = runtime.invoke(b'{"inputs": "x", "parameters": {"raise": true}}', None, None)
    body = json.loads(response.body)
    assert response.status == 500
    assert body["type"] == "ServerError" and body["code"] == 500
    assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()
    assert "secret internal detail" in caplog.text  # the trace goes to the log
    for status, args in [
        (400, (b"{broken", "application/json", None)),
        (415, (b"x", "image/png", None)),
        (406, (b'"x"', "application/json", "image/png")),
    ]:
        response = runtime.invoke(*args)
        assert response.status == status
        assert json.loads(response.body)["code"] == status


def test_example_handlers(opt_ml):
    code = opt_ml / "model" / "code"
    code.mkdir()
    shutil.copy(HANDLERS / "all_scores" / "inference.py", code / "inference.py")
    handler = Handler.load(opt_ml / "model", worker(opt_ml))
    ranked = json.loads(handler.invoke(b'{"inputs": ["a", "b"]}', None, None).body)
    assert [len(entry) for entry in ranked] == [2, 2]

    shutil.copy(HANDLERS / "csv_io" / "inference.py", code / "inference.py")
    handler = Handler.load(opt_ml / "model", worker(opt_ml))
    response = handler.invoke(b'text\nhello there\n"a, b"\n', "text/csv", "text/csv")
    rows = response.body.decode().splitlines()
    assert response.content_type == "text/csv"
    assert [row.split(",")[0] for row in rows] == ["hello there", '"a']
    assert rows[0].split(",")[1] in LABELS
