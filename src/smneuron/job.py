"""The /opt/ml job contract: paths, the job's configuration files, and its outcome.

The outcome of the ``train`` and ``smneuron compile`` jobs is written in one place,
``run_job``: ``success`` when the work is done; on a client error (``SmneuronError`` with
``client_error``) a one-line ``failure`` and exit 1; on anything else the reason and the
traceback in ``failure`` and exit 2; on SIGTERM (``Terminated``) the reason and exit 143.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.env import ENV, read
from smneuron.errors import ConfigurationError, SmneuronError

log = logging.getLogger(__name__)

EXIT_SUCCESS = 0
EXIT_CLIENT_ERROR = 1
EXIT_INTERNAL_ERROR = 2
# 128 + SIGTERM, what a shell reports for a process ended by SIGTERM.
EXIT_TERMINATED = 143


@dataclass(frozen=True)
class Paths:
    """The SageMaker directory layout under one base directory (``/opt/ml`` by default)."""

    base: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Paths:
        return cls(Path(read(ENV.BASE_DIR, environ)))

    @property
    def input_config(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters(self) -> Path:
        return self.input_config / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.input_config / "resourceconfig.json"

    @property
    def input_data_config(self) -> Path:
        return self.input_config / "inputdataconfig.json"

    @property
    def data(self) -> Path:
        return self.base / "input" / "data"

    def channel(self, name: str) -> Path:
        return self.data / name

    @property
    def model(self) -> Path:
        return self.base / "model"

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def output_data(self) -> Path:
        return self.output / "data"

    @property
    def failure(self) -> Path:
        return self.output / "failure"

    @property
    def success(self) -> Path:
        return self.output / "success"

    @property
    def checkpoints(self) -> Path:
        return self.base / "checkpoints"

    @property
    def neuron_cache(self) -> Path:
        """Neuron compile cache: under checkpoints so SageMaker's S3 sync keeps it."""
        return self.checkpoints / "neuron-compile-cache"

    @property
    def code(self) -> Path:
        return self.model / "code"


def read_json(path: Path, what: str, default: Any = None) -> Any:
    """Read a JSON file: a missing one gives ``default`` (when given), a broken one an error."""
    if not path.exists():
        if default is not None:
            return default
        raise ConfigurationError(f"{what} not found at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as err:
        raise ConfigurationError(f"{what} at {path} is not valid JSON: {err}") from err


@dataclass(frozen=True)
class ResourceConfig:
    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    network_interface_name: str = "eth0"

    @property
    def master(self) -> str:
        return self.hosts[0]

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceConfig:
        hosts = tuple(data.get("hosts") or ("algo-1",))
        current = data.get("current_host") or hosts[0]
        if current not in hosts:
            raise ConfigurationError(
                f"resourceconfig.json: current_host {current!r} is not in hosts {list(hosts)}"
            )
        return cls(
            current_host=current,
            hosts=tuple(sorted(hosts)),
            network_interface_name=data.get("network_interface_name", "eth0"),
        )


@dataclass(frozen=True)
class TrainingEnv:
    """What SageMaker tells a training container, read once."""

    paths: Paths
    hyperparameters: Mapping[str, Any]
    resource: ResourceConfig
    input_data_config: Mapping[str, Any]
    channels: Mapping[str, Path]
    trust_remote_code: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingEnv:
        paths = Paths.from_env(environ)
        raw_hps = read_json(paths.hyperparameters, "hyperparameters.json", default={})
        if not isinstance(raw_hps, dict):
            raise ConfigurationError("hyperparameters.json must hold a JSON object")
        resource = ResourceConfig.from_dict(
            read_json(paths.resource_config, "resourceconfig.json", default={})
        )
        data_config = read_json(paths.input_data_config, "inputdataconfig.json", default={})
        channel_names = set(data_config) | (
            {p.name for p in paths.data.iterdir() if p.is_dir()} if paths.data.is_dir() else set()
        )
        channels = {name: paths.channel(name) for name in sorted(channel_names)}
        trust = read(ENV.TRUST_REMOTE_CODE, environ)
        return cls(paths, raw_hps, resource, data_config, channels, trust_remote_code=trust)


# --------------------------------------------------------------------------------------------
# The job's outcome: success / failure files and the exit code


class Terminated(BaseException):
    """The job got SIGTERM and stops (after saving a checkpoint when it was training).

    A BaseException, like KeyboardInterrupt, so that library code catching Exception (a data
    reader, a retry loop) cannot turn it into another error.
    """


class ProcessFailed(SmneuronError):
    """A process this job ran (a torchrun worker, the user's script) exited non-zero.

    Attributes:
        message: the reason for the failure file: a first line, then details (a stderr tail).
        exit_code: the process's exit code, which the job exits with too.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code(err: BaseException) -> int:
    """The exit code of a job (or a ``smneuron`` command) that ended with ``err``."""
    if isinstance(err, Terminated):
        return EXIT_TERMINATED
    if isinstance(err, ProcessFailed):
        return err.exit_code
    if isinstance(err, SmneuronError) and err.client_error:
        return EXIT_CLIENT_ERROR
    return EXIT_INTERNAL_ERROR


def clear_outcome(paths: Paths) -> None:
    """A new attempt (a resume, a re-run) starts without the previous one's success/failure."""
    for path in (paths.success, paths.failure):
        path.unlink(missing_ok=True)


def write_success(paths: Paths) -> None:
    paths.output.mkdir(parents=True, exist_ok=True)
    paths.success.write_text("", encoding="utf-8")


def write_failure(paths: Paths, reason: str) -> None:
    """Write the failure file once: the first process to fail explains the job's failure.

    The first line is the reason on one line (SageMaker shows it as the job's
    FailureReason); a traceback, when there is one, follows after a blank line.
    """
    first_line, _, rest = reason.strip().partition("\n")
    text = " ".join(first_line.split()) + ("\n" + rest if rest else "") + "\n"
    try:
        paths.output.mkdir(parents=True, exist_ok=True)
        with open(paths.failure, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        pass
    except OSError as err:
        log.error("cannot write %s: %s", paths.failure, err)


def is_fault(err: BaseException) -> bool:
    """Neither the caller's mistake, nor a stop, nor a child process's failure (it has its own
    reason): a fault of the toolkit or the platform, whose trace belongs in the failure file."""
    if isinstance(err, Terminated | ProcessFailed):
        return False
    return not (isinstance(err, SmneuronError) and err.client_error)


def failure_reason(err: BaseException) -> str:
    """What ``failure`` says: one line for the caller's mistakes and stops, a child process's
    own reason, else the error and its trace."""
    if isinstance(err, ProcessFailed):
        return err.message
    if not is_fault(err):
        return " ".join(str(err).split())  # one line: SageMaker shows it as FailureReason
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return f"{type(err).__name__}: {err}\n\n{trace}"


def run_job(paths: Paths, what: str, work: Callable[[], bool], *, fresh: bool = True) -> int:
    """Run a job's ``work`` under the /opt/ml outcome contract and return the exit code.

    Args:
        paths: the job's /opt/ml tree.
        what: the job's name for the log (``training``, ``compile``).
        work: does the job; returns True when this process publishes the result (``success``
            is written), False when it has nothing to publish (a worker of rank > 0, a
            precompile pass). Raising is how it fails.
        fresh: remove the previous attempt's ``success``/``failure`` first (False in the
            worker processes of a job whose launcher already did).

    Never raises for ``Exception`` or ``Terminated``; KeyboardInterrupt passes through.
    """
    if fresh:
        clear_outcome(paths)
    try:
        publish = work()
    except (Exception, Terminated) as err:
        if isinstance(err, Terminated):
            log.warning("%s", err)
        else:
            fault = is_fault(err)
            summary = str(err) if fault else failure_reason(err).partition("\n")[0]
            log.error("%s failed: %s", what, summary, exc_info=err if fault else None)
        write_failure(paths, failure_reason(err))
        return exit_code(err)
    if publish:
        write_success(paths)
    return EXIT_SUCCESS
