"""Local container runs: the /opt/ml tree and docker arguments, from a fake /dev tree."""

from __future__ import annotations

import functools
import json
import tarfile
from pathlib import Path

import pytest

from smneuron.errors import ConfigurationError
from smneuron.tools import cli
from smneuron.tools.local import devices as neuron_local
from smneuron.tools.local import docker as localrun
from smneuron.tools.local.devices import docker_device_args
from smneuron.tools.local.docker import LocalRunError, serving_run_spec, training_run_spec

FOUR = [f"/dev/neuron{i}:/dev/neuron{i}:rwm" for i in range(4)]


@pytest.fixture
def dev(tmp_path) -> Path:
    root = tmp_path / "dev"
    root.mkdir()
    for index in range(4):
        (root / f"neuron{index}").touch()
    (root / "null").touch()
    return root


@pytest.fixture
def channels(tmp_path) -> dict[str, Path]:
    found = {}
    for name in ("train", "model"):
        (tmp_path / "data" / name).mkdir(parents=True)
        found[name] = tmp_path / "data" / name
    return found


def test_training_spec_with_auto_devices_writes_the_opt_ml_tree(tmp_path, dev, channels):
    devices = docker_device_args("auto", dev_root=dev)
    spec = training_run_spec(
        "smneuron-training:test-neuron",
        channels,
        {"max_steps": 4, "labels": "ham,spam", "sequence_lengths": [16, 32], "lr": 5e-5},
        tmp_path / "job",
        devices,
        {"OMP_NUM_THREADS": "1"},
    )
    job = (tmp_path / "job").resolve()
    assert spec.image == "smneuron-training:test-neuron"
    assert spec.command == ["train"]
    assert spec.devices == FOUR
    assert spec.environment == {"SMNEURON_ACCELERATOR": "neuron", "OMP_NUM_THREADS": "1"}
    assert spec.volumes == {
        str(job / "input" / "config"): {"bind": "/opt/ml/input/config", "mode": "ro"},
        str(channels["train"]): {"bind": "/opt/ml/input/data/train", "mode": "ro"},
        str(channels["model"]): {"bind": "/opt/ml/input/data/model", "mode": "ro"},
        str(job / "model"): {"bind": "/opt/ml/model", "mode": "rw"},
        str(job / "output"): {"bind": "/opt/ml/output", "mode": "rw"},
        str(job / "checkpoints"): {"bind": "/opt/ml/checkpoints", "mode": "rw"},
    }
    assert spec.ports == {}
    config = job / "input" / "config"
    # SageMaker hands every value over as a JSON-encoded string.
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "max_steps": "4",
        "labels": '"ham,spam"',
        "sequence_lengths": "[16, 32]",
        "lr": "5e-05",
    }
    resource = json.loads((config / "resourceconfig.json").read_text())
    assert (resource["current_host"], resource["hosts"]) == ("algo-1", ["algo-1"])
    assert spec.hostname == "algo-1"
    data_config = json.loads((config / "inputdataconfig.json").read_text())
    assert sorted(data_config) == ["model", "train"]
    assert data_config["train"]["TrainingInputMode"] == "File"
    assert all((job / name).is_dir() for name in ("model", "output", "checkpoints"))
    kwargs = spec.run_kwargs()
    assert (kwargs["command"], kwargs["detach"], kwargs["devices"]) == (["train"], True, FOUR)


def test_training_spec_reads_back_as_the_training_env(tmp_path, dev, channels):
    from smneuron.job import TrainingEnv

    training_run_spec("img", channels, {"max_steps": 4}, tmp_path / "job")
    job = (tmp_path / "job").resolve()
    env = TrainingEnv.from_env({"SAGEMAKER_BASE_DIR": str(job)})
    assert env.resource.current_host == "algo-1"
    assert env.hyperparameters == {"max_steps": "4"}
    assert set(env.channels) == {"model", "train"}


def test_explicit_device_list_passes_only_those(tmp_path, dev, channels):
    devices = docker_device_args("/dev/neuron2,neuron1", dev_root=dev)
    spec = training_run_spec("img", channels, {}, tmp_path / "job", devices)
    assert spec.devices == ["/dev/neuron1:/dev/neuron1:rwm", "/dev/neuron2:/dev/neuron2:rwm"]
    assert spec.environment == {"SMNEURON_ACCELERATOR": "neuron"}


def test_no_devices_runs_on_cpu(tmp_path, channels):
    spec = training_run_spec("img", channels, {}, tmp_path / "job", None, {"A": "1"})
    assert spec.devices == []
    assert spec.environment == {"A": "1"}


def test_user_env_overrides_the_device_default(tmp_path, dev, channels):
    devices = docker_device_args("0", dev_root=dev)
    spec = training_run_spec(
        "img", channels, {}, tmp_path / "job", devices, {"SMNEURON_ACCELERATOR": "cpu"}
    )
    assert spec.environment["SMNEURON_ACCELERATOR"] == "cpu"


def test_missing_channel_folder_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="not a folder"):
        training_run_spec("img", {"train": tmp_path / "nowhere"}, {}, tmp_path / "job")


def test_serving_spec_unpacks_a_tar_and_maps_the_port(tmp_path, dev):
    model = tmp_path / "trained"
    model.mkdir()
    (model / "manifest.json").write_text("{}")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model / "manifest.json", arcname="manifest.json")
    devices = docker_device_args("auto", dev_root=dev)
    spec = serving_run_spec("img:neuron", f"file://{archive}", 18080, tmp_path / "serve", devices)
    unpacked = (tmp_path / "serve" / "model").resolve()
    assert (unpacked / "manifest.json").read_text() == "{}"
    assert spec.command == ["serve"]
    assert spec.volumes == {str(unpacked): {"bind": "/opt/ml/model", "mode": "ro"}}
    assert spec.ports == {"8080/tcp": ("127.0.0.1", 18080)}
    assert spec.host_port == 18080
    assert spec.devices == FOUR
    assert spec.environment == {"SMNEURON_ACCELERATOR": "neuron"}


def test_serving_spec_mounts_a_model_folder_as_is(tmp_path):
    model = tmp_path / "trained"
    model.mkdir()
    spec = serving_run_spec("img", model, 8081, tmp_path / "serve")
    assert spec.volumes == {str(model.resolve()): {"bind": "/opt/ml/model", "mode": "ro"}}
    assert spec.devices == []
    assert not (tmp_path / "serve" / "model").exists()


def test_serving_spec_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigurationError, match="not a model folder"):
        serving_run_spec("img", tmp_path / "notes.txt", 8080, tmp_path / "serve")


# --------------------------------------------------------------------------------------------
# run_training with a stand-in docker client


class FakeContainer:
    def __init__(self, code: int, lines: list[bytes], on_run=None) -> None:
        self.code, self.lines, self.removed = code, lines, False
        self.on_run = on_run

    def logs(self, stream: bool = False, follow: bool = False):
        return iter(self.lines) if stream else b"".join(self.lines)

    def wait(self):
        return {"StatusCode": self.code}

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeClient:
    def __init__(self, container: FakeContainer, spec) -> None:
        self.container, self.spec, self.calls = container, spec, []
        self.containers = self

    def run(self, image, **kwargs):
        self.calls.append((image, kwargs))
        if self.container.on_run:
            self.container.on_run(self.spec.workdir)
        return self.container


def test_run_training_tars_the_model_and_removes_the_container(tmp_path, channels, capsys):
    spec = training_run_spec("img", channels, {}, tmp_path / "job")

    def write_model(workdir: Path) -> None:
        (workdir / "model" / "manifest.json").write_text("{}")
        (workdir / "model" / "compiled").mkdir()
        (workdir / "model" / "compiled" / "model.pt").write_text("x")

    container = FakeContainer(0, [b"step 1\n", b"step 2\n"], write_model)
    client = FakeClient(container, spec)
    path = localrun.run_training(spec, client)
    assert path == spec.workdir / "output" / "model.tar.gz"
    with tarfile.open(path) as tar:
        assert set(tar.getnames()) == {"manifest.json", "compiled", "compiled/model.pt"}
    assert "step 1\nstep 2\n" in capsys.readouterr().out
    assert container.removed
    assert client.calls[0][1]["volumes"] == spec.volumes


def test_run_training_failure_carries_the_failure_file_and_log_tail(tmp_path, channels):
    spec = training_run_spec("img", channels, {}, tmp_path / "job")

    def fail(workdir: Path) -> None:
        (workdir / "output" / "failure").write_text("ConfigurationError: labels is required")

    container = FakeContainer(1, [b"loading\n", b"Traceback: boom\n"], fail)
    with pytest.raises(LocalRunError) as caught:
        localrun.run_training(spec, FakeClient(container, spec))
    message = str(caught.value)
    assert "exited with 1" in message
    assert "labels is required" in message
    assert "Traceback: boom" in message
    assert container.removed
    assert not (spec.workdir / "output" / "model.tar.gz").exists()


# --------------------------------------------------------------------------------------------
# `smneuron local ... --neuron-devices`


@pytest.fixture
def recorded(monkeypatch, dev, tmp_path) -> list:
    """The local runs `smneuron local` asks for, against the fake /dev, instead of docker."""
    calls: list = []
    monkeypatch.setattr(
        neuron_local,
        "docker_device_args",
        functools.partial(neuron_local.docker_device_args, dev_root=dev),
    )

    def fake_training(spec):
        calls.append(spec)
        return spec.workdir / "output" / "model.tar.gz"

    def fake_serving(spec, health_timeout):
        calls.append((spec, health_timeout))
        raise KeyboardInterrupt  # what Ctrl-C does; the CLI maps it to 130

    monkeypatch.setattr(localrun, "run_training", fake_training)
    monkeypatch.setattr(localrun, "run_serving", fake_serving)
    monkeypatch.chdir(tmp_path)
    return calls


def test_cli_local_train_with_neuron_devices_runs_localrun(recorded, channels, tmp_path, capsys):
    code = cli.main(
        [
            "local",
            "train",
            "--neuron-devices",
            "auto",
            "--image",
            "smneuron-training:x-neuron",
            "--channel",
            f"train={channels['train']}",
            "--channel",
            f"model={channels['model']}",
            "--hyperparameters",
            '{"max_steps": 2}',
            "--env",
            "OMP_NUM_THREADS=1",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    (spec,) = recorded
    assert spec.image == "smneuron-training:x-neuron"
    assert spec.devices == FOUR
    assert spec.environment == {"SMNEURON_ACCELERATOR": "neuron", "OMP_NUM_THREADS": "1"}
    assert spec.workdir.parent == (tmp_path / "out").resolve()
    assert json.loads((spec.workdir / "input/config/hyperparameters.json").read_text()) == {
        "max_steps": "2"
    }
    assert capsys.readouterr().out.strip().endswith("output/model.tar.gz")


def test_cli_local_deploy_with_neuron_devices_runs_localrun(recorded, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    argv = ["local", "deploy", "--neuron-devices", "neuron3,neuron2", "--model-data", str(model)]
    code = cli.main([*argv, "--port", "18081", "--health-timeout", "42"])
    assert code == 130
    ((spec, limit),) = recorded
    assert spec.command == ["serve"]
    assert spec.devices == ["/dev/neuron2:/dev/neuron2:rwm", "/dev/neuron3:/dev/neuron3:rwm"]
    assert spec.ports == {"8080/tcp": ("127.0.0.1", 18081)}
    assert limit == 42


def test_cli_non_contiguous_devices_are_refused_before_docker(recorded, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    code = cli.main(["local", "deploy", "--neuron-devices", "0,2", "--model-data", str(model)])
    assert code == 2
    assert recorded == []
    assert "not contiguous (missing 1)" in capsys.readouterr().err


def test_cli_missing_device_is_an_error_naming_the_present_ones(recorded, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    code = cli.main(["local", "deploy", "--neuron-devices", "7", "--model-data", str(model)])
    assert code == 2  # AcceleratorError is not the caller's fault
    assert "/dev/neuron7 not found" in capsys.readouterr().err
    assert recorded == []


def test_cli_without_neuron_devices_keeps_the_sdk_path(recorded, monkeypatch, channels, tmp_path):
    from smneuron.tools.local import sdk as localmode

    sdk_calls = []
    monkeypatch.setattr(localmode, "train", lambda *a, **k: sdk_calls.append((a, k)) or "file://x")
    argv = ["local", "train", "--channel", f"train={channels['train']}"]
    assert cli.main([*argv, "--output", str(tmp_path / "out")]) == 0
    assert len(sdk_calls) == 1
    assert recorded == []
