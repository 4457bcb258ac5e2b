"""``smneuron compile``: a real CPU compile, the Neuron path on the fake, and SageMaker-job mode."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from smneuron.artifact import job as compile_job  # noqa: E402
from smneuron.artifact.backends import CpuBackend  # noqa: E402
from smneuron.artifact.manifest import check_files, read_manifest  # noqa: E402
from smneuron.tools import cli  # noqa: E402
from smneuron.versions import package_version  # noqa: E402
from tinymodels import save_tiny_model  # noqa: E402

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"
PINNED = {"torch-neuronx": "2.9.0.2.13.26312+8e870898", "neuronx-cc": "2.24.8799.0+6f62ff7c"}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random-weight spam classifier saved like a training job's model folder."""
    return save_tiny_model(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture
def fake_torch_neuronx(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE / "torch-neuronx"))
    monkeypatch.delitem(sys.modules, "torch_neuronx", raising=False)
    monkeypatch.setattr(
        "smneuron.neuron.backend.package_version",
        lambda dist: PINNED.get(dist) or package_version(dist),
    )
    import torch_neuronx

    torch_neuronx.CALLS.clear()
    yield torch_neuronx
    sys.modules.pop("torch_neuronx", None)


def test_cpu_compile_produces_a_servable_artifact(checkpoint, tmp_path, capsys):
    out = tmp_path / "artifact"
    code = cli.main(
        [
            "compile",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(out),
            "--backend",
            "cpu",
            "--batch-size",
            "2",
            "--sequence-lengths",
            "32,16",
        ]
    )
    assert code == 0
    manifest = read_manifest(out)
    assert json.loads(capsys.readouterr().out)["backend"] == "cpu"
    assert manifest.task == "text-classification"
    assert manifest.labels == ("ham", "spam")
    assert manifest.sequence_lengths == (16, 32)
    assert manifest.batch_size == 2
    check_files(out, manifest)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (out / name).is_file(), name

    # The artifact answers like the fine-tuned model, through its own tokenizer.
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    batch = tokenizer(
        ["win a free prize now", "see you at lunch"],
        padding="max_length",
        max_length=16,
        truncation=True,
        return_tensors="pt",
    )
    graph = CpuBackend().load(manifest.graph_path(out, 16))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
    with torch.no_grad():
        expected = model(**batch).logits
        got = graph(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert torch.allclose(got, expected, atol=1e-4)


def test_cpu_compile_takes_the_batch_sizes_flag(checkpoint, tmp_path):
    out = tmp_path / "bucketed"
    argv = ["compile", "--checkpoint", str(checkpoint), "--output", str(out), "--backend", "cpu"]
    flags = ["--batch-size", "4", "--batch-sizes", "1,8", "--sequence-lengths", "16"]
    assert cli.main(argv + flags) == 0
    manifest = read_manifest(out)
    assert manifest.batch_sizes == (1, 4)  # 8 is above --batch-size: dropped
    assert sorted(p.name for p in (out / "compiled").glob("*.pt")) == ["b1-seq16.pt", "b4-seq16.pt"]


def test_neuron_compile_traces_each_batch_size_and_bucket_with_the_compiler_args(
    checkpoint, tmp_path, fake_torch_neuronx
):
    out = tmp_path / "neuron-artifact"
    code = cli.main(
        [
            "compile",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(out),
            "--backend",
            "neuron",
            "--batch-size",
            "4",
            "--sequence-lengths",
            "32,64,128",
            "--compiler-args",
            "--auto-cast all --auto-cast-type bf16 --target inf2",
        ]
    )
    assert code == 0
    traces = [call for call in fake_torch_neuronx.CALLS if call["call"] == "trace"]
    # The default smaller sizes 1, 2 (up to --batch-size 4) and 4: one trace per pair.
    pairs = [[batch, length] for batch in (1, 2, 4) for length in (32, 64, 128)]
    assert [call["shapes"][0] for call in traces] == pairs
    assert all(call["shapes"][1] == call["shapes"][0] for call in traces)
    expected_args = ["--auto-cast", "all", "--auto-cast-type", "bf16", "--target", "inf2"]
    assert all(call["compiler_args"] == expected_args for call in traces)
    manifest = read_manifest(out)
    assert manifest.backend == "neuron" and manifest.target == "inf2"
    assert manifest.versions["torch_neuronx"] == "2.9.0.2.13.26312+8e870898"
    assert manifest.versions["neuronx_cc"] == "2.24.8799.0+6f62ff7c"
    assert list(manifest.compiler_args) == expected_args
    assert manifest.batch_sizes == (1, 2, 4) and manifest.batch_size == 4
    check_files(out, manifest)


def test_neuron_compile_defaults_to_bf16_matmult_autocast(checkpoint, tmp_path, fake_torch_neuronx):
    settings = compile_job.CompileHyperparameters(backend="neuron", sequence_lengths=(16,))
    manifest = compile_job.compile_checkpoint(
        checkpoint, tmp_path / "out", settings, backend=compile_job.resolve_backend("neuron")
    )
    trace = next(call for call in fake_torch_neuronx.CALLS if call["call"] == "trace")
    # No Neuron device here: the CPU backend, for the default target inf2, recorded as such.
    expected = ["--auto-cast", "matmult", "--auto-cast-type", "bf16", "--target", "inf2"]
    assert trace["compiler_args"] == expected and trace["cpu_backend"] is True
    assert trace["shapes"] == [[1, 16]] * 3  # ids, mask, token types
    assert list(manifest.compiler_args) == expected and manifest.target == "inf2"


@pytest.mark.parametrize("target", ["inf2", "trn1", "trn2"])
def test_neuron_compile_for_a_target_on_a_host_without_devices(
    checkpoint, tmp_path, fake_torch_neuronx, target
):
    out = tmp_path / f"for-{target}"
    code = cli.main(
        [
            "compile",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(out),
            "--backend",
            "neuron",
            "--target",
            target,
            "--batch-size",
            "1",
            "--sequence-lengths",
            "16",
        ]
    )
    assert code == 0
    (trace,) = [call for call in fake_torch_neuronx.CALLS if call["call"] == "trace"]
    assert trace["cpu_backend"] is True and trace["compiler_args"][-2:] == ["--target", target]
    manifest = read_manifest(out)
    assert manifest.target == target
    assert list(manifest.compiler_args) == trace["compiler_args"]


def test_more_than_one_core_per_model_is_refused_with_the_reason(checkpoint, tmp_path):
    from smneuron.errors import ConfigurationError
    from smneuron.training.hyperparameters import load

    settings = compile_job.CompileHyperparameters(backend="cpu", cores_per_model=2)
    with pytest.raises(ConfigurationError, match="a traced model runs on one NeuronCore"):
        compile_job.compile_checkpoint(checkpoint, tmp_path / "out", settings, backend=CpuBackend())
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigurationError, match="cores_per_model=2: a traced model runs on one"):
        load({"cores_per_model": "2"})


def write_job(base: Path, hyperparameters: dict, checkpoint: Path | None) -> None:
    config = base / "input" / "config"
    config.mkdir(parents=True)
    encoded = {key: json.dumps(value) for key, value in hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(encoded))
    (config / "inputdataconfig.json").write_text(json.dumps({"checkpoint": {}}))
    channel = base / "input" / "data" / "checkpoint"
    channel.mkdir(parents=True)
    if checkpoint is not None:  # what a training job leaves in S3: model.tar.gz
        with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
            for item in checkpoint.iterdir():
                tar.add(item, arcname=item.name)


def test_sagemaker_job_mode_reads_the_channel_and_writes_opt_ml_model(
    checkpoint, tmp_path, monkeypatch
):
    base = tmp_path / "opt" / "ml"
    write_job(
        base,
        {"backend": "cpu", "sequence_lengths": "16", "batch_size": 1, "sagemaker_region": "x"},
        checkpoint,
    )
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    assert cli.main(["compile"]) == 0
    manifest = read_manifest(base / "model")
    assert manifest.sequence_lengths == (16,) and manifest.labels == ("ham", "spam")
    assert (base / "model" / "tokenizer.json").is_file()
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()


def test_sagemaker_job_mode_reports_a_bad_hyperparameter(checkpoint, tmp_path, monkeypatch):
    base = tmp_path / "ml"
    write_job(base, {"backend": "gpu"}, checkpoint)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    assert cli.main(["compile"]) == 1
    failure = (base / "output" / "failure").read_text()
    assert "backend: 'gpu' is not one of: auto, cpu, neuron" in failure
    assert "Traceback" not in failure


def test_sagemaker_job_mode_without_a_checkpoint(tmp_path, monkeypatch):
    base = tmp_path / "ml"
    write_job(base, {"backend": "cpu"}, None)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    assert cli.main(["compile"]) == 1
    assert "no config.json" in (base / "output" / "failure").read_text()


def test_bucket_above_the_model_limit_is_refused(checkpoint, tmp_path, capsys):
    code = cli.main(
        ["compile", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "o")]
        + ["--backend", "cpu", "--sequence-lengths", "64,512"]
    )
    assert code == 1
    assert "above the model's max_position_embeddings 256" in capsys.readouterr().err


def test_task_comes_from_the_architecture():
    assert compile_job.task_from_config({"architectures": ["BertForTokenClassification"]}) == (
        "token-classification"
    )
    assert compile_job.task_from_config({"architectures": ["BertModel"]}) == "feature-extraction"
    assert compile_job.labels_from_config({"id2label": {"1": "b", "0": "a", "10": "k"}}) == (
        "a",
        "b",
        "k",
    )


def test_a_token_classification_checkpoint_compiles_to_per_token_logits(tmp_path):
    labels = ("O", "B-PER", "I-PER")
    checkpoint = save_tiny_model(tmp_path / "ner", "token-classification", labels)
    out = tmp_path / "artifact"
    assert cli.main(["compile", "--checkpoint", str(checkpoint), "--output", str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest.task == "token-classification"  # from BertForTokenClassification
    assert manifest.labels == labels
    assert manifest.input_names == ("input_ids", "attention_mask")
    graph = CpuBackend().load(manifest.graph_path(out, 32))
    ids = torch.ones((1, 32), dtype=torch.long)
    assert tuple(graph(ids, torch.ones_like(ids)).shape) == (1, 32, len(labels))


def test_a_question_answering_checkpoint_compiles_to_start_and_end_logits(tmp_path):
    checkpoint = save_tiny_model(tmp_path / "qa", "question-answering")
    out = tmp_path / "artifact"
    flags = ["--sequence-lengths", "32,64", "--batch-sizes", "1", "--batch-size", "2"]
    assert (
        cli.main(
            ["compile", "--checkpoint", str(checkpoint), "--output", str(out), *flags]
            + ["--doc-stride", "48"]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert manifest.task == "question-answering"  # from BertForQuestionAnswering
    assert manifest.labels == ()
    assert manifest.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert manifest.task_parameters == {"doc_stride": 32}  # at most half the largest bucket
    graph = CpuBackend().load(manifest.graph_path(out, 32, 2))
    ids = torch.ones((2, 32), dtype=torch.long)
    assert tuple(graph(ids, torch.ones_like(ids), torch.zeros_like(ids)).shape) == (2, 32, 2)
    default = tmp_path / "default"
    assert cli.main(["compile", "--checkpoint", str(checkpoint), "--output", str(default)]) == 0
    assert read_manifest(default).task_parameters == {"doc_stride": 64}  # buckets up to 128
