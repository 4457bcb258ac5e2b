"""`train` on a Trainium host, with the fake neuron-ls and torch_neuronx: what would run.

No Neuron device here: the launcher's subprocess is replaced by a recorder, and the worker's
XLA set-up (``neuron.init_training_process``) by a stub, so the tests see the command lines,
environments and artifact that `train` would produce on a trn1.32xlarge.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smneuron.env import ENV
from smneuron.job import Paths, ResourceConfig
from smneuron.training import entry, launch

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"
DEMO_DATA = Path(__file__).resolve().parents[2] / "examples" / "spam" / "data"
PINNED = {"torch-neuronx": "2.9.0.2.13.26312+8e870898", "neuronx-cc": "2.24.8799.0+6f62ff7c"}
NEURON_MODULES = (
    "smneuron.neuron.backend",
    "torch_neuronx",
    "torch_xla",
    "neuronxcc",
    "libneuronxla",
)


def hosts(current: str = "algo-1", count: int = 1) -> ResourceConfig:
    names = [f"algo-{i}" for i in range(count, 0, -1)]  # unsorted, as a test of the sort
    return ResourceConfig.from_dict(
        {"current_host": current, "hosts": names, "network_interface_name": "eth1"}
    )


@pytest.fixture
def trn1(monkeypatch, tmp_path):
    """This process sees a trn1.32xlarge: the fake neuron-ls on PATH, the neuron backend."""
    monkeypatch.setenv("PATH", f"{FAKE / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / "trn1.32xlarge.json"))
    monkeypatch.setenv(ENV.ACCELERATOR, "neuron")
    monkeypatch.setenv(ENV.INSTANCE_TYPE, "trn1.32xlarge")
    return Paths(tmp_path / "opt_ml")


def environ() -> dict[str, str]:
    return dict(os.environ)


# --------------------------------------------------------------------------------------------
# Planning


def test_one_host_runs_one_worker_per_neuroncore(trn1):
    plan = launch.plan_host(hosts(), trn1, environ(), backend="neuron")
    assert plan.backend == "neuron"
    assert launch.needs_launch(plan, environ())
    assert launch.commands(plan, python="python3") == [
        [
            "python3",
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--node_rank=0",
            "--nproc_per_node=32",
            "--master_addr=algo-1",
            "--master_port=29500",
            "-m",
            "smneuron.training",
        ]
    ]
    assert "FI_PROVIDER" not in plan.env  # EFA only between hosts


@pytest.mark.parametrize(("current", "rank"), [("algo-1", 0), ("algo-2", 1)])
def test_two_hosts_rank_master_and_efa(trn1, current, rank):
    plan = launch.plan_host(
        hosts(current, 2), trn1, {**environ(), ENV.MASTER_PORT: "29400"}, backend="neuron"
    )
    command = launch.torchrun_command(plan, python="python3")
    assert command[3:8] == [
        "--nnodes=2",
        f"--node_rank={rank}",
        "--nproc_per_node=32",
        "--master_addr=algo-1",
        "--master_port=29400",
    ]
    assert plan.world_size == 64
    env = launch.worker_environ(environ(), plan)
    assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert env["GLOO_SOCKET_IFNAME"] == "eth1"


def test_worker_environment_compile_cache_bf16_and_backend(trn1):
    plan = launch.plan_host(hosts(), trn1, environ(), backend="neuron", bf16=True)
    env = launch.worker_environ(environ(), plan)
    cache = str(trn1.checkpoints / "neuron-compile-cache")
    flags = shlex.split(env["NEURON_CC_FLAGS"])
    assert f"--cache_dir={cache}" in flags
    assert env["NEURON_COMPILE_CACHE_URL"] == cache
    # AWS's HF Trainer bf16 recipe: the Trainer's bf16, stochastic rounding, no compiler override
    assert "--auto-cast=none" not in flags and "--model-type=transformer" in flags
    assert env["NEURON_RT_STOCHASTIC_ROUNDING_EN"] == "1"
    assert env[ENV.ACCELERATOR] == "neuron"
    assert env[ENV.TRAINING_WORKER] == "1"
    fp32 = launch.worker_environ(
        environ(), launch.plan_host(hosts(), trn1, environ(), backend="neuron")
    )
    assert "NEURON_RT_STOCHASTIC_ROUNDING_EN" not in fp32


def test_retired_xla_bf16_variables_never_reach_the_workers(trn1, monkeypatch):
    monkeypatch.setenv("XLA_USE_BF16", "1")
    monkeypatch.setenv("XLA_DOWNCAST_BF16", "1")
    plan = launch.plan_host(hosts(), trn1, environ(), backend="neuron", bf16=True)
    env = launch.worker_environ(environ(), plan)
    assert "XLA_USE_BF16" not in env and "XLA_DOWNCAST_BF16" not in env


def test_platform_core_count_narrows_the_workers_and_stays_with_the_launcher(trn1, monkeypatch):
    monkeypatch.setenv(ENV.NEURON_NUM_CORES, "8")
    plan = launch.plan_host(hosts(), trn1, environ(), backend="neuron")
    assert "--nproc_per_node=8" in launch.torchrun_command(plan)
    assert ENV.NEURON_NUM_CORES not in launch.worker_environ(environ(), plan)


def test_precompile_runs_neuron_parallel_compile_then_the_real_run(trn1):
    plan = launch.plan_host(hosts("algo-2", 2), trn1, environ(), backend="neuron", precompile=True)
    first, second = launch.commands(plan, python="python3")
    assert first == ["neuron_parallel_compile", *second]
    assert second[:3] == ["python3", "-m", "torch.distributed.run"]
    assert "--node_rank=1" in second


def test_cpu_plan_is_unchanged_and_skips_precompile(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV.ACCELERATOR, "cpu")
    plan = launch.plan_host(hosts(), Paths(tmp_path), environ(), backend="cpu", precompile=True)
    assert plan == launch.plan(hosts())
    assert not launch.needs_launch(plan, environ())
    two = launch.plan_host(
        hosts("algo-1", 2), Paths(tmp_path), environ(), backend="cpu", precompile=True
    )
    assert launch.commands(two) == [launch.torchrun_command(two)]


# --------------------------------------------------------------------------------------------
# main() on the launcher: the subprocess replaced by a recorder


class Recorder:
    """Stands in for the started process: records (command, env), exits with a set code."""

    calls: list[tuple[list[str], dict[str, str]]] = []
    codes: list[int] = []

    def __init__(self, command, env):
        Recorder.calls.append((list(command), dict(env)))

    def wait(self) -> int:
        return Recorder.codes.pop(0) if Recorder.codes else 0

    def send_signal(self, signum: int) -> None:  # pragma: no cover - no signal in these tests
        pass


@pytest.fixture
def launcher(trn1, opt_ml, monkeypatch):
    """A trn1.32xlarge job in a tmp /opt/ml; launch records its commands instead of running."""
    Recorder.calls, Recorder.codes = [], []
    monkeypatch.setattr(launch, "start_process", Recorder)
    opt_ml.resource("algo-1", ("algo-1", "algo-2"))
    previous = signal.getsignal(signal.SIGTERM)
    yield opt_ml
    signal.signal(signal.SIGTERM, previous)


def test_main_precompiles_then_trains(launcher):
    launcher.hyperparameters({"precompile": True, "bf16": True})
    assert entry.main() == 0
    (first, first_env), (second, second_env) = Recorder.calls
    assert first[0] == "neuron_parallel_compile" and first[1:] == second
    assert second[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=32" in second and "--nnodes=2" in second
    for env in (first_env, second_env):
        assert env[ENV.TRAINING_WORKER] == "1"
        assert env["NEURON_COMPILE_CACHE_URL"] == str(launcher.paths.neuron_cache)
        assert "--retry_failed_compilation" in shlex.split(env["NEURON_CC_FLAGS"])
    assert not launcher.paths.failure.exists()  # the workers write success, not the launcher


def test_an_old_host_driver_fails_the_job_before_any_worker(launcher, monkeypatch, tmp_path):
    from smneuron.neuron import driver

    version = tmp_path / "sys-module-neuron-version"
    version.write_text("2.19.64.0\n")
    monkeypatch.setattr(driver, "SYS_MODULE_VERSION", str(version))
    launcher.hyperparameters({})
    assert entry.main() == 1  # the user's to fix: a one-line failure
    assert Recorder.calls == []
    failure = launcher.paths.failure.read_text()
    assert "Neuron driver 2.19.64.0 is older than 2.27.4.0" in failure
    assert "inference_ami_version" in failure


def test_a_current_host_driver_lets_the_job_start(launcher, monkeypatch, tmp_path):
    from smneuron.neuron import driver

    version = tmp_path / "sys-module-neuron-version"
    version.write_text("2.27.4.0\n")
    monkeypatch.setattr(driver, "SYS_MODULE_VERSION", str(version))
    launcher.hyperparameters({})
    assert entry.main() == 0 and len(Recorder.calls) == 1


def test_main_without_precompile_trains_once(launcher):
    launcher.hyperparameters({})
    assert entry.main() == 0
    assert [command[0] for command, _ in Recorder.calls] == [sys.executable]


def test_a_failed_precompile_stops_the_job(launcher):
    launcher.hyperparameters({"precompile": True})
    Recorder.codes = [1]
    assert entry.main() == 1
    assert len(Recorder.calls) == 1  # the real run never started
    assert "exited with code 1" in launcher.paths.failure.read_text()


def test_neuron_forced_on_a_host_without_neuroncores(launcher, monkeypatch):
    from smneuron.neuron import training as neuron

    monkeypatch.setattr(neuron, "detect_neuron", lambda *args, **kwargs: None)  # none found
    launcher.hyperparameters({})
    assert entry.main() == 2
    assert "no NeuronCore is visible" in launcher.paths.failure.read_text()
    assert Recorder.calls == []


def test_cpu_launch_planning_never_imports_neuron(opt_ml_factory, tmp_path):
    """`train` on a 2-host CPU job, in a fresh interpreter that COULD import torch_neuronx."""
    job = opt_ml_factory("cpu-plan")
    job.hyperparameters({"precompile": True})
    job.resource("algo-2", ("algo-1", "algo-2"))
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        from smneuron.training import entry, launch
        calls = []
        class Recorder:
            def __init__(self, command, env):
                calls.append(command)
            def wait(self):
                return 0
        launch.start_process = Recorder
        code = entry.main()
        assert importlib.util.find_spec("torch_neuronx") is not None  # available, not used
        loaded = [m for m in {NEURON_MODULES!r} if m in sys.modules]
        print(json.dumps({{"code": code, "calls": calls, "loaded": loaded}}))
        """
    )
    env = {
        **job.environ,
        "PYTHONPATH": str(FAKE / "torch-neuronx"),
        ENV.ACCELERATOR: "cpu",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["loaded"] == []
    (command,) = result["calls"]
    assert "--nproc_per_node=1" in command and "--node_rank=1" in command


# --------------------------------------------------------------------------------------------
# Trainer pieces on Neuron


def test_static_padding_on_neuron_longest_on_cpu(tiny_model_dir):
    from transformers import AutoTokenizer

    from smneuron.training.hyperparameters import load
    from smneuron.training.trainer import data_collator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    hps = load({"max_seq_length": "48"})
    features = [tokenizer("free prize"), tokenizer("see you at noon tomorrow then")]
    static = data_collator(tokenizer, hps, static_shapes=True)(features)
    dynamic = data_collator(tokenizer, hps, static_shapes=False)(features)
    assert tuple(static["input_ids"].shape) == (2, 48)
    assert tuple(dynamic["input_ids"].shape) == (2, len(features[1]["input_ids"]))


def test_evaluation_on_xla_does_not_concatenate_batches(tmp_path):
    from smneuron.training.hyperparameters import load
    from smneuron.training.trainer import training_arguments

    hps = load({})
    common = {"validation": True, "distributed": False}
    on_xla = training_arguments(hps, tmp_path / "a", on_cpu=False, **common)
    on_cpu = training_arguments(hps, tmp_path / "b", on_cpu=True, **common)
    assert on_xla.eval_do_concat_batches is False  # else a new graph at every eval step
    assert on_cpu.eval_do_concat_batches is True


def test_metrics_from_per_batch_outputs_match_the_concatenated_ones():
    import numpy as np

    from smneuron.training.trainer import compute_metrics

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    labels = np.array([0, 1, 1, 1, 0])
    whole = compute_metrics((logits, labels))
    batches = compute_metrics(
        ([logits[:2], logits[2:4], logits[4:]], [labels[:2], labels[2:4], labels[4:]])
    )
    assert batches == whole and whole["accuracy"] == 0.8


def test_precompile_steps_reach_the_first_logging_step():
    from smneuron.training.hyperparameters import load
    from smneuron.training.trainer import precompile_steps

    assert precompile_steps(load({})) == 11  # logging_steps 10
    assert precompile_steps(load({"logging_steps": "1"})) == 3
    assert precompile_steps(load({"logging_steps": "1", "max_steps": "2"})) == 2


# --------------------------------------------------------------------------------------------
# The worker on "Neuron": XLA set-up stubbed, fake torch_neuronx for the artifact


def demo_rows(name: str, count: int) -> str:
    lines = (DEMO_DATA / name).read_text(encoding="utf-8").splitlines()
    return "\n".join(lines[: count + 1]) + "\n"


@pytest.fixture
def neuron_worker(trn1, opt_ml, tiny_model_dir, monkeypatch):
    """A torchrun worker's view on a trn1: backend neuron, fake torch_neuronx, stub XLA."""
    torch = pytest.importorskip("torch")
    from smneuron.neuron import backend
    from smneuron.neuron import training as neuron
    from smneuron.versions import package_version

    monkeypatch.syspath_prepend(str(FAKE / "torch-neuronx"))
    monkeypatch.delitem(sys.modules, "torch_neuronx", raising=False)
    monkeypatch.setattr(backend, "package_version", lambda d: PINNED.get(d) or package_version(d))
    # The artifact compiles in a child process: the fake torch_neuronx on its path, its calls
    # in a file, and the training worker's own Neuron settings in the parent environment.
    calls = opt_ml.paths.base.parent / "torch-neuronx-calls.jsonl"
    monkeypatch.setenv("FAKE_TORCH_NEURONX_LOG", str(calls))
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE / "torch-neuronx"), *inherited]))
    monkeypatch.setenv("NEURON_CC_FLAGS", "--model-type=transformer --cache_dir=/tmp/x")
    monkeypatch.setenv("NEURON_RT_VISIBLE_CORES", "0")
    monkeypatch.setenv("XLA_USE_BF16", "1")
    monkeypatch.setenv(ENV.RANK, "0")
    initialised = []
    monkeypatch.setattr(neuron, "init_training_process", lambda: initialised.append(1) or "xla:0")
    monkeypatch.setenv(ENV.TRAINING_WORKER, "1")
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": demo_rows("train.csv", 16)})
    opt_ml.channel("validation", {"validation.csv": demo_rows("validation.csv", 8)})
    opt_ml.resource()
    opt_ml.hyperparameters(
        {
            "max_steps": 2,
            "per_device_train_batch_size": 8,
            "max_seq_length": 32,
            "logging_steps": 1,
            "save_steps": 1,
            "sequence_lengths": [16],
            "batch_size": 2,
            "labels": ["ham", "spam"],
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    previous = signal.getsignal(signal.SIGTERM)
    import torch_neuronx

    torch_neuronx.CALLS.clear()
    yield opt_ml, torch_neuronx, initialised
    signal.signal(signal.SIGTERM, previous)
    torch.set_num_threads(threads)
    sys.modules.pop("torch_neuronx", None)


@pytest.mark.slow
def test_worker_trains_and_compiles_the_artifact_for_neuron(neuron_worker):
    from smneuron.artifact.manifest import read_manifest
    from smneuron.neuron.backend import DEFAULT_COMPILER_ARGS

    job, torch_neuronx, initialised = neuron_worker
    assert entry.main() == 0, job.paths.failure.read_text() if job.paths.failure.exists() else ""
    assert initialised == [1]
    assert job.paths.success.exists()
    manifest = read_manifest(job.paths.model)
    assert (manifest.backend, manifest.target) == ("neuron", "trn1")
    assert manifest.compiler_args == (*DEFAULT_COMPILER_ARGS, "--target", "trn1")
    assert torch_neuronx.CALLS == []  # not traced in the training worker...
    log = Path(os.environ["FAKE_TORCH_NEURONX_LOG"]).read_text().splitlines()
    traces = [call for call in map(json.loads, log) if call["call"] == "trace"]
    # batch_size 2 with the default smaller sizes: one graph at batch 1 and one at batch 2,
    # each taking ids, mask and token types (the tiny BERT has segment embeddings).
    assert [call["shapes"] for call in traces] == [[[1, 16]] * 3, [[2, 16]] * 3]
    assert manifest.batch_sizes == (1, 2)
    # ...but in a clean child: exactly the recorded flags, none of the worker's Neuron settings
    for trace in traces:
        assert trace["compiler_args"] == list(manifest.compiler_args)
        assert trace["env"] == {}
        assert trace["cpu_backend"] is True  # the training ranks hold every NeuronCore
    assert (job.paths.checkpoints / "checkpoint-2").is_dir()


@pytest.mark.slow
def test_precompile_pass_saves_nothing(neuron_worker, monkeypatch):
    import transformers

    from smneuron.training import trainer

    job, torch_neuronx, initialised = neuron_worker
    monkeypatch.setenv("NEURON_EXTRACT_GRAPHS_ONLY", "1")

    def boom(*args, **kwargs):  # the trial's zero outputs crash accelerate's padding on Neuron
        raise AssertionError("the precompile pass must not evaluate or compute metrics")

    monkeypatch.setattr(trainer, "compute_metrics", boom)
    monkeypatch.setattr(transformers.Trainer, "evaluate", boom)
    assert entry.main() == 0, job.paths.failure.read_text() if job.paths.failure.exists() else ""
    assert initialised == [1]
    assert not job.paths.success.exists() and not job.paths.failure.exists()
    assert job.model_files() == []
    assert list(job.paths.checkpoints.iterdir()) == []  # the real run must not resume from it
    assert torch_neuronx.CALLS == []
