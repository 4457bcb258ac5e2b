"""Settings: typed parsers, hyperparameter dataclasses, /opt/ml paths and job files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from smneuron.env import ENV
from smneuron.errors import ConfigurationError
from smneuron.job import Paths, ResourceConfig, TrainingEnv
from smneuron.typed import (
    hp,
    parse_bool,
    parse_float,
    parse_hyperparameters,
    parse_int,
    parse_int_list,
    parse_str_list,
)


@dataclass(frozen=True)
class Example:
    flag: bool = hp(False, "bool", "a switch")
    count: int = hp(1, "int", "a count", minimum=1, maximum=10)
    rate: float = hp(0.5, "float", "a rate", minimum=0.0, maximum=1.0)
    name: str = hp("a", "str", "a name", choices=("a", "b"))
    sizes: tuple[int, ...] = hp((8,), "int_list", "sizes", minimum=1)
    tags: tuple[str, ...] = hp((), "str_list", "tags")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ('"false"', False),
        (False, False),
        ("0", False),
        ("true", True),
        ("True", True),
        ('"True"', True),
        (True, True),
        ("1", True),
        ("yes", True),
    ],
)
def test_bool_hyperparameter_in_every_spelling(raw, expected):
    assert parse_hyperparameters(Example, {"flag": raw}).flag is expected


@pytest.mark.parametrize("raw", ["maybe", "2", 2, "[true]"])
def test_bool_hyperparameter_rejects_other_values(raw):
    with pytest.raises(ConfigurationError, match="flag: expected true or false"):
        parse_hyperparameters(Example, {"flag": raw})


@pytest.mark.parametrize("raw", ["3", '"3"', 3, 3.0, "3.0", " 3 "])
def test_int_hyperparameter_given_as_string_json_string_or_number(raw):
    assert parse_hyperparameters(Example, {"count": raw}).count == 3


@pytest.mark.parametrize("raw", ["three", "3.5", 3.5, True, "[3]"])
def test_int_hyperparameter_rejects_non_integers(raw):
    with pytest.raises(ConfigurationError, match="count: expected an integer"):
        parse_hyperparameters(Example, {"count": raw})


@pytest.mark.parametrize("raw, expected", [("0.25", 0.25), ('"1e-1"', 0.1), (1, 1.0), (0, 0.0)])
def test_float_hyperparameter(raw, expected):
    assert parse_hyperparameters(Example, {"rate": raw}).rate == pytest.approx(expected)


def test_float_hyperparameter_rejects_text():
    with pytest.raises(ConfigurationError, match="rate: expected a number, got 'fast'"):
        parse_hyperparameters(Example, {"rate": "fast"})


@pytest.mark.parametrize(
    "raw, expected",
    [("[16, 32]", (16, 32)), ('"16,32"', (16, 32)), ([16, "32"], (16, 32)), ("64", (64,))],
)
def test_int_list_hyperparameter(raw, expected):
    assert parse_hyperparameters(Example, {"sizes": raw}).sizes == expected


@pytest.mark.parametrize(
    "raw, expected",
    [('["ham", "spam"]', ("ham", "spam")), ('"ham, spam"', ("ham", "spam")), ('""', ())],
)
def test_str_list_hyperparameter(raw, expected):
    assert parse_hyperparameters(Example, {"tags": raw}).tags == expected


def test_choices_are_listed_when_the_value_is_not_one_of_them():
    with pytest.raises(ConfigurationError, match="name: 'c' is not one of: a, b"):
        parse_hyperparameters(Example, {"name": '"c"'})


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"count": "0"}, "count: 0 is below the minimum 1"),
        ({"count": "11"}, "count: 11 is above the maximum 10"),
        ({"rate": "1.5"}, "rate: 1.5 is above the maximum 1.0"),
        ({"sizes": "[8, 0]"}, "sizes: 0 is below the minimum 1"),
    ],
)
def test_ranges_are_enforced_with_the_limit_in_the_message(raw, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_hyperparameters(Example, raw)


def test_unknown_names_are_rejected_and_known_ones_listed():
    with pytest.raises(ConfigurationError) as info:
        parse_hyperparameters(Example, {"epochz": "3"})
    assert "unknown hyperparameter(s): epochz" in info.value.message
    assert "count" in info.value.message and "flag" in info.value.message
    assert info.value.client_error


def test_sagemaker_sdk_names_are_accepted_and_ignored():
    parsed = parse_hyperparameters(
        Example, {"sagemaker_program": '"train.py"', "sagemaker_region": '"us-east-1"'}
    )
    assert parsed == Example()


def test_scalar_parsers_name_the_field():
    with pytest.raises(ConfigurationError, match="^workers: "):
        parse_int("x", "workers")
    assert parse_float("2", "f") == 2.0
    assert parse_bool("off") is False
    assert parse_int_list("1, 2,3") == (1, 2, 3)
    assert parse_str_list(["a", "b"]) == ("a", "b")


# --------------------------------------------------------------------------------------------
# Paths and job files


def test_paths_derive_from_sagemaker_base_dir(tmp_path):
    paths = Paths.from_env({ENV.BASE_DIR: str(tmp_path)})
    assert paths.hyperparameters == tmp_path / "input/config/hyperparameters.json"
    assert paths.channel("train") == tmp_path / "input/data/train"
    assert paths.model == tmp_path / "model"
    assert paths.failure == tmp_path / "output/failure"
    assert paths.checkpoints == tmp_path / "checkpoints"
    assert Paths.from_env({}).base.as_posix() == "/opt/ml"


def test_resource_config_sorts_hosts_and_ranks_this_host():
    resource = ResourceConfig.from_dict(
        {"current_host": "algo-2", "hosts": ["algo-2", "algo-1"], "network_interface_name": "ethX"}
    )
    assert resource.hosts == ("algo-1", "algo-2")
    assert resource.master == "algo-1"
    assert resource.host_rank == 1
    assert resource.num_hosts == 2
    assert resource.network_interface_name == "ethX"


def test_resource_config_defaults_to_one_host():
    resource = ResourceConfig.from_dict({})
    assert (resource.current_host, resource.num_hosts, resource.host_rank) == ("algo-1", 1, 0)


def test_resource_config_rejects_a_current_host_outside_hosts():
    with pytest.raises(ConfigurationError, match="current_host 'algo-9' is not in hosts"):
        ResourceConfig.from_dict({"current_host": "algo-9", "hosts": ["algo-1"]})


def test_training_env_reads_every_job_file(opt_ml):
    opt_ml.hyperparameters({"epochs": 2})
    opt_ml.resource("algo-1", ("algo-1", "algo-2"))
    opt_ml.paths.input_data_config.write_text(json.dumps({"train": {}, "validation": {}}))
    opt_ml.channel("train")
    env = TrainingEnv.from_env()
    assert env.paths.base == opt_ml.base
    assert env.hyperparameters == {"epochs": "2"}
    assert env.resource.num_hosts == 2
    assert set(env.channels) == {"train", "validation"}
    assert env.channels["train"] == opt_ml.paths.channel("train")


def test_training_env_with_no_job_files_uses_defaults(opt_ml):
    env = TrainingEnv.from_env()
    assert env.hyperparameters == {}
    assert env.resource == ResourceConfig()


def test_broken_hyperparameters_json_is_a_client_error_naming_the_file(opt_ml):
    opt_ml.paths.hyperparameters.write_text("{not json")
    with pytest.raises(ConfigurationError, match="hyperparameters.json at .* is not valid JSON"):
        TrainingEnv.from_env()


def test_every_environment_variable_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    names = [v for k, v in vars(ENV).items() if not k.startswith("_") and isinstance(v, str)]
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"add these to docs/configuration.md: {missing}"
