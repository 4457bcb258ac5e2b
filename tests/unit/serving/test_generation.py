"""Causal-LM serving in process: the decode loop against Hugging Face generate, the limits."""

from __future__ import annotations

import threading

import pytest
from tinygen import build_causal_artifact, reference_text, tiny_causal_lm, tiny_tokenizer

from smneuron.artifact.backends import CpuBackend
from smneuron.errors import ClientError, PayloadTooLarge
from smneuron.serving.generation import load_generation, read_parameters
from smneuron.serving.model import Limits

PROMPTS = ["the cat sat on the", "a quick brown fox jumps", "hello"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_causal_artifact(tmp_path_factory.mktemp("gen") / "model")


@pytest.fixture(scope="module")
def model(artifact):
    loaded = load_generation(artifact, CpuBackend(), max_delay_ms=50, limits=Limits())
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def reference():
    tokenizer = tiny_tokenizer()
    return tiny_causal_lm(tokenizer), tokenizer


def test_greedy_equals_hugging_face_generate_token_for_token(model, reference):
    hf_model, tokenizer = reference
    for prompt in PROMPTS:
        ids, text = reference_text(hf_model, tokenizer, prompt, 12)
        events = list(model.stream([prompt], {"max_new_tokens": 12}))
        assert [event["token"]["id"] for event in events] == ids
        answer = model.predict([prompt], {"max_new_tokens": 12}, single=True).results
        assert answer == [{"generated_text": prompt + text}]


def test_concurrent_prompts_share_a_batch_and_keep_their_answers(artifact, reference):
    hf_model, tokenizer = reference
    prompts = PROMPTS[:2]  # the compiled batch size: the loop starts once both are queued
    expected = [reference_text(hf_model, tokenizer, p, 10)[1] for p in prompts]
    model = load_generation(artifact, CpuBackend(), max_delay_ms=30_000, limits=Limits())
    results: dict[int, object] = {}

    def one(index: int) -> None:
        params = {"max_new_tokens": 10, "return_full_text": False}
        results[index] = model.predict([prompts[index]], params, single=True).results

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [results[i] for i in range(len(prompts))] == [
            [{"generated_text": text}] for text in expected
        ]
        assert model.stats()["batch_sizes"] == {2: 1}  # one loop held both
    finally:
        model.close()


def test_a_list_gets_one_answer_list_per_prompt(model):
    answers = model.predict(PROMPTS, {"max_new_tokens": 3}).results
    assert len(answers) == 3
    assert all(
        len(a) == 1 and a[0]["generated_text"].startswith(p)
        for a, p in zip(answers, PROMPTS, strict=True)
    )


def test_sampling_with_a_seed_is_reproducible(model):
    params = {
        "max_new_tokens": 12,
        "do_sample": True,
        "seed": 7,
        "top_k": 50,
        "top_p": 0.9,
        "temperature": 1.5,
        "return_full_text": False,
    }
    first = model.predict(["the cat"], params, single=True).results
    again = model.predict(["the cat"], params, single=True).results
    other = model.predict(["the cat"], {**params, "seed": 8}, single=True).results
    assert first == again
    assert first != other


def test_stop_strings_end_the_text_after_the_stop(model, reference):
    hf_model, tokenizer = reference
    _, text = reference_text(hf_model, tokenizer, "the cat sat on the", 12)
    word = text.split()[2]
    answer = model.predict(
        ["the cat sat on the"],
        {"max_new_tokens": 12, "stop": [word], "return_full_text": False},
        single=True,
    ).results[0]["generated_text"]
    assert answer.endswith(word)
    assert text.startswith(answer)


def test_stream_tokens_concatenate_to_the_generated_text(model):
    events = list(model.stream(["a quick brown fox"], {"max_new_tokens": 15}))
    final = events[-1]
    assert final["details"]["generated_tokens"] == len(events)
    assert (
        "a quick brown fox" + "".join(e["token"]["text"] for e in events) == final["generated_text"]
    )


def test_a_prompt_above_the_largest_bucket_is_a_413_naming_it(model):
    with pytest.raises(PayloadTooLarge, match="largest prompt bucket of 16 tokens"):
        model.predict([" ".join(["word"] * 17)], {})


def test_max_new_tokens_past_the_total_length_is_a_400_naming_it(model):
    with pytest.raises(ClientError, match="max_total_length is 40") as caught:
        model.predict(["hello"], {"max_new_tokens": 40})
    assert caught.value.status_code == 400
    # 39 fit: one prompt token + 39 new = 40
    assert model.predict(["hello"], {"max_new_tokens": 39}, single=True).results


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"max_tokens": 3}, "unknown parameter"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"stop": [""]}, "stop"),
        ({"seed": -1}, "seed"),
        ({"repetition_penalty": "x"}, "repetition_penalty"),
        ({"return_full_text": 1}, "return_full_text"),
    ],
)
def test_bad_parameters_are_400s(parameters, message):
    with pytest.raises(ClientError, match=message) as caught:
        read_parameters(parameters)
    assert caught.value.status_code == 400


def test_closing_a_stream_stops_its_generation(model):
    events = model.stream(["the cat"], {"max_new_tokens": 30})
    next(events)
    events.close()
    # the next request is answered: the cancelled sequence ended its loop
    assert model.predict(["hello"], {"max_new_tokens": 2}, single=True).results
