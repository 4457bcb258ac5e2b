"""`smneuron compile` for causal-lm and seq2seq: CPU static limits, and the optimum-neuron
exports (fake)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinygen import save_tiny_causal_lm, tiny_seq2seq, tiny_tokenizer

from smneuron.artifact.backends import CpuBackend
from smneuron.artifact.generation import plan_limits
from smneuron.artifact.job import CompileHyperparameters, compile_checkpoint
from smneuron.artifact.manifest import read_manifest
from smneuron.errors import ArtifactError, ConfigurationError

FAKE_OPTIMUM = Path(__file__).resolve().parents[1] / "resources" / "fake_optimum"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("ckpt") / "gpt2")


def test_cpu_compile_records_the_static_limits_and_serves(checkpoint, tmp_path):
    from smneuron.serving.generation import load_generation

    settings = CompileHyperparameters(
        backend="cpu", batch_size=3, sequence_lengths=(8, 16), max_total_length=48
    )
    manifest = compile_checkpoint(checkpoint, tmp_path / "out", settings, backend=CpuBackend())
    assert manifest.task == "causal-lm"  # from GPT2LMHeadModel
    assert read_manifest(tmp_path / "out") == manifest
    assert (manifest.batch_size, manifest.batch_sizes) == (3, (3,))
    assert manifest.sequence_lengths == (8, 16)
    assert manifest.task_parameters == {"max_total_length": 48, "engine": "transformers"}
    model = load_generation(tmp_path / "out", CpuBackend())
    try:
        answer = model.predict(["hello"], {"max_new_tokens": 3}, single=True).results
        assert answer[0]["generated_text"].startswith("hello")
    finally:
        model.close()


@pytest.mark.parametrize(
    ("buckets", "total", "message"),
    [
        ((16, 64), 64, "no room to generate"),
        ((16,), 200, "above the model's 128 positions"),
        ((0, 16), None, "must be ≥ 1"),
    ],
)
def test_limits_that_cannot_hold_are_refused(buckets, total, message):
    with pytest.raises(ConfigurationError, match=message):
        plan_limits(buckets, total, {"n_positions": 128})


def test_default_total_is_twice_the_largest_bucket_capped_by_the_positions():
    assert plan_limits((16, 32), None, {"n_positions": 128}) == ((16, 32), 64)
    assert plan_limits((16, 100), None, {"n_positions": 128}) == ((16, 100), 128)


class FakeNeuronBackend:
    name = "neuron"

    def versions(self):
        return {"torch_neuronx": "2.9.0.2.13", "neuronx_cc": "2.24.8799.0", "torch": "2.9.0"}

    def target(self):
        return "inf2"


@pytest.fixture
def optimum_calls(tmp_path, monkeypatch):
    """The fake optimum.neuron importable; the file its calls are recorded in."""
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_OPTIMUM_CALLS", str(calls))
    monkeypatch.syspath_prepend(str(FAKE_OPTIMUM))
    for name in ("optimum", "optimum.neuron", "optimum.neuron.version"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    return calls


def test_neuron_export_calls_optimum_neuron_with_its_names_and_records_versions(
    checkpoint, tmp_path, optimum_calls
):
    calls = optimum_calls
    settings = CompileHyperparameters(
        backend="neuron",
        batch_size=4,
        sequence_lengths=(32, 64),
        max_total_length=128,
        num_cores=2,
        auto_cast_type="fp16",
    )
    out = tmp_path / "out"
    manifest = compile_checkpoint(checkpoint, out, settings, backend=FakeNeuronBackend())
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded[0] == {
        "call": "from_pretrained",
        "model_id": str(out),
        "export": True,
        "batch_size": 4,
        "sequence_length": 128,
        "num_cores": 2,
        "auto_cast_type": "fp16",
    }
    assert recorded[1] == {
        "call": "save_pretrained",
        "save_directory": str(out / "compiled/neuron"),
    }
    assert manifest.backend == "neuron" and manifest.target == "inf2"
    assert manifest.versions["optimum_neuron"] == "0.0.28"
    assert manifest.versions["neuronx_cc"] == "2.24.8799.0"
    assert manifest.cores_per_model == 2
    assert manifest.task_parameters == {
        "max_total_length": 128,
        "engine": "optimum-neuron",
        "num_cores": 2,
        "auto_cast_type": "fp16",
    }
    assert manifest.files == {"checkpoint": ".", "neuron": "compiled/neuron"}
    assert (out / "compiled/neuron/config.json").is_file()


def test_neuron_export_without_optimum_neuron_says_what_to_install(
    checkpoint, tmp_path, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "optimum", None)
    monkeypatch.setitem(sys.modules, "optimum.neuron", None)
    settings = CompileHyperparameters(backend="neuron", sequence_lengths=(32,))
    with pytest.raises(ArtifactError, match="no optimum-neuron"):
        compile_checkpoint(checkpoint, tmp_path / "out", settings, backend=FakeNeuronBackend())


@pytest.fixture(scope="module")
def t5_checkpoint(tmp_path_factory):
    target = tmp_path_factory.mktemp("ckpt") / "t5"
    tokenizer = tiny_tokenizer()
    tiny_seq2seq(tokenizer).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.mark.parametrize(
    ("buckets", "total", "cast", "length", "auto_cast"),
    [
        ((16, 32), 12, "fp16", 32, "matmul"),  # the encoder's largest prompt is the longer
        ((8,), 20, "f32", 21, None),  # the decoder's start token + 20 new tokens
    ],
)
def test_seq2seq_neuron_export_traces_one_length_for_encoder_and_decoder(
    t5_checkpoint, tmp_path, optimum_calls, buckets, total, cast, length, auto_cast
):
    settings = CompileHyperparameters(
        backend="neuron",
        batch_size=2,
        sequence_lengths=buckets,
        max_total_length=total,
        num_cores=2,
        auto_cast_type=cast,
    )
    out = tmp_path / "out"
    manifest = compile_checkpoint(t5_checkpoint, out, settings, backend=FakeNeuronBackend())
    recorded = [json.loads(line) for line in optimum_calls.read_text().splitlines()]
    assert recorded == [
        {
            "call": "from_pretrained",
            "class": "NeuronModelForSeq2SeqLM",
            "model_id": str(out),
            "export": True,
            "batch_size": 2,
            "sequence_length": length,
            "num_beams": 1,
            "auto_cast": auto_cast,
            "auto_cast_type": cast if auto_cast else None,
            "tensor_parallel_size": 2,
            "dynamic_batch_size": False,
        },
        {"call": "save_pretrained", "save_directory": str(out / "compiled/neuron")},
    ]
    assert (manifest.task, manifest.backend, manifest.target) == ("seq2seq", "neuron", "inf2")
    assert (manifest.batch_size, manifest.sequence_lengths) == (2, buckets)
    assert manifest.cores_per_model == 2
    assert manifest.versions["optimum_neuron"] == "0.0.28"
    assert manifest.task_parameters == {
        "max_total_length": total,
        "engine": "optimum-neuron",
        "num_cores": 2,
        "auto_cast_type": cast,
        "sequence_length": length,
        "num_beams": 1,
    }
    assert read_manifest(out) == manifest
    assert manifest.files == {"checkpoint": ".", "neuron": "compiled/neuron"}
    for part in ("encoder", "decoder"):
        assert (out / "compiled/neuron" / part / "config.json").is_file()


def test_seq2seq_neuron_export_past_the_model_positions_is_refused(tmp_path, optimum_calls):
    import transformers

    tokenizer = tiny_tokenizer()
    config = transformers.BartConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    checkpoint = tmp_path / "bart"
    transformers.BartForConditionalGeneration(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    settings = CompileHyperparameters(backend="neuron", sequence_lengths=(16,), max_total_length=32)
    with pytest.raises(ConfigurationError, match="33 .* above the model's 32 positions"):
        compile_checkpoint(checkpoint, tmp_path / "out", settings, backend=FakeNeuronBackend())
    assert not optimum_calls.exists()  # refused before any export


def test_seq2seq_neuron_export_without_optimum_neuron_says_what_to_install(
    t5_checkpoint, tmp_path, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "optimum", None)
    monkeypatch.setitem(sys.modules, "optimum.neuron", None)
    settings = CompileHyperparameters(backend="neuron", sequence_lengths=(16,))
    with pytest.raises(ArtifactError, match="exporting a seq2seq for Neuron needs"):
        compile_checkpoint(t5_checkpoint, tmp_path / "out", settings, backend=FakeNeuronBackend())
