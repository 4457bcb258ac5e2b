"""`docker run IMAGE train` against a mounted /opt/ml tree: artifact, success, failure."""

from __future__ import annotations

import json

import pytest
from dockerjobs import HYPERPARAMETERS, make_job, run_training

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_train_writes_the_serving_artifact_and_success(trained_job):
    model = trained_job.opt_ml / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["backend"] == "cpu"
    assert manifest["labels"] == ["ham", "spam"]
    assert (model / "model.safetensors").is_file()
    assert list((model / "compiled").iterdir())
    assert (trained_job.opt_ml / "output" / "success").exists()
    assert not (trained_job.opt_ml / "output" / "failure").exists()


def test_a_bad_hyperparameter_exits_1_with_a_failure_reason(
    docker_client, cpu_images, docker_tiny_model, tmp_path
):
    opt_ml = make_job(tmp_path / "ml", docker_tiny_model, {**HYPERPARAMETERS, "max_steps": "x"})
    result = run_training(docker_client, cpu_images["training"], opt_ml, ["train"])
    assert result.exit_code == 1, result.logs[-3000:]
    reason = (opt_ml / "output" / "failure").read_text()
    assert "max_steps" in reason
    assert "Traceback" not in reason


def test_no_argument_runs_the_image_role(docker_client, cpu_images, docker_tiny_model, tmp_path):
    """SDK 3.x local mode passes no command: the training image trains."""
    opt_ml = make_job(tmp_path / "ml", docker_tiny_model, {**HYPERPARAMETERS, "max_steps": "y"})
    result = run_training(docker_client, cpu_images["training"], opt_ml, [])
    # The same hyperparameter check as `train` proves the dispatcher ran the training program.
    assert result.exit_code == 1, result.logs[-3000:]
    assert "max_steps" in (opt_ml / "output" / "failure").read_text()


def test_image_sizes_are_printed_and_within_the_platform_limit(docker_client, cpu_images):
    for image, tag in cpu_images.items():
        size = docker_client.images.get(tag).attrs["Size"]
        print(f"{tag}: {size / 1e6:.0f} MB")
        assert size < 10 * 2**30, f"{image} image is over SageMaker's 10 GiB limit"
