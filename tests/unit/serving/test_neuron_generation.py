"""Serving Neuron generation artifacts (optimum-neuron's NeuronModelForCausalLM and
NeuronModelForSeq2SeqLM, faked): one ``generate`` per loop at the compiled shapes, answers equal
to Hugging Face generate, streamed token by token through the stopping criterion."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from tinygen import (
    reference_seq2seq,
    reference_text,
    save_tiny_causal_lm,
    tiny_causal_lm,
    tiny_seq2seq,
    tiny_tokenizer,
)

from smneuron.artifact.job import CompileHyperparameters, compile_checkpoint
from smneuron.errors import ClientError, PayloadTooLarge
from smneuron.serving.generation import load_generation
from smneuron.serving.model import Limits

FAKE_OPTIMUM = Path(__file__).resolve().parents[2] / "resources" / "fake_optimum"
PROMPTS = ["the cat sat on the", "a quick brown fox jumps"]


class FakeNeuronBackend:
    name = "neuron"

    def versions(self):
        return {"torch_neuronx": "2.9.0.2.13", "neuronx_cc": "2.24.8799.0", "torch": "2.9.0"}

    def target(self):
        return "inf2"


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """The fake optimum.neuron importable for this module; the file of its calls."""
    recorded = tmp_path_factory.mktemp("calls") / "calls.jsonl"
    patch = pytest.MonkeyPatch()
    patch.setenv("FAKE_OPTIMUM_CALLS", str(recorded))
    patch.syspath_prepend(str(FAKE_OPTIMUM))
    for name in ("optimum", "optimum.neuron", "optimum.neuron.version"):
        patch.delitem(sys.modules, name, raising=False)
    yield recorded
    patch.undo()
    for name in ("optimum", "optimum.neuron", "optimum.neuron.version"):
        sys.modules.pop(name, None)


def recorded(calls: Path, name: str) -> list[dict]:
    lines = calls.read_text().splitlines() if calls.exists() else []
    return [entry for entry in map(json.loads, lines) if entry["call"] == name]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, calls):
    root = tmp_path_factory.mktemp("neuron-gen")
    settings = CompileHyperparameters(
        backend="neuron", batch_size=2, sequence_lengths=(8, 16), max_total_length=40
    )
    compile_checkpoint(
        save_tiny_causal_lm(root / "gpt2"), root / "model", settings, backend=FakeNeuronBackend()
    )
    return root / "model"


@pytest.fixture(scope="module")
def model(artifact):
    loaded = load_generation(artifact, FakeNeuronBackend(), max_delay_ms=50, limits=Limits())
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def reference():
    tokenizer = tiny_tokenizer()
    return tiny_causal_lm(tokenizer), tokenizer


def test_loads_the_compiled_model_and_generates_at_the_compiled_batch_size(
    model, artifact, calls, reference
):
    hf_model, tokenizer = reference
    assert recorded(calls, "from_pretrained")[-1] == {
        "call": "from_pretrained",
        "model_id": str(artifact / "compiled/neuron"),
        "export": False,
    }
    before = len(recorded(calls, "generate"))
    prompt = PROMPTS[0]
    answer = model.predict([prompt], {"max_new_tokens": 12}, single=True).results
    assert answer == [
        {"generated_text": prompt + reference_text(hf_model, tokenizer, prompt, 12)[1]}
    ]
    (call,) = recorded(calls, "generate")[before:]
    assert (call["batch_size"], call["input_length"]) == (2, 8)  # compiled batch, bucket 8
    assert call["kwargs"]["max_new_tokens"] == 12 and call["kwargs"]["do_sample"] is False
    assert call["kwargs"]["stopping_criteria"] == "StoppingCriteriaList"


def test_two_prompts_of_different_lengths_in_one_loop_keep_their_answers(model, calls, reference):
    hf_model, tokenizer = reference
    before = len(recorded(calls, "generate"))
    prompts = ["hello", PROMPTS[1]]
    answers = model.predict(prompts, {"max_new_tokens": 9, "return_full_text": False}).results
    assert answers == [
        [{"generated_text": reference_text(hf_model, tokenizer, prompt, 9)[1]}]
        for prompt in prompts
    ]
    assert len(recorded(calls, "generate")[before:]) == 1  # one loop for both


def test_stream_yields_each_token_as_generate_produces_it(model, reference):
    hf_model, tokenizer = reference
    prompt = PROMPTS[1]
    ids, text = reference_text(hf_model, tokenizer, prompt, 10)
    events = list(model.stream([prompt], {"max_new_tokens": 10}))
    assert [event["token"]["id"] for event in events] == ids
    assert events[-1]["generated_text"] == prompt + text
    assert prompt + "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"]


def test_a_stop_string_ends_the_text_after_it(model, reference):
    hf_model, tokenizer = reference
    prompt = PROMPTS[0]
    full = reference_text(hf_model, tokenizer, prompt, 12)[1]
    stop = full.split()[1]
    answer = model.predict([prompt], {"max_new_tokens": 12, "stop": stop}, single=True).results
    cut = full[: full.find(stop) + len(stop)]
    assert answer == [{"generated_text": prompt + cut}]


def test_seeded_sampling_is_reproducible_and_other_options_get_their_own_loop(
    model, artifact, calls
):
    sampled = {"max_new_tokens": 8, "do_sample": True, "top_k": 20, "seed": 7}
    first = model.predict(["hello"], sampled, single=True).results
    assert model.predict(["hello"], sampled, single=True).results == first
    # Loops that wait 300 ms for batch mates: the two requests arrive within it.
    slow = load_generation(artifact, FakeNeuronBackend(), max_delay_ms=300, limits=Limits())
    before = len(recorded(calls, "generate"))
    results: list = []
    options = [{"max_new_tokens": 4}, {"max_new_tokens": 4, "do_sample": True, "seed": 1}]
    try:
        threads = [
            threading.Thread(target=lambda o=o: results.append(slow.predict(["hi"], o)))
            for o in options
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        slow.close()
    assert len(results) == 2
    assert len(recorded(calls, "generate")[before:]) == 2  # greedy and sampled never share


def test_repetition_penalty_is_a_400_on_neuron(model):
    with pytest.raises(ClientError, match="repetition_penalty") as caught:
        model.predict(["hello"], {"repetition_penalty": 1.2})
    assert caught.value.status_code == 400


# --------------------------------------------------------------------------------------------
# seq2seq: NeuronModelForSeq2SeqLM (faked), greedy over the compiled batch and encoder length

SEQ2SEQ_LENGTH = 16  # max(largest bucket 16, max_total_length 12 + the start token)


@pytest.fixture(scope="module")
def seq2seq_artifact(tmp_path_factory, calls):
    root = tmp_path_factory.mktemp("neuron-seq2seq")
    checkpoint = root / "t5"
    tokenizer = tiny_tokenizer()
    tiny_seq2seq(tokenizer).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    settings = CompileHyperparameters(
        backend="neuron", batch_size=2, sequence_lengths=(8, 16), max_total_length=12
    )
    compile_checkpoint(checkpoint, root / "model", settings, backend=FakeNeuronBackend())
    return root / "model"


@pytest.fixture(scope="module")
def seq2seq(seq2seq_artifact):
    loaded = load_generation(
        seq2seq_artifact, FakeNeuronBackend(), max_delay_ms=50, limits=Limits()
    )
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def seq2seq_reference():
    tokenizer = tiny_tokenizer()
    return tiny_seq2seq(tokenizer), tokenizer


def test_seq2seq_loads_the_traced_model_and_greedy_equals_hugging_face(
    seq2seq, seq2seq_artifact, calls, seq2seq_reference
):
    hf_model, tokenizer = seq2seq_reference
    assert recorded(calls, "from_pretrained")[-1] == {
        "call": "from_pretrained",
        "class": "NeuronModelForSeq2SeqLM",
        "model_id": str(seq2seq_artifact / "compiled/neuron"),
    }
    before = len(recorded(calls, "generate"))
    prompt = PROMPTS[0]
    ids, text = reference_seq2seq(hf_model, tokenizer, prompt, 10)
    answer = seq2seq.predict([prompt], {"max_new_tokens": 10}, single=True).results
    assert answer == [{"generated_text": text}]
    assert [e["token"]["id"] for e in seq2seq.stream([prompt], {"max_new_tokens": 10})] == ids
    call = recorded(calls, "generate")[before]
    # Exactly the exported shapes: the compiled batch, the one traced encoder length.
    assert (call["batch_size"], call["input_length"]) == (2, SEQ2SEQ_LENGTH)
    assert call["max_new_tokens"] == 10 and call["kwargs"] == {"do_sample": False}
    assert (call["stopping_criteria"], call["generation_config"]) == (
        "StoppingCriteriaList",
        "GenerationConfig",
    )


def test_seq2seq_two_prompts_share_one_generate_and_keep_their_answers(
    seq2seq, calls, seq2seq_reference
):
    hf_model, tokenizer = seq2seq_reference
    before = len(recorded(calls, "generate"))
    prompts = ["hello", PROMPTS[1]]
    answers = seq2seq.predict(prompts, {"max_new_tokens": 9}).results
    assert answers == [
        [{"generated_text": reference_seq2seq(hf_model, tokenizer, prompt, 9)[1]}]
        for prompt in prompts
    ]
    assert len(recorded(calls, "generate")[before:]) == 1


def test_seq2seq_stream_builds_the_same_text_token_by_token(seq2seq, seq2seq_reference):
    hf_model, tokenizer = seq2seq_reference
    prompt = PROMPTS[1]
    ids, text = reference_seq2seq(hf_model, tokenizer, prompt, 12)
    events = list(seq2seq.stream([prompt], {"max_new_tokens": 12}))
    assert [event["token"]["id"] for event in events] == ids
    assert events[-1]["generated_text"] == text
    assert "".join(event["token"]["text"] for event in events) == text
    assert all(event["generated_text"] is None for event in events[:-1])


def test_seq2seq_a_stop_string_ends_the_text_after_it(seq2seq, seq2seq_reference):
    hf_model, tokenizer = seq2seq_reference
    prompt = PROMPTS[0]
    full = reference_seq2seq(hf_model, tokenizer, prompt, 12)[1]
    stop = full.split()[1]
    answer = seq2seq.predict([prompt], {"max_new_tokens": 12, "stop": stop}, single=True)
    assert answer.results == [{"generated_text": full[: full.find(stop) + len(stop)]}]


def test_seq2seq_limits_are_refused_naming_them(seq2seq, calls):
    before = len(recorded(calls, "generate"))
    with pytest.raises(ClientError, match="max_total_length of 12") as caught:
        seq2seq.predict(["hello"], {"max_new_tokens": 13})
    assert caught.value.status_code == 400
    with pytest.raises(PayloadTooLarge, match="largest prompt bucket of 16") as too_long:
        seq2seq.predict([" ".join(["word"] * 30)])
    assert too_long.value.status_code == 413
    for name, value in (("do_sample", True), ("repetition_penalty", 1.3)):
        with pytest.raises(ClientError, match=name) as refused:
            seq2seq.predict(["hello"], {name: value})
        assert refused.value.status_code == 400
    assert len(recorded(calls, "generate")[before:]) == 0  # refused before any generate
