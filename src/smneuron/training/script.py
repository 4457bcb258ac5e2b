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
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.env import ENV
from smneuron.errors import ConfigurationError
from smneuron.job import EXIT_TERMINATED, TrainingEnv
from smneuron.training import launch, smenv, sourcedir, supervisor
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
    said = supervisor.last_line(done.stderr.splitlines()) or f"exit code {done.returncode}"
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


def run(env: TrainingEnv, environ: Mapping[str, str], backend: str) -> Outcome:
    """Fetch the source, install its requirements, run the script on ``backend``."""
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
    plan = launch.plan_host(env.resource, paths, environ, backend=backend)
    torchrun = plan.backend == "neuron" or job.distribution_requested
    neurons = plan.nproc_per_node if plan.backend == "neuron" else 0
    training = smenv.training_env(job, env, code_dir, num_neurons=neurons, environ=environ)
    child_env = {k: v for k, v in environ.items() if not (torchrun and k in plan.unset)}
    child_env.update(plan.env)
    child_env.update(smenv.sm_environment(training))
    child_env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SAGEMAKER_JOB_NAME": job.job_name,
            "SAGEMAKER_REGION": job.region,
            "CURRENT_HOST": env.resource.current_host,
        }
    )
    install_requirements(code_dir, child_env, job.install_requirements)
    args = smenv.to_cmd_args(job.hyperparameters)
    command = (
        torchrun_entry(plan, job.program, args) if torchrun else entry_command(job.program, args)
    )
    log.info("script mode: running %s in %s", " ".join(command), code_dir)
    code, stopped, stderr = supervisor.supervise(command, child_env, code_dir, job.stop_grace_s)
    log.info("%s exited with code %d", job.program, code)
    tail = "\n".join(stderr[-STDERR_TAIL_LINES:])
    if stopped:
        return Outcome(
            code or EXIT_TERMINATED,
            f"stopped by SIGTERM; {job.program} exited with code {code}\n\n{tail}",
        )
    if code == 0:
        return Outcome(0)
    cause = supervisor.exception_line(stderr) or "no error output; see the log"
    return Outcome(
        code,
        f"{job.program} exited with code {code}: {cause}\n\nlast lines of stderr:\n{tail}",
    )
