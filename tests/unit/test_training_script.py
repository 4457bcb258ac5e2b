"""Script mode: the job read from hyperparameters, the SM_* environment, arguments, commands."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from smneuron.errors import ConfigurationError
from smneuron.job import TrainingEnv
from smneuron.training import launch, script, smenv, supervisor
from smneuron.training.script import ScriptJob

# What the SageMaker Python SDK 2.x writes for Estimator(entry_point="train.py",
# source_dir=..., hyperparameters={...}) with a local session (local_code=True).
SDK_HYPERPARAMETERS = {
    "epochs": 3,
    "model_name": "bert-base-uncased",
    "learning-rate": "0.0001",
    "fp16": "true",
    "layers": "[2, 4]",
    "sagemaker_program": json.dumps("train.py"),
    "sagemaker_submit_directory": json.dumps("/opt/ml/code"),
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": json.dumps("smneuron-script-2026-01-01"),
    "sagemaker_region": json.dumps("eu-west-1"),
    "sagemaker_torch_distributed_enabled": "true",
}


def job(raw=SDK_HYPERPARAMETERS, environ=None) -> ScriptJob:
    return ScriptJob.from_env(raw, environ or {})


def test_script_mode_is_requested_by_the_hyperparameter_or_the_variable():
    assert script.requested({"sagemaker_program": '"train.py"'}, {})
    assert script.requested({}, {"SAGEMAKER_PROGRAM": "train.sh"})
    assert not script.requested({"epochs": "1", "sagemaker_region": '"us-east-1"'}, {})


def test_the_job_splits_sdk_framework_and_user_hyperparameters():
    parsed = job()
    assert parsed.program == "train.py"
    assert parsed.source == "/opt/ml/code"
    assert parsed.region == "eu-west-1"
    assert parsed.log_level == 20
    assert parsed.job_name == "smneuron-script-2026-01-01"
    assert parsed.hyperparameters == {
        "epochs": 3,
        "model_name": "bert-base-uncased",
        "learning-rate": 0.0001,
        "fp16": True,
        "layers": [2, 4],
    }
    assert parsed.framework_params == {"sagemaker_torch_distributed_enabled": True}
    assert parsed.distribution_requested


def test_the_variables_name_the_program_and_source_when_the_hyperparameters_do_not():
    parsed = job(
        {"epochs": "1"},
        {"SAGEMAKER_PROGRAM": "run.sh", "SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/k.tar.gz"},
    )
    assert (parsed.program, parsed.source, parsed.distribution_requested) == (
        "run.sh",
        "s3://b/k.tar.gz",
        False,
    )


@pytest.mark.parametrize("program", ["/etc/passwd", "../train.py", ""])
def test_a_program_outside_the_source_folder_is_refused(program):
    with pytest.raises(ConfigurationError, match="sagemaker_program"):
        job({"sagemaker_program": json.dumps(program)}, {"SAGEMAKER_PROGRAM": ""})


def test_hyperparameters_become_sorted_arguments_in_the_toolkit_format():
    args = smenv.to_cmd_args(job().hyperparameters)
    assert args == [
        "--epochs", "3",
        "--fp16", "True",
        "--layers", "[2, 4]",
        "--learning-rate", "0.0001",
        "--model_name", "bert-base-uncased",
    ]  # fmt: skip
    assert smenv.to_cmd_args({"x": 1, "opts": {"b": 2, "a": "z"}, "none": None}) == [
        "--none", "", "--opts", "a=z,b=2", "-x", "1",
    ]  # fmt: skip


def sm_env(opt_ml, parsed: ScriptJob, neurons: int = 0) -> dict[str, str]:
    env = TrainingEnv.from_env()
    training = smenv.training_env(
        parsed, env, opt_ml.base / "code", num_neurons=neurons, environ={}
    )
    return smenv.sm_environment(training)


def test_sm_environment_has_the_toolkit_names_and_formats(opt_ml):
    opt_ml.resource("algo-2", ("algo-2", "algo-1"))
    opt_ml.paths.input_data_config.write_text(json.dumps({"train": {}, "test": {}}))
    opt_ml.channel("train")
    opt_ml.channel("test")
    env = sm_env(opt_ml, job(), neurons=2)
    base = opt_ml.base
    assert env["SM_MODEL_DIR"] == str(base / "model")
    assert env["SM_OUTPUT_DATA_DIR"] == str(base / "output" / "data")
    assert env["SM_OUTPUT_DIR"] == str(base / "output")
    assert env["SM_INPUT_DIR"] == str(base / "input")
    assert env["SM_INPUT_CONFIG_DIR"] == str(base / "input" / "config")
    assert env["SM_CHANNELS"] == '["test","train"]'
    assert env["SM_CHANNEL_TRAIN"] == str(base / "input" / "data" / "train")
    assert env["SM_CHANNEL_TEST"] == str(base / "input" / "data" / "test")
    assert json.loads(env["SM_HPS"]) == job().hyperparameters
    assert env["SM_HP_EPOCHS"] == "3"
    assert env["SM_HP_MODEL_NAME"] == "bert-base-uncased"
    assert env["SM_HP_LEARNING-RATE"] == "0.0001"
    assert env["SM_HP_FP16"] == "true"  # JSON, like every non-string value
    assert env["SM_HP_LAYERS"] == "[2,4]"
    assert env["SM_HOSTS"] == '["algo-1","algo-2"]'
    assert env["SM_CURRENT_HOST"] == "algo-2"
    assert env["SM_NETWORK_INTERFACE_NAME"] == "eth0"
    assert env["SM_NUM_GPUS"] == "0"
    assert env["SM_NUM_NEURONS"] == "2"
    assert int(env["SM_NUM_CPUS"]) >= 1
    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_USER_ENTRY_POINT"] == "train.py"
    assert env["SM_MODULE_NAME"] == "train"
    assert env["SM_MODULE_DIR"] == "/opt/ml/code"
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "local"
    assert json.loads(env["SM_USER_ARGS"]) == smenv.to_cmd_args(job().hyperparameters)
    assert json.loads(env["SM_FRAMEWORK_PARAMS"]) == {"sagemaker_torch_distributed_enabled": True}
    assert json.loads(env["SM_RESOURCE_CONFIG"])["current_host"] == "algo-2"
    assert json.loads(env["SM_INPUT_DATA_CONFIG"]) == {"train": {}, "test": {}}
    training = json.loads(env["SM_TRAINING_ENV"])
    assert training["hyperparameters"] == job().hyperparameters
    assert training["channel_input_dirs"]["train"] == env["SM_CHANNEL_TRAIN"]
    assert training["master_hostname"] == "algo-1" and training["is_master"] is False
    assert training["job_name"] == "smneuron-script-2026-01-01"
    assert not any(key.startswith("SM_HP_SAGEMAKER") for key in env)


def test_a_python_script_runs_under_python_and_anything_else_through_sh():
    assert script.entry_command("train.py", ["--a", "1"], python="py") == [
        "py", "train.py", "--a", "1",
    ]  # fmt: skip
    command = script.entry_command("train.sh", ["--a", "x y"])
    assert command[:2] == ["/bin/sh", "-c"] and command[3:] == ["train.sh", "--a", "x y"]


def test_torchrun_starts_one_copy_of_the_script_per_process(opt_ml):
    from smneuron.job import ResourceConfig

    resource = ResourceConfig("algo-2", ("algo-1", "algo-2"))
    plan = launch.plan(resource, nproc_per_node=2)
    command = script.torchrun_entry(plan, "train.py", ["--epochs", "1"])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and "--node_rank=1" in command
    assert "--master_addr=algo-1" in command
    assert command[-3:] == ["train.py", "--epochs", "1"]
    shell = script.torchrun_entry(plan, "run.sh", [])
    assert shell[shell.index("--no-python") + 1] == "/bin/sh" and shell[-1] == "run.sh"


def test_the_exception_line_is_the_workers_not_torchruns():
    lines = [
        "some warning",
        "Traceback (most recent call last):",
        '  File "train.py", line 3, in <module>',
        "    raise ValueError('no column text')",
        "ValueError: no column text",
        "Traceback (most recent call last):",
        '  File "run.py", line 9, in main',
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "train.py FAILED",
    ]
    assert supervisor.exception_line(lines) == "ValueError: no column text"
    assert (
        supervisor.exception_line(["progress", "fatal: disk on fire", ""]) == "fatal: disk on fire"
    )
    assert supervisor.exception_line([]) == ""


def test_requirements_are_installed_unless_forbidden(tmp_path, caplog):
    (tmp_path / "requirements.txt").write_text("pytest\n")  # already installed: no network
    script.install_requirements(tmp_path, {**_env(), "PIP_NO_INDEX": "1"}, allowed=True)
    (tmp_path / "requirements.txt").write_text("a-package-that-is-not-here==1.0\n")
    with caplog.at_level(logging.WARNING):
        script.install_requirements(tmp_path, _env(), allowed=False)
    assert "SMNEURON_INSTALL_REQUIREMENTS=false" in caplog.text


def test_requirements_without_network_fail_with_a_reason_that_says_so(tmp_path):
    (tmp_path / "requirements.txt").write_text("a-package-that-is-not-here==1.0\n")
    offline = {**_env(), "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": ""}
    with pytest.raises(ConfigurationError, match="no network access") as info:
        script.install_requirements(tmp_path, offline, allowed=True)
    assert "SMNEURON_INSTALL_REQUIREMENTS=false" in str(info.value)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}


def test_the_stop_grace_period_and_the_install_switch_are_read_once():
    parsed = job(
        SDK_HYPERPARAMETERS,
        {"SMNEURON_SCRIPT_STOP_GRACE_S": "3", "SMNEURON_INSTALL_REQUIREMENTS": "false"},
    )
    assert parsed.stop_grace_s == 3.0 and parsed.install_requirements is False
    with pytest.raises(ConfigurationError):
        job(SDK_HYPERPARAMETERS, {"SMNEURON_INSTALL_REQUIREMENTS": "maybe"})


FAKE_NEURON = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"


def test_on_neuron_the_script_runs_under_torchrun_one_process_per_core(opt_ml, monkeypatch):
    """The Neuron launch path against the fake neuron-ls (not run on Neuron hardware)."""
    import os

    code = opt_ml.base / "code"
    code.mkdir()
    (code / "train.py").write_text("")
    opt_ml.hyperparameters({"epochs": 1, "sagemaker_program": "train.py"})
    monkeypatch.setenv("PATH", f"{FAKE_NEURON / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE_NEURON / "neuron_ls" / "trn1.2xlarge.json"))
    environ = {
        **os.environ,
        "SMNEURON_ACCELERATOR": "neuron",
        "SMNEURON_INSTANCE_TYPE": "trn1.2xlarge",
        "NEURON_RT_NUM_CORES": "2",
    }
    runs = []

    def record(command, env, cwd, grace_s):
        runs.append((command, env, cwd))
        return 0, False, []

    monkeypatch.setattr(supervisor, "supervise", record)
    outcome = script.run(TrainingEnv.from_env(environ), environ, "neuron")
    assert outcome.code == 0
    ((command, env, cwd),) = runs
    assert "torch.distributed.run" in command and "--nproc_per_node=2" in command
    assert command[-3:] == ["train.py", "--epochs", "1"] and cwd == code
    assert env["SM_NUM_NEURONS"] == "2"
    assert f"--cache_dir={opt_ml.paths.neuron_cache}" in env["NEURON_CC_FLAGS"]
    assert "NEURON_RT_NUM_CORES" not in env  # torch-xla pins one core per rank
