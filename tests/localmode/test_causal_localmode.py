"""SageMaker SDK local mode with the CPU images: train a causal LM, deploy it, stream from it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from localjobs import SERVE_ENV, SMALL_ENV
from netutil import free_port
from tinygen import save_tiny_causal_lm

from smneuron.tools.local import sdk as localmode

pytestmark = [pytest.mark.docker, pytest.mark.localmode, pytest.mark.slow]

EXAMPLE = "examples/autocomplete/data"
HYPERPARAMETERS = {
    "task": "causal-lm",
    "max_steps": 4,
    "per_device_train_batch_size": 8,
    "logging_steps": 2,
    "save_steps": 2,
    "max_seq_length": 32,
    "batch_size": 2,
    "sequence_lengths": "16,32",
    "max_total_length": 64,
}


def test_train_deploy_invoke_and_stream_a_causal_lm(offline, cpu_images, tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    channels = {"model": save_tiny_causal_lm(tmp_path / "pretrained")}
    for name in ("train", "validation"):
        (tmp_path / name).mkdir()
        source = root / EXAMPLE / f"{name}.jsonl"
        (tmp_path / name / source.name).write_text(source.read_text())
        channels[name] = tmp_path / name
    model_data = localmode.train(
        cpu_images["training"],
        channels,
        tmp_path / "output",
        hyperparameters=HYPERPARAMETERS,
        environment=SMALL_ENV,
        sagemaker_session=localmode.session(container_root=tmp_path / "train-containers"),
    )
    port = free_port("")
    local = localmode.session(port, tmp_path / "containers")
    predictor = localmode.deploy(
        cpu_images["inference"],
        model_data,
        port=port,
        environment=SERVE_ENV,
        sagemaker_session=local,
    )
    try:
        body = {"inputs": "Fishing boats", "parameters": {"max_new_tokens": 8}}
        answer = predictor.predict(body)
        assert answer[0]["generated_text"].startswith("Fishing boats")
        new_text = answer[0]["generated_text"][len("Fishing boats") :]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "smneuron.tools.cli",
                "invoke",
                "--stream",
                "--endpoint-name",
                predictor.endpoint_name,
                "--local-port",
                str(port),
                "--body",
                "@" + json.dumps(body),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode("utf-8") == new_text + "\n"
    finally:
        localmode.delete(predictor)
