"""Settings: typed parsers, hyperparameter dataclasses, /opt/ml paths and job files, the
environment registry and the configuration page generated from it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from smneuron.env import ENV, SECTIONS, VARIABLES, accelerator_override, read
from smneuron.errors import ConfigurationError
from smneuron.job import Paths, ResourceConfig, TrainingEnv
from smneuron.serving.settings import ServingSettings
from smneuron.tools.configuration import configuration_page
from smneuron.typed import (
    PARSERS,
    hp,
    one_of,
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


# --------------------------------------------------------------------------------------------
# The environment registry and docs/configuration.md

ROOT = Path(__file__).resolve().parents[2]


def env_names() -> set[str]:
    return {v for k, v in vars(ENV).items() if not k.startswith("_") and isinstance(v, str)}


def test_every_name_in_env_is_declared_in_the_registry_and_back():
    assert env_names() == set(VARIABLES)
    for name, variable in VARIABLES.items():
        assert variable.name == name
        assert variable.kind in PARSERS, name
        assert variable.section in SECTIONS, name
        assert variable.meaning.endswith("."), name


# A name read from the environment in src/ (os.environ.get("X"), os.environ["X"], getenv("X"),
# environ.get("SMNEURON_X")) must be one the registry declares, so that it is documented.
_READS = re.compile(
    r"""(?:os\.environ\.get|os\.environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|environ\.get\(\s*["']((?:SMNEURON|SAGEMAKER|SM|NEURON)_[A-Z0-9_]+)["']"""
)


def test_no_variable_is_read_outside_the_registry():
    undeclared = []
    for path in sorted((ROOT / "src" / "smneuron").rglob("*.py")):
        for match in _READS.finditer(path.read_text(encoding="utf-8")):
            name = match.group(1) or match.group(2)
            if name not in VARIABLES:
                undeclared.append(f"{path.relative_to(ROOT)}: {name}")
    assert not undeclared, f"declare these in smneuron.env.VARIABLES (or use ENV.X): {undeclared}"


def test_the_committed_configuration_page_is_the_generated_one():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == configuration_page(), (
        "docs/configuration.md is out of date: run `make docs` "
        "(python -m smneuron.tools.cli env --markdown > docs/configuration.md)"
    )


def test_the_page_documents_every_variable_and_the_fixed_contradictions():
    page = configuration_page()
    for name in VARIABLES:
        assert f"| `{name}` |" in page, name
    threads = next(line for line in page.splitlines() if "`SMNEURON_THREADS_PER_WORKER`" in line)
    assert "HTTP request threads per worker" in threads
    assert "CPU threads per worker (torch intra-op threads)" not in threads
    overflow = next(line for line in page.splitlines() if "`SMNEURON_OVERFLOW`" in line)
    assert "413" in overflow and "400" not in overflow


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        (ENV.SERVER, None, "gunicorn"),
        (ENV.SERVER, "", "gunicorn"),
        (ENV.SERVER, " Gunicorn ", "gunicorn"),
        (ENV.BATCH_STRATEGY, "single_record", "SINGLE_RECORD"),
        (ENV.MAX_PAYLOAD_IN_MB, "100", 100),
        (ENV.MAX_BATCH_DELAY_MS, "2.5", 2.5),
        (ENV.TRUST_REMOTE_CODE, None, False),
        (ENV.TRUST_REMOTE_CODE, "True", True),
        (ENV.MODEL_SERVER_WORKERS, None, None),
        (ENV.MASTER_PORT, "29400", 29400),
    ],
)
def test_a_variable_reads_typed_with_its_default(name, raw, expected):
    environ = {} if raw is None else {name: raw}
    assert read(name, environ) == expected
    assert VARIABLES[name].read(environ) == expected


@pytest.mark.parametrize(
    "name, raw, message",
    [
        (ENV.SERVER, "tomcat", "SMNEURON_SERVER: 'tomcat' is not one of: mms, gunicorn"),
        (ENV.OVERFLOW, "drop", "SMNEURON_OVERFLOW: 'drop' is not one of: truncate, reject"),
        (
            ENV.BATCH_STRATEGY,
            "ALL",
            "SMNEURON_BATCH_STRATEGY: 'ALL' is not one of: MULTI_RECORD, SINGLE_RECORD",
        ),
        (ENV.ACCELERATOR, "gpu", "SMNEURON_ACCELERATOR: 'gpu' is not one of: neuron, cpu, auto"),
        (ENV.LOG_FORMAT, "xml", "SMNEURON_LOG_FORMAT: 'xml' is not one of: json, text"),
        (ENV.MAX_PAYLOAD_IN_MB, "101", "SAGEMAKER_MAX_PAYLOAD_IN_MB: 101 is above the maximum 100"),
        (ENV.MAX_PAYLOAD_IN_MB, "0", "SAGEMAKER_MAX_PAYLOAD_IN_MB: 0 is below the minimum 1"),
        (ENV.BIND_TO_PORT, "http", "SAGEMAKER_BIND_TO_PORT: expected an integer, got 'http'"),
        (ENV.TRUST_REMOTE_CODE, "perhaps", "SMNEURON_TRUST_REMOTE_CODE: expected true or false"),
    ],
)
def test_a_bad_value_is_a_client_error_naming_the_variable(name, raw, message):
    with pytest.raises(ConfigurationError) as info:
        read(name, {name: raw})
    assert message in info.value.message
    assert info.value.client_error


def test_one_of_keeps_the_declared_spelling():
    assert one_of("B", ("a", "b"), "x", ignore_case=True) == "b"
    with pytest.raises(ConfigurationError, match="x: 'B' is not one of: a, b"):
        one_of("B", ("a", "b"), "x")


@pytest.mark.parametrize(
    "raw, expected", [(None, None), ("", None), ("AUTO", None), ("CPU", "cpu")]
)
def test_accelerator_override(raw, expected):
    assert accelerator_override({} if raw is None else {ENV.ACCELERATOR: raw}) == expected


def test_serving_settings_defaults(tmp_path):
    settings = ServingSettings.from_env({ENV.BASE_DIR: str(tmp_path)})
    assert settings == ServingSettings(paths=Paths(tmp_path))
    assert settings.max_payload_bytes == 6 * 1024 * 1024


def test_serving_settings_read_every_variable(tmp_path):
    settings = ServingSettings.from_env(
        {
            ENV.BASE_DIR: str(tmp_path),
            ENV.SERVER: "GUNICORN",
            ENV.BIND_TO_PORT: "8081",
            ENV.MAX_PAYLOAD_IN_MB: "20",
            ENV.MODEL_SERVER_WORKERS: "2",
            ENV.THREADS_PER_WORKER: "32",
            ENV.MODEL_SERVER_TIMEOUT: "120",
            ENV.MAX_CONCURRENT_TRANSFORMS: "4",
            ENV.BATCH_STRATEGY: "single_record",
            ENV.DEFAULT_ACCEPT: "text/csv",
            ENV.MAX_BATCH_DELAY_MS: "10",
            ENV.OVERFLOW: "Reject",
            ENV.ACCELERATOR: "cpu",
            ENV.LOG_LEVEL: "debug",
            ENV.LOG_FORMAT: "TEXT",
            ENV.MODEL_SERVER_VMARGS: "-Xmx1g",
            ENV.TRUST_REMOTE_CODE: "yes",
        }
    )
    assert settings == ServingSettings(
        paths=Paths(tmp_path),
        server="gunicorn",
        port=8081,
        max_payload_mb=20,
        workers=2,
        threads_per_worker=32,
        model_server_timeout=120,
        max_concurrent_transforms=4,
        batch_strategy="SINGLE_RECORD",
        default_accept="text/csv",
        max_batch_delay_ms=10.0,
        overflow="reject",
        accelerator="cpu",
        log_level="DEBUG",
        log_format="text",
        vmargs="-Xmx1g",
        trust_remote_code=True,
    )


def test_training_env_reads_trust_remote_code_off_by_default(opt_ml, monkeypatch):
    monkeypatch.delenv(ENV.TRUST_REMOTE_CODE, raising=False)
    assert TrainingEnv.from_env().trust_remote_code is False
    assert TrainingEnv.from_env(
        {ENV.BASE_DIR: str(opt_ml.base), ENV.TRUST_REMOTE_CODE: "true"}
    ).trust_remote_code
