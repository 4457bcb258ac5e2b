"""SMNEURON_TRUST_REMOTE_CODE: off by default, passed wherever train, compile and serve load a
model or tokenizer, and a checkpoint that needs its own code is refused with the switch named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from smneuron.artifact.backends import CpuBackend  # noqa: E402
from smneuron.env import ENV  # noqa: E402
from smneuron.errors import ArtifactError, ConfigurationError  # noqa: E402
from smneuron.job import TrainingEnv  # noqa: E402
from smneuron.serving.handler import Handler, WorkerInfo  # noqa: E402
from smneuron.serving.model import load_compiled  # noqa: E402
from smneuron.serving.settings import ServingSettings  # noqa: E402
from smneuron.tools import cli  # noqa: E402
from smneuron.training import hyperparameters, trainer  # noqa: E402
from smneuron.training.checkpoints import TerminationFlag  # noqa: E402

GOOD_CSV = "text,label\nwin a free cruise now,spam\nsee you at lunch,ham\n"
# What transformers needs to see to run a checkpoint's own code: a model type it does not
# know, mapped to modules inside the checkpoint.
REMOTE_CONFIG = {
    "model_type": "smneuron-remote",
    "auto_map": {
        "AutoConfig": "configuration_remote.RemoteConfig",
        "AutoModelForSequenceClassification": "modeling_remote.RemoteForSequenceClassification",
    },
}


class Stop(Exception):
    """Raised by a recorder to end a run once the load it watches has been seen."""


class Recorder:
    """Wraps ``transformers.<Auto class>.from_pretrained`` to log the trust_remote_code it gets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: list[tuple[str, object]] = []

    def __call__(self, name: str, *, stop: bool = False) -> None:
        auto = getattr(transformers, name)
        original = auto.from_pretrained

        def from_pretrained(*args, **kwargs):
            self.calls.append((name, kwargs.get("trust_remote_code", "not passed")))
            if stop:
                raise Stop(name)
            return original(*args, **kwargs)

        self.monkeypatch.setattr(auto, "from_pretrained", from_pretrained)


@pytest.fixture
def record(monkeypatch) -> Recorder:
    return Recorder(monkeypatch)


def remote_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **REMOTE_CONFIG}))
    return target


# --------------------------------------------------------------------------------------------
# train


@pytest.fixture
def job(opt_ml, tiny_model_dir):
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": GOOD_CSV})
    opt_ml.hyperparameters({"max_steps": 1, "validation_channel": ""})
    return opt_ml


@pytest.mark.parametrize("value, expected", [(None, False), ("true", True)])
def test_training_passes_the_setting_to_tokenizer_and_model(
    job, record, monkeypatch, value, expected
):
    if value is None:
        monkeypatch.delenv(ENV.TRUST_REMOTE_CODE, raising=False)
    else:
        monkeypatch.setenv(ENV.TRUST_REMOTE_CODE, value)
    record("AutoTokenizer")
    record("AutoModelForSequenceClassification", stop=True)
    env = TrainingEnv.from_env()
    with pytest.raises(Stop):
        trainer.train(env, hyperparameters.load(env.hyperparameters), TerminationFlag(), "cpu")
    assert record.calls == [
        ("AutoTokenizer", expected),
        ("AutoModelForSequenceClassification", expected),
    ]


def test_training_refuses_a_checkpoint_with_its_own_code_by_default(tiny_model_dir, tmp_path):
    source = remote_checkpoint(tiny_model_dir, tmp_path / "remote")
    hps = hyperparameters.load({})
    with pytest.raises(ConfigurationError) as info:
        trainer.load_pretrained(str(source), ("ham", "spam"), hps)
    assert f"{ENV.TRUST_REMOTE_CODE}=true" in info.value.message
    assert "custom code" in info.value.message and info.value.client_error


# --------------------------------------------------------------------------------------------
# smneuron compile


def compile_argv(checkpoint: Path, output: Path) -> list[str]:
    return [
        "compile",
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(output),
        "--backend",
        "cpu",
        "--batch-size",
        "1",
        "--sequence-lengths",
        "16",
    ]


@pytest.mark.parametrize("value, expected", [(None, False), ("1", True)])
def test_compile_command_passes_the_setting(
    tiny_model_dir, tmp_path, record, monkeypatch, value, expected
):
    if value is None:
        monkeypatch.delenv(ENV.TRUST_REMOTE_CODE, raising=False)
    else:
        monkeypatch.setenv(ENV.TRUST_REMOTE_CODE, value)
    record("AutoModelForSequenceClassification", stop=True)
    with pytest.raises(Stop):
        cli.main(compile_argv(tiny_model_dir, tmp_path / "out"))
    assert record.calls == [("AutoModelForSequenceClassification", expected)]


def test_compile_job_passes_the_setting(tiny_model_dir, opt_ml, record, monkeypatch):
    opt_ml.hyperparameters({"backend": "cpu"})
    shutil.copytree(tiny_model_dir, opt_ml.paths.channel("checkpoint"))
    monkeypatch.setenv(ENV.TRUST_REMOTE_CODE, "true")
    record("AutoModelForSequenceClassification", stop=True)
    assert cli.main(["compile"]) == 2  # Stop is not one of our errors
    assert record.calls == [("AutoModelForSequenceClassification", True)]


def test_compile_refuses_a_checkpoint_with_its_own_code_by_default(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv(ENV.TRUST_REMOTE_CODE, raising=False)
    source = remote_checkpoint(tiny_model_dir, tmp_path / "remote")
    assert cli.main(compile_argv(source, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert f"{ENV.TRUST_REMOTE_CODE}=true" in err and "custom code" in err


# --------------------------------------------------------------------------------------------
# serve


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, tiny_model_factory) -> Path:
    """A one-bucket CPU artifact compiled by `smneuron compile` from the tiny classifier."""
    output = tmp_path_factory.mktemp("artifact") / "model"
    torch.set_num_threads(1)
    assert cli.main(compile_argv(tiny_model_factory("text-classification"), output)) == 0
    return output


@pytest.mark.parametrize("value, expected", [(None, False), ("true", True)])
def test_serving_passes_the_setting_to_the_tokenizer(artifact, tmp_path, record, value, expected):
    environ = {ENV.BASE_DIR: str(tmp_path)}
    if value is not None:
        environ[ENV.TRUST_REMOTE_CODE] = value
    settings = ServingSettings.from_env(environ)
    record("AutoTokenizer")
    worker = WorkerInfo(index=0, cores=None, settings=settings, backend=CpuBackend())
    handler = Handler.load(artifact, worker)
    assert record.calls == [("AutoTokenizer", expected)]
    assert json.loads(handler.invoke(b'"hello"', "application/json", None).body)[0]["label"]


def test_serving_refuses_a_tokenizer_with_its_own_code_by_default(artifact, tmp_path):
    model_dir = shutil.copytree(artifact, tmp_path / "model")
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "RemoteTokenizer"
    config["auto_map"] = {"AutoTokenizer": ["tokenization_remote.RemoteTokenizer", None]}
    path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as info:
        load_compiled(model_dir, CpuBackend())
    assert f"{ENV.TRUST_REMOTE_CODE}=true" in info.value.message
