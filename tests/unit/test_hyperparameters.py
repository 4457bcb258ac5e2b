"""Training hyperparameters: every field typed and validated; `smneuron hyperparameters`."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from smneuron.errors import ConfigurationError
from smneuron.tools import cli
from smneuron.training.hyperparameters import TrainingHyperparameters, load


def test_defaults_parse_from_an_empty_file():
    assert load({}) == TrainingHyperparameters()


def test_sagemaker_style_values_for_every_type():
    hps = load(
        {
            "epochs": '"2.5"',
            "max_steps": '"100"',
            "learning_rate": '"3e-5"',
            "per_device_train_batch_size": "16",
            "compile": '"False"',
            "bf16": "true",
            "allow_hub_download": "false",
            "labels": '"ham,spam"',
            "sequence_lengths": '"[16, 64]"',
            "data_format": '"parquet"',
            "compiler_args": '"--auto-cast none -O2"',
            "sagemaker_job_name": '"job-1"',
        }
    )
    assert hps.epochs == 2.5
    assert hps.max_steps == 100
    assert hps.learning_rate == pytest.approx(3e-5)
    assert hps.per_device_train_batch_size == 16
    assert hps.compile is False
    assert hps.bf16 is True
    assert hps.allow_hub_download is False
    assert hps.labels == ("ham", "spam")
    assert hps.sequence_lengths == (16, 64)
    assert hps.data_format == "parquet"
    assert hps.compiler_arg_list == ("--auto-cast", "none", "-O2")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"epochs": '"many"'}, "epochs: expected a number"),
        ({"learning_rate": "-1"}, "learning_rate: -1.0 is below the minimum"),
        ({"data_format": '"xml"'}, "data_format: 'xml' is not one of: auto, csv, jsonl, parquet"),
        ({"task": '"translation"'}, "task: 'translation' is not one of"),
        ({"per_device_train_batch_size": "0"}, "per_device_train_batch_size: 0 is below"),
        ({"compile": '"sometimes"'}, "compile: expected true or false"),
        ({"sequence_lengths": '"16,abc"'}, "sequence_lengths: expected an integer"),
        ({"epochs": "0"}, "trains nothing"),
        ({"labels": '"ham,ham"'}, "labels: names repeat"),
        ({"labels": '"ham"'}, "at least 2 label names"),
        ({"learning_rat": "0.1"}, "unknown hyperparameter(s): learning_rat"),
    ],
)
def test_bad_values_are_client_errors_naming_the_field(raw, message):
    with pytest.raises(ConfigurationError) as info:
        load(raw)
    assert message in info.value.message
    assert info.value.client_error


def test_max_steps_alone_is_enough_to_train():
    hps = load({"epochs": "0", "max_steps": "5"})
    assert (hps.epochs, hps.max_steps) == (0, 5)


def test_every_field_has_a_type_and_help():
    for spec in fields(TrainingHyperparameters):
        assert spec.metadata["kind"] in (
            "bool",
            "int",
            "float",
            "str",
            "int_list",
            "float_list",
            "str_list",
        )
        assert spec.metadata["help"], spec.name


def test_smneuron_hyperparameters_lists_every_field(capsys):
    assert cli.main(["hyperparameters"]) == 0
    out = capsys.readouterr().out
    for spec in fields(TrainingHyperparameters):
        assert spec.name in out


def test_smneuron_hyperparameters_json_gives_the_defaults(capsys):
    assert cli.main(["hyperparameters", "--format", "json"]) == 0
    defaults = json.loads(capsys.readouterr().out)
    assert load({k: json.dumps(v) for k, v in defaults.items()}) == TrainingHyperparameters()


def test_the_markdown_table_is_the_one_on_the_configuration_page(capsys):
    from pathlib import Path

    assert cli.main(["hyperparameters", "--format", "markdown"]) == 0
    table = capsys.readouterr().out
    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert table in doc.read_text(encoding="utf-8"), "docs/configuration.md: run `make docs`"
