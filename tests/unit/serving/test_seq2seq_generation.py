"""Seq2seq serving in process: the encoder-decoder loop against Hugging Face generate."""

from __future__ import annotations

import pytest
from tinygen import build_seq2seq_artifact, reference_seq2seq, tiny_seq2seq, tiny_tokenizer

from smneuron.artifact.backends import CpuBackend
from smneuron.errors import ClientError, PayloadTooLarge
from smneuron.serving.generation import load_generation

PROMPTS = ["the cat sat on the", "hello there", "a quick brown fox jumps over"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    artifact = build_seq2seq_artifact(tmp_path_factory.mktemp("s2s") / "model")
    loaded = load_generation(artifact, CpuBackend(), max_delay_ms=20)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def reference():
    tokenizer = tiny_tokenizer()
    return tiny_seq2seq(tokenizer), tokenizer


def test_greedy_equals_hugging_face_generate_token_for_token(model, reference):
    for prompt in PROMPTS:
        ids, text = reference_seq2seq(*reference, prompt, 10)
        events = list(model.stream([prompt], {"max_new_tokens": 10}))
        assert [event["token"]["id"] for event in events] == ids
        assert "".join(event["token"]["text"] for event in events) == text
        assert events[-1]["generated_text"] == text
        answer = model.predict([prompt], {"max_new_tokens": 10}, single=True).results
        assert answer == [{"generated_text": text}]  # the new text only, as text2text answers


def test_a_batch_of_prompts_of_different_lengths_keeps_each_answer(model, reference):
    answers = model.predict(PROMPTS, {"max_new_tokens": 6}).results
    assert answers == [
        [{"generated_text": reference_seq2seq(*reference, prompt, 6)[1]}] for prompt in PROMPTS
    ]


def test_seq2seq_limits_and_parameters(model):
    with pytest.raises(PayloadTooLarge, match="largest prompt bucket of 16"):
        model.predict([" ".join(["word"] * 20)], {})
    with pytest.raises(ClientError, match="max_total_length of 24"):
        model.predict(["hello"], {"max_new_tokens": 25})
    with pytest.raises(ClientError, match="unknown parameter.*return_full_text"):
        model.predict(["hello"], {"return_full_text": True})
    sampled = {"max_new_tokens": 8, "do_sample": True, "seed": 5, "top_k": 20}
    first = model.predict(["hello"], sampled, single=True).results
    assert model.predict(["hello"], sampled, single=True).results == first
