"""Multiple choice end to end: training on examples/multiple-choice (a question, a list of
choices, the right one's index; accuracy in the metric lines), a graph compiled for the data's
number of choices (``[batch, choices, sequence]`` inputs, recorded in the manifest), and served
answers equal to the in-process ``AutoModelForMultipleChoice``'s; the 400s."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from tasktraining import train_example

from smneuron.errors import ClientError, DataError

pytest.importorskip("datasets")

ROWS = [
    {"question": "What do bees make?", "choices": ["bread", "honey"], "label": 1},
    {"question": "Which animal barks?", "choices": ["a dog", "a fish"], "label": 0},
]


@pytest.fixture(scope="module")
def trained(opt_ml_factory, tiny_model_dir):
    opt_ml = opt_ml_factory("multiple-choice")
    return train_example(
        opt_ml,
        tiny_model_dir,
        "multiple-choice",
        {"task": "multiple-choice", "text_column": "question"},
    )


@pytest.fixture(scope="module")
def served(trained):
    import transformers

    handler = trained.handler()
    model_dir = str(trained.model_dir)
    model = transformers.AutoModelForMultipleChoice.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    try:
        yield handler, model, tokenizer
    finally:
        handler.model.close()


def eager(model, tokenizer, context, choices):
    """The in-process model's probabilities per choice."""
    import torch

    encoded = tokenizer([context] * len(choices), choices, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**{key: value.unsqueeze(0) for key, value in encoded.items()}).logits
    return logits.softmax(-1)[0].tolist()


def ask(handler, body):
    response = handler.invoke(json.dumps(body).encode(), "application/json", None)
    assert response.status == 200
    return json.loads(response.body)


def test_training_logs_accuracy_and_compiles_for_three_choices(trained):
    import torch

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest

    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert f" {key}=" in trained.logs, f"no {key} in the metric lines"
    assert 0.0 <= trained.result.metrics["eval_accuracy"] <= 1.0
    manifest = read_manifest(trained.model_dir)
    assert manifest.task == "multiple-choice"
    assert manifest.choices == 3
    assert manifest.input_names == ("input_ids", "attention_mask", "token_type_ids")
    config = json.loads((trained.model_dir / "config.json").read_text())
    assert config["num_choices"] == 3
    # The CPU backend puts the shared weights (compiled/weights.safetensors) back in.
    graph = CpuBackend().load(manifest.graph_path(trained.model_dir, 16, 2))
    ones = torch.ones((2, 3, 16), dtype=torch.long)
    assert tuple(graph(ones, ones, torch.zeros_like(ones)).shape) == (2, 3)


CASES = [
    ("Where do you keep milk cold?", ["in the fridge", "in the oven", "on the roof"]),
    ("What shines at night?", ["the grass", "the road", "the moon"]),
    (
        "A much longer question that needs the larger bucket to hold every token of it, yes?",
        ["the first rather wordy answer", "a second one", "three"],
    ),
]


def test_a_lone_input_answers_the_best_choice_with_every_score(served):
    handler, model, tokenizer = served
    context, choices = CASES[0]
    got = ask(handler, {"inputs": {"context": context, "choices": choices}})
    want = eager(model, tokenizer, context, choices)
    assert set(got) == {"label", "score", "scores"}
    assert got["scores"] == pytest.approx(want, abs=1e-5)
    assert got["label"] == max(range(3), key=want.__getitem__)
    assert got["score"] == pytest.approx(max(want), abs=1e-5)


def test_a_list_of_inputs_answers_one_object_each_as_the_model_does(served):
    handler, model, tokenizer = served
    body = {"inputs": [{"question": context, "choices": choices} for context, choices in CASES]}
    got = ask(handler, body)
    assert len(got) == len(CASES)
    for answer, (context, choices) in zip(got, CASES, strict=True):
        want = eager(model, tokenizer, context, choices)
        assert answer["scores"] == pytest.approx(want, abs=1e-5)
        assert answer["label"] == max(range(3), key=want.__getitem__)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": {"context": "q", "choices": ["a", "b"]}}, ["2 choices", "exactly 3"]),
        (
            {
                "inputs": [
                    {"context": "q", "choices": ["a", "b", "c"]},
                    {"context": "q", "choices": ["a", "b", "c", "d"]},
                ]
            },
            ["input 1 has 4 choices", "exactly 3"],
        ),
        ({"inputs": "just a text"}, ["multiple-choice takes", '"choices"', "3 choices"]),
        ({"inputs": {"context": "q", "choices": "a b c"}}, ['"choices" must be a list']),
        ({"inputs": {"choices": ["a", "b", "c"]}}, ['"context" or "question"']),
        ({"inputs": {"context": "q", "question": "q", "choices": ["a", "b", "c"]}}, ["one of"]),
        ({"inputs": {"context": "q", "choices": ["a", "b", "c"], "x": 1}}, ["unknown key(s) x"]),
        ({"inputs": [{"context": "q", "choices": ["a", "b", "c"]}, "text"]}, ["holds only"]),
        (
            {"inputs": {"context": "q", "choices": ["a", "b", "c"]}, "parameters": {"top_k": 1}},
            ["unknown parameter(s) top_k", "accepted parameters: none"],
        ),
    ],
)
def test_bad_requests_are_400s_that_say_what_is_expected(served, body, words):
    handler, _, _ = served
    with pytest.raises(ClientError) as caught:
        handler.invoke(json.dumps(body).encode(), "application/json", None)
    assert caught.value.status_code == 400
    assert all(word in caught.value.message for word in words), caught.value.message


def parquet_bytes(rows) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer)
    return buffer.getvalue()


def load(opt_ml):
    from smneuron.training.choices import load_choice_splits

    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    return load_choice_splits(
        channels,
        train_channel="train",
        validation_channel="",
        text_column="question",
        choices_column="choices",
        label_column="label",
        cache_dir=opt_ml.base / "cache",
    )


@pytest.mark.parametrize(
    "name, content",
    [
        ("part.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS)),
        ("part.parquet", parquet_bytes(ROWS)),
        (
            "part.csv",
            'question,choices,label\nWhat do bees make?,"[""bread"", ""honey""]",1\n'
            'Which animal barks?,"[""a dog"", ""a fish""]",0\n',
        ),
    ],
)
def test_each_format_gives_contexts_choices_and_label_indexes(opt_ml, name, content):
    opt_ml.channel("train", {name: content})
    splits, count = load(opt_ml)
    assert count == 2
    assert splits.train["context"] == [row["question"] for row in ROWS]
    assert splits.train["choices"] == [row["choices"] for row in ROWS]
    assert splits.train["labels"] == [1, 0]


@pytest.mark.parametrize(
    "rows, words",
    [
        (
            [ROWS[0], {**ROWS[1], "choices": ["a", "b", "c"]}],
            ["row 2", "3 choices", "first row has 2"],
        ),
        ([{**ROWS[0], "label": 2}], ["label 2", "0 to 1"]),
        ([{**ROWS[0], "choices": ["only one"]}], ["at least 2"]),
        ([{**ROWS[0], "choices": "bread honey"}], ["not a JSON array"]),
    ],
)
def test_bad_rows_are_data_errors_that_say_what_to_fix(opt_ml, rows, words):
    opt_ml.channel("train", {"part.jsonl": "".join(json.dumps(row) + "\n" for row in rows)})
    with pytest.raises(DataError) as caught:
        load(opt_ml)
    assert all(word in caught.value.message for word in words), caught.value.message


def test_smneuron_compile_reads_the_number_of_choices_from_the_checkpoint(trained, tmp_path):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.job import CompileHyperparameters, compile_checkpoint
    from smneuron.errors import ConfigurationError
    from smneuron.typed import parse_hyperparameters

    settings = parse_hyperparameters(
        CompileHyperparameters, {"batch_size": "1", "sequence_lengths": "16"}
    )
    manifest = compile_checkpoint(trained.model_dir, tmp_path / "a", settings, backend=CpuBackend())
    assert (manifest.task, manifest.choices) == ("multiple-choice", 3)
    checkpoint = tmp_path / "bare"
    shutil.copytree(trained.model_dir, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    del config["num_choices"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigurationError, match="--choices N"):
        compile_checkpoint(checkpoint, tmp_path / "b", settings, backend=CpuBackend())
    four = parse_hyperparameters(
        CompileHyperparameters, {"batch_size": "1", "sequence_lengths": "16", "choices": "4"}
    )
    assert compile_checkpoint(checkpoint, tmp_path / "c", four, backend=CpuBackend()).choices == 4


def test_the_neuron_compile_child_gets_the_shape_flags():
    from smneuron.neuron.compile import compile_command

    command = compile_command(
        Path("c"),
        Path("o"),
        task="multiple-choice",
        batch_size=1,
        sequence_lengths=(16,),
        compiler_args=(),
        choices=3,
    )
    assert command[command.index("--choices") + 1] == "3"
    assert "--max-masks" not in command


def test_every_choice_counts_against_the_input_limit(trained):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.errors import PayloadTooLarge
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings

    settings = ServingSettings.from_env(
        {"SAGEMAKER_BASE_DIR": str(trained.opt_ml.base), "SMNEURON_MAX_INPUTS": "5"}
    )
    handler = Handler.load(trained.model_dir, WorkerInfo(0, None, settings, CpuBackend()))
    body = {"inputs": [{"context": "q", "choices": ["a", "b", "c"]}] * 2}
    try:
        with pytest.raises(PayloadTooLarge, match="2 inputs with 6 choices"):
            handler.invoke(json.dumps(body).encode(), "application/json", None)
    finally:
        handler.model.close()
