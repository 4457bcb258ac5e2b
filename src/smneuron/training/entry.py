"""`train`: the SageMaker training contract in one function.

Read the job from /opt/ml, train, write the artifact and ``success``. A client error (bad
hyperparameter, bad data) writes a one-line reason to ``failure`` and exits 1; anything else
writes the reason and the traceback and exits 2; SIGTERM exits 143 after checkpointing.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from smneuron.env import ENV
from smneuron.errors import SmneuronError
from smneuron.job import Paths, TrainingEnv
from smneuron.training import hyperparameters, launch, script
from smneuron.training.checkpoints import EXIT_TERMINATED, Terminated, TerminationFlag

log = logging.getLogger("smneuron.training")

EXIT_CLIENT_ERROR = 1
EXIT_INTERNAL_ERROR = 2


def main() -> int:
    configure_logging()
    paths = Paths.from_env()
    worker = launch.is_worker(os.environ)
    if not worker:
        clear_status(paths)
    flag = TerminationFlag()
    flag.install()
    try:
        env = TrainingEnv.from_env()
        if not worker and script.requested(env.hyperparameters, os.environ):
            return _run_script(env, paths)
        hps = hyperparameters.load(env.hyperparameters)
        if not worker:
            layout = launch.plan_host(
                env.resource, paths, os.environ, bf16=hps.bf16, precompile=hps.precompile
            )
            if layout.backend == "neuron":  # before any worker starts (driver too old: failure)
                from smneuron.neuron.driver import check_host_driver

                check_host_driver()
            if launch.needs_launch(layout, os.environ):
                code = launch.run(layout, os.environ)
                if code != 0:
                    write_failure(paths, f"training worker exited with code {code}; see the log")
                return code
        from smneuron.training.trainer import train

        result = train(env, hps, flag)
        if result.precompile_run:  # nothing to publish: neuron_parallel_compile compiles next
            if launch.is_rank_zero(os.environ):
                log.info("precompile pass: graphs extracted in %d steps", result.global_step)
            return 0
        if launch.is_rank_zero(os.environ):
            paths.success.parent.mkdir(parents=True, exist_ok=True)
            paths.success.write_text("")
            log.info("done: step %d, artifact in %s", result.global_step, result.artifact)
        return 0
    except Terminated as err:
        log.warning("%s", err)
        write_failure(paths, str(err))
        return EXIT_TERMINATED
    except SmneuronError as err:
        if not err.client_error:
            return _internal_error(paths, err)
        log.error("%s", err.message)
        write_failure(paths, err.message)
        return EXIT_CLIENT_ERROR
    except Exception as err:  # the one boundary: everything else is our fault
        return _internal_error(paths, err)


def _run_script(env: TrainingEnv, paths: Paths) -> int:
    """Script mode: the user's script (sagemaker_program / SAGEMAKER_PROGRAM) instead of ours."""
    outcome = script.run(env, os.environ)
    if outcome.code == 0:
        paths.success.parent.mkdir(parents=True, exist_ok=True)
        paths.success.write_text("")
    else:
        log.error("%s", outcome.reason.partition("\n")[0])
        write_failure(paths, outcome.reason)
    return outcome.code


def _internal_error(paths: Paths, err: BaseException) -> int:
    trace = traceback.format_exc()
    log.error("training failed: %s\n%s", err, trace)
    write_failure(paths, f"{type(err).__name__}: {err}\n\n{trace}")
    return EXIT_INTERNAL_ERROR


def configure_logging() -> None:
    """Timestamped lines on stdout (SageMaker sends stdout to CloudWatch)."""
    level = os.environ.get(ENV.LOG_LEVEL, "INFO").upper()
    rank = os.environ.get(ENV.RANK)
    prefix = f"[rank {rank}] " if rank and os.environ.get(ENV.WORLD_SIZE, "1") != "1" else ""
    logging.basicConfig(
        stream=sys.stdout,
        level=level if isinstance(logging.getLevelName(level), int) else "INFO",
        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s",
        force=True,
    )


def clear_status(paths: Paths) -> None:
    """A re-run (resume) starts without the previous attempt's success/failure."""
    for path in (paths.success, paths.failure):
        path.unlink(missing_ok=True)


def write_failure(paths: Paths, reason: str) -> None:
    """Write the failure file once: the first process to fail explains the job's failure."""
    first_line, _, rest = reason.strip().partition("\n")
    text = " ".join(first_line.split()) + ("\n" + rest if rest else "") + "\n"
    try:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        with open(paths.failure, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        pass
    except OSError as err:
        log.error("cannot write %s: %s", paths.failure, err)
