"""Script mode: the user's own training script, run the way the SageMaker training toolkit runs it.

``train`` lands here when the hyperparameter ``sagemaker_program`` (what the SageMaker Python
SDK sends for ``entry_point``) or the ``SAGEMAKER_PROGRAM`` variable names a script. The
script gets the user's hyperparameters as command-line arguments and the toolkit's ``SM_*``
environment (same names, same formats); ``requirements.txt`` in its folder is installed first.
One process on CPU; torchrun with one process per NeuronCore on Neuron, or when the job asks
for distribution (``sagemaker_torch_distributed_enabled``, what the SDK's ``torch_distributed``
sets). SIGTERM goes to the script's whole process group, SIGKILL follows after a grace period;
the exit code is the script's, and a failure carries its exception line and stderr tail.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.env import ENV
from smneuron.errors import ConfigurationError
from smneuron.job import TrainingEnv, read_json
from smneuron.training import launch, sourcedir
from smneuron.training.checkpoints import EXIT_TERMINATED
from smneuron.typed import parse_bool

log = logging.getLogger(__name__)

PROGRAM_HP = "sagemaker_program"
SUBMIT_DIR_HP = "sagemaker_submit_directory"
# The SDK's own hyperparameters (the toolkit's list): neither arguments nor framework params.
SAGEMAKER_HYPERPARAMETERS = (
    PROGRAM_HP,
    SUBMIT_DIR_HP,
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
# Framework parameters that ask for a distributed launch (torchrun).
DISTRIBUTION_FLAGS = (
    "sagemaker_torch_distributed_enabled",  # PyTorch(distribution={"torch_distributed": ...})
    "sagemaker_pytorch_xla_multi_worker_enabled",  # {"pytorchxla": ...}
    "sagemaker_distributed_dataparallel_enabled",  # {"smdistributed": {"dataparallel": ...}}
    "sagemaker_pytorch_ddp_enabled",  # {"pytorchddp": ...}
)
DEFAULT_STOP_GRACE_S = 25.0  # SageMaker sends SIGKILL 30 s after SIGTERM
STDERR_TAIL_LINES = 30  # in the failure file
STDERR_SCAN_LINES = 400  # searched for the exception line
# A shell script runs through its own shebang; a script without one runs under /bin/sh.
SHELL_EXEC = 'exec "./$0" "$@"'
OFFLINE_MARKERS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "Max retries exceeded",
)


def requested(raw_hyperparameters: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """Whether this job runs a user script (``sagemaker_program`` / ``SAGEMAKER_PROGRAM``)."""
    return bool(_decode(raw_hyperparameters.get(PROGRAM_HP)) or environ.get(ENV.SAGEMAKER_PROGRAM))


def _decode(value: Any) -> Any:
    """A hyperparameters.json value: JSON-decoded when it is JSON, else as written."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class ScriptJob:
    """What the SDK asked for: the program, its source, and the user's hyperparameters."""

    program: str
    source: str  # sagemaker_submit_directory; empty: /opt/ml/code as it is
    hyperparameters: Mapping[str, Any]
    framework_params: Mapping[str, Any]  # other sagemaker_* hyperparameters
    region: str = ""
    log_level: int = logging.INFO
    job_name: str = ""
    install_requirements: bool = True
    stop_grace_s: float = DEFAULT_STOP_GRACE_S

    @classmethod
    def from_env(cls, raw: Mapping[str, Any], environ: Mapping[str, str]) -> ScriptJob:
        decoded = {name: _decode(value) for name, value in raw.items()}
        sdk = {k: v for k, v in decoded.items() if k in SAGEMAKER_HYPERPARAMETERS}
        framework = {
            k: v for k, v in decoded.items() if k.startswith("sagemaker_") and k not in sdk
        }
        user = {k: v for k, v in decoded.items() if k not in sdk and k not in framework}
        program = str(sdk.get(PROGRAM_HP) or environ.get(ENV.SAGEMAKER_PROGRAM, "")).strip()
        if not program or Path(program).is_absolute() or ".." in Path(program).parts:
            raise ConfigurationError(
                f"{PROGRAM_HP}: {program!r} must name a script inside the source folder"
            )
        level = sdk.get("sagemaker_container_log_level", logging.INFO)
        grace = environ.get(ENV.SCRIPT_STOP_GRACE_S, "").strip()
        try:
            stop_grace_s = float(grace) if grace else DEFAULT_STOP_GRACE_S
            log_level = int(level)
        except ValueError as err:
            raise ConfigurationError(f"script mode: {err}") from err
        install = environ.get(ENV.INSTALL_REQUIREMENTS, "").strip()
        return cls(
            program=program,
            source=str(sdk.get(SUBMIT_DIR_HP) or environ.get(ENV.SAGEMAKER_SUBMIT_DIRECTORY, "")),
            hyperparameters=user,
            framework_params=framework,
            region=str(sdk.get("sagemaker_region") or ""),
            log_level=log_level,
            job_name=environ.get(ENV.TRAINING_JOB_NAME) or str(sdk.get("sagemaker_job_name", "")),
            install_requirements=parse_bool(install, ENV.INSTALL_REQUIREMENTS) if install else True,
            stop_grace_s=stop_grace_s,
        )

    @property
    def distribution_requested(self) -> bool:
        return any(_truthy(self.framework_params.get(flag)) for flag in DISTRIBUTION_FLAGS)

    @property
    def module_name(self) -> str:
        return self.program.removesuffix(".py")


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1")


# --------------------------------------------------------------------------------------------
# Arguments and environment (formats of the training toolkit)


def to_cmd_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--name value`` per hyperparameter, sorted by name (``-x`` for one-letter names).

    Values as the toolkit writes them: ``str()`` of the decoded JSON value (``True``,
    ``[1, 2]``), a dict as ``k=v,k2=v2``, None as an empty string.
    """
    args: list[str] = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        args.append(f"--{name}" if len(str(name)) > 1 else f"-{name}")
        if isinstance(value, Mapping):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append("" if value is None else str(value))
    return args


def env_value(value: Any) -> str:
    """A string as it is, None as empty, anything else compact JSON with sorted keys."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def num_cpus() -> int:
    """CPUs this process may use (the container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def training_env(
    job: ScriptJob,
    env: TrainingEnv,
    code_dir: Path,
    *,
    num_neurons: int,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The toolkit's ``SM_TRAINING_ENV`` dictionary for this job."""
    paths = env.paths
    resource = read_json(paths.resource_config, "resourceconfig.json", default={}) or {
        "current_host": env.resource.current_host,
        "hosts": list(env.resource.hosts),
        "network_interface_name": env.resource.network_interface_name,
    }
    hosts = list(env.resource.hosts)
    group = resource.get("current_group_name", "homogeneousCluster")
    groups = {g["instance_group_name"]: g for g in resource.get("instance_groups", [])}
    distribution_groups = job.framework_params.get(
        "sagemaker_distribution_instance_groups", [group] if job.distribution_requested else []
    )
    distribution_hosts = (
        [h for name in distribution_groups for h in groups.get(name, {}).get("hosts", [])]
        if groups
        else list(hosts)
    )
    master = distribution_hosts[0] if distribution_hosts else hosts[0]
    return {
        "additional_framework_parameters": dict(job.framework_params),
        "channel_input_dirs": {name: str(path) for name, path in env.channels.items()},
        "current_host": env.resource.current_host,
        "current_instance_group": group,
        "current_instance_group_hosts": groups.get(group, {}).get("hosts", []),
        "current_instance_type": resource.get("current_instance_type", "local"),
        "distribution_hosts": distribution_hosts,
        "distribution_instance_groups": distribution_groups,
        "framework_module": environ.get(ENV.SAGEMAKER_TRAINING_MODULE),
        "hosts": hosts,
        "hyperparameters": dict(job.hyperparameters),
        "input_config_dir": str(paths.input_config),
        "input_data_config": dict(env.input_data_config),
        "input_dir": str(paths.base / "input"),
        "instance_groups": list(groups),
        "instance_groups_dict": groups,
        "is_hetero": len(groups) > 1,
        "is_master": env.resource.current_host == master,
        "is_modelparallel_enabled": False,
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": job.job_name,
        "log_level": job.log_level,
        "master_hostname": master,
        "model_dir": str(paths.model),
        "module_dir": job.source or str(code_dir),
        "module_name": job.module_name,
        "network_interface_name": env.resource.network_interface_name,
        "num_cpus": num_cpus(),
        "num_gpus": 0,
        "num_neurons": num_neurons,
        "output_data_dir": str(paths.output_data),
        "output_dir": str(paths.output),
        "output_intermediate_dir": str(paths.output / "intermediate"),
        "resource_config": resource,
        "user_entry_point": job.program,
    }


# Keys of SM_TRAINING_ENV that also become SM_<KEY> variables (the toolkit's to_env_vars).
EXPORTED = (
    "hosts",
    "network_interface_name",
    "user_entry_point",
    "resource_config",
    "input_data_config",
    "output_data_dir",
    "current_host",
    "current_instance_type",
    "current_instance_group",
    "current_instance_group_hosts",
    "instance_groups",
    "instance_groups_dict",
    "distribution_instance_groups",
    "is_hetero",
    "module_name",
    "log_level",
    "framework_module",
    "input_dir",
    "input_config_dir",
    "output_dir",
    "num_cpus",
    "num_gpus",
    "num_neurons",
    "model_dir",
    "module_dir",
    "output_intermediate_dir",
)


def sm_environment(training: Mapping[str, Any]) -> dict[str, str]:
    """``SM_*`` variables from the ``SM_TRAINING_ENV`` dictionary, in the toolkit's formats."""
    values: dict[str, Any] = {key: training[key] for key in EXPORTED}
    values["hps"] = training["hyperparameters"]
    values["framework_params"] = training["additional_framework_parameters"]
    values["channels"] = sorted(training["channel_input_dirs"])
    values["training_env"] = dict(training)
    values["user_args"] = to_cmd_args(training["hyperparameters"])
    for name, path in training["channel_input_dirs"].items():
        values[f"channel_{name}"] = path
    for name, value in training["hyperparameters"].items():
        values[f"hp_{name}"] = value
    return {f"SM_{str(key).upper()}": env_value(value) for key, value in values.items()}


# --------------------------------------------------------------------------------------------
# Commands


def entry_command(program: str, args: Sequence[str], python: str = sys.executable) -> list[str]:
    """``python train.py ARGS`` for a .py file, the script itself (via /bin/sh) otherwise."""
    if program.endswith(".py"):
        return [python, program, *args]
    return ["/bin/sh", "-c", SHELL_EXEC, program, *args]


def torchrun_entry(plan: launch.LaunchPlan, program: str, args: Sequence[str]) -> list[str]:
    """The torchrun line that starts ``nproc_per_node`` copies of the script on this host."""
    if program.endswith(".py"):
        return launch.torchrun_command(plan, program=[program], args=args)
    return launch.torchrun_command(
        plan, program=["--no-python", "/bin/sh", "-c", SHELL_EXEC, program], args=args
    )


def install_requirements(code_dir: Path, env: Mapping[str, str], allowed: bool) -> None:
    """``pip install -r requirements.txt`` in the source folder, as the toolkit does."""
    requirements = code_dir / "requirements.txt"
    if not requirements.is_file():
        return
    if not allowed:
        log.warning("%s=false: %s not installed", ENV.INSTALL_REQUIREMENTS, requirements)
        return
    command = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
    command += ["--timeout", "15", "--retries", "1", "-r", str(requirements)]
    log.info("installing %s", requirements)
    done = subprocess.run(
        command, cwd=code_dir, env=dict(env), capture_output=True, text=True, check=False
    )
    sys.stdout.write(done.stdout)
    if done.returncode == 0:
        return
    sys.stderr.write(done.stderr)
    said = _last_line(done.stderr.splitlines()) or f"exit code {done.returncode}"
    if any(marker in done.stdout + done.stderr for marker in OFFLINE_MARKERS):
        raise ConfigurationError(
            f"requirements.txt could not be installed: the job has no network access to a "
            f"package index (network isolation, or a VPC without internet). Install the "
            f"packages into the image, or set {ENV.INSTALL_REQUIREMENTS}=false. pip: {said}"
        )
    raise ConfigurationError(f"requirements.txt could not be installed: {said}")


# --------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class Outcome:
    code: int
    reason: str = ""  # for the failure file when code != 0


def _last_line(lines: Sequence[str]) -> str:
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def exception_line(lines: Sequence[str]) -> str:
    """The exception a Python traceback ended with (a worker's, not torchrun's), else the
    last line of stderr."""
    found: list[str] = []
    in_trace = False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_trace = True
        elif in_trace and line and not line[0].isspace():
            in_trace = False
            found.append(line.strip())
    if not found:
        return _last_line(lines)
    workers = [line for line in found if "ChildFailedError" not in line]
    return (workers or found)[-1]


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(
    command: Sequence[str], env: Mapping[str, str], cwd: Path, grace_s: float
) -> tuple[int, bool, list[str]]:
    """Run ``command`` in its own process group; return (exit code, stopped, stderr lines).

    stdout is inherited (streamed as it comes); stderr is copied through as it comes and its
    last lines kept. SIGTERM/SIGINT are forwarded to the whole group; SIGKILL follows
    ``grace_s`` after a SIGTERM. Whatever is left of the group at the end is killed.
    """
    child = subprocess.Popen(
        list(command), env=dict(env), cwd=cwd, stderr=subprocess.PIPE, start_new_session=True
    )
    assert child.stderr is not None
    tail: deque[str] = deque(maxlen=STDERR_SCAN_LINES)

    def pump() -> None:
        assert child.stderr is not None
        for raw in child.stderr:
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            tail.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    reader = threading.Thread(target=pump, name="script-stderr", daemon=True)
    reader.start()
    stopped = threading.Event()
    killer: list[threading.Timer] = []

    def forward(signum: int, frame: object) -> None:
        _signal_group(child.pid, signum)
        if signum == signal.SIGTERM and not stopped.is_set():
            stopped.set()
            log.warning("SIGTERM: forwarded to the script; SIGKILL in %.0fs", grace_s)
            timer = threading.Timer(grace_s, _signal_group, (child.pid, signal.SIGKILL))
            timer.daemon = True
            timer.start()
            killer.append(timer)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for timer in killer:
            timer.cancel()
        _signal_group(child.pid, signal.SIGKILL)  # leftovers hold stderr open
        reader.join(timeout=10)
    return (128 - code if code < 0 else code), stopped.is_set(), list(tail)


def run(env: TrainingEnv, environ: Mapping[str, str]) -> Outcome:
    """Fetch the source, install its requirements, run the script; the job's outcome."""
    job = ScriptJob.from_env(env.hyperparameters, environ)
    paths = env.paths
    code_dir = sourcedir.fetch(job.source, paths.base / "code", region=job.region, environ=environ)
    if not (code_dir / job.program).is_file():
        present = ", ".join(sorted(p.name for p in code_dir.iterdir())[:20]) or "nothing"
        raise ConfigurationError(
            f"{PROGRAM_HP}: {job.program} is not in the source folder {code_dir} "
            f"(it holds: {present})"
        )
    if not job.program.endswith(".py"):
        (code_dir / job.program).chmod(0o755)
    plan = launch.plan_host(env.resource, paths, environ)
    torchrun = plan.backend == "neuron" or job.distribution_requested
    neurons = plan.nproc_per_node if plan.backend == "neuron" else 0
    training = training_env(job, env, code_dir, num_neurons=neurons, environ=environ)
    child_env = {k: v for k, v in environ.items() if not (torchrun and k in plan.unset)}
    child_env.update(plan.env)
    child_env.update(sm_environment(training))
    child_env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SAGEMAKER_JOB_NAME": job.job_name,
            "SAGEMAKER_REGION": job.region,
            "CURRENT_HOST": env.resource.current_host,
        }
    )
    install_requirements(code_dir, child_env, job.install_requirements)
    args = to_cmd_args(job.hyperparameters)
    command = (
        torchrun_entry(plan, job.program, args) if torchrun else entry_command(job.program, args)
    )
    log.info("script mode: running %s in %s", " ".join(command), code_dir)
    code, stopped, stderr = supervise(command, child_env, code_dir, job.stop_grace_s)
    log.info("%s exited with code %d", job.program, code)
    tail = "\n".join(stderr[-STDERR_TAIL_LINES:])
    if stopped:
        return Outcome(
            code or EXIT_TERMINATED,
            f"stopped by SIGTERM; {job.program} exited with code {code}\n\n{tail}",
        )
    if code == 0:
        return Outcome(0)
    cause = exception_line(stderr) or "no error output; see the log"
    return Outcome(
        code,
        f"{job.program} exited with code {code}: {cause}\n\nlast lines of stderr:\n{tail}",
    )
