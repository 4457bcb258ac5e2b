"""`train`: the SageMaker training contract in one function.

Read the job from /opt/ml, train, write the artifact and ``success``. A client error (bad
hyperparameter, bad data) writes a one-line reason to ``failure`` and exits 1; anything else
writes the reason and the traceback and exits 2; SIGTERM exits 143 after checkpointing
(``smneuron.job.run_job`` writes the outcome).
"""

from __future__ import annotations

import logging
import os
import sys

from smneuron.accelerator import detect_backend
from smneuron.env import ENV
from smneuron.job import Paths, ProcessFailed, TrainingEnv, run_job
from smneuron.training import hyperparameters, launch, script
from smneuron.training.checkpoints import TerminationFlag

log = logging.getLogger("smneuron.training")


def main() -> int:
    configure_logging()
    paths = Paths.from_env()
    worker = launch.is_worker(os.environ)
    flag = TerminationFlag()
    flag.install()
    # The launcher clears the previous attempt's outcome; its workers must not clear it again.
    return run_job(paths, "training", lambda: train_job(flag, worker=worker), fresh=not worker)


def train_job(flag: TerminationFlag, *, worker: bool) -> bool:
    """Run the user's script, launch the workers, or train; True when this process publishes
    the result (writes ``success``)."""
    env = TrainingEnv.from_env()
    backend = detect_backend(os.environ)  # once; workers are told it (SMNEURON_ACCELERATOR)
    if not worker and script.requested(env.hyperparameters, os.environ):
        return _run_script(env, backend)
    hps = hyperparameters.load(env.hyperparameters)
    if not worker:
        layout = launch.plan_host(
            env.resource,
            env.paths,
            os.environ,
            backend=backend,
            bf16=hps.bf16,
            precompile=hps.precompile,
        )
        if layout.backend == "neuron":  # before any worker starts (driver too old: failure)
            from smneuron.neuron.driver import check_host_driver

            check_host_driver()
        if launch.needs_launch(layout, os.environ):
            code = launch.run(layout, os.environ)
            if code != 0:
                raise ProcessFailed(f"training worker exited with code {code}; see the log", code)
            return False  # the rank-0 worker wrote success
    from smneuron.training.trainer import train

    result = train(env, hps, flag, backend)
    if result.precompile_run:  # nothing to publish: neuron_parallel_compile compiles next
        if launch.is_rank_zero(os.environ):
            log.info("precompile pass: graphs extracted in %d steps", result.global_step)
        return False
    if not launch.is_rank_zero(os.environ):
        return False
    log.info("done: step %d, artifact in %s", result.global_step, result.artifact)
    return True


def _run_script(env: TrainingEnv, backend: str) -> bool:
    """Script mode: the user's script (sagemaker_program / SAGEMAKER_PROGRAM) instead of ours."""
    outcome = script.run(env, os.environ, backend)
    if outcome.code != 0:
        raise ProcessFailed(outcome.reason, outcome.code)
    return True


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
