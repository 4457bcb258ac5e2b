"""Container contract fixtures: a trained artifact from the training image, running servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dockerjobs import (
    HYPERPARAMETERS,
    JobResult,
    Server,
    make_job,
    run_training,
    start_server,
    wait_ready,
)


@pytest.fixture(scope="session")
def trained_job(docker_client, cpu_images, docker_tiny_model, tmp_path_factory) -> JobResult:
    """`docker run IMAGE train` once on the tiny model; its /opt/ml tree afterwards."""
    opt_ml = make_job(tmp_path_factory.mktemp("job") / "ml", docker_tiny_model, HYPERPARAMETERS)
    result = run_training(docker_client, cpu_images["training"], opt_ml, ["train"])
    assert result.exit_code == 0, result.logs[-4000:]
    return result


@pytest.fixture(scope="module", params=["mms", "gunicorn"])
def server(request, docker_client, cpu_images, trained_job) -> Iterator[Server]:
    """The inference image serving the trained artifact with each server stack."""
    running = start_server(
        docker_client, cpu_images["inference"], trained_job.opt_ml / "model", request.param
    )
    try:
        wait_ready(running)
        yield running
    finally:
        running.container.remove(force=True)
