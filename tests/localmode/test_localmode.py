"""SageMaker SDK local mode end to end with the CPU images: train, deploy, invoke, transform."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest
from localjobs import HYPERPARAMETERS, SERVE_ENV, SMALL_ENV
from netutil import free_port

from smneuron.tools.local import sdk as localmode

pytestmark = [pytest.mark.docker, pytest.mark.localmode, pytest.mark.slow]

MESSAGES = ["WINNER!! Claim your free prize now", "Are we still on for lunch tomorrow?"]


@pytest.fixture(scope="module")
def model_data(cpu_images, spam_channels, tmp_path_factory) -> str:
    """One local training job (Estimator, instance_type="local", file:// channels), with no
    credentials, region or SDK config in the environment: ``session`` alone keeps it offline."""
    work = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as patch:
        for key in (*localmode.OFFLINE_DEFAULTS, "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
            patch.delenv(key, raising=False)
        patch.delenv("SAGEMAKER_USER_CONFIG_OVERRIDE", raising=False)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(work / "none"))
        patch.setenv("AWS_CONFIG_FILE", str(work / "none"))
        return localmode.train(
            cpu_images["training"],
            spam_channels,
            work / "output",
            hyperparameters=HYPERPARAMETERS,
            environment=SMALL_ENV,
            sagemaker_session=localmode.session(container_root=work / "containers"),
        )


def open_tar(uri: str) -> set[str]:
    assert uri.startswith("file://") and uri.endswith("model.tar.gz"), uri
    with tarfile.open(uri.removeprefix("file://")) as tar:
        return set(tar.getnames())


def test_training_job_writes_model_tar_gz(model_data):
    names = {name.removeprefix("./") for name in open_tar(model_data)}
    assert {"manifest.json", "config.json", "model.safetensors"} <= names
    assert any(name.startswith("compiled/") for name in names)


def test_deploy_predict_and_invoke(offline, cpu_images, model_data, tmp_path):
    port = free_port("")  # the SDK binds it on every interface
    local = localmode.session(port, tmp_path / "containers")
    predictor = localmode.deploy(
        cpu_images["inference"],
        model_data,
        port=port,
        environment=SERVE_ENV,
        sagemaker_session=local,
    )
    try:
        predictions = predictor.predict({"inputs": MESSAGES})
        assert [p["label"] in ("ham", "spam") for p in predictions] == [True, True]

        # InvokeEndpoint through the SDK's local sagemaker-runtime client.
        body = localmode.invoke_local(
            local, predictor.endpoint_name, json.dumps({"inputs": MESSAGES[0]}).encode()
        )
        answer = json.loads(body)
        answer = answer[0] if isinstance(answer, list) else answer
        assert answer["label"] in ("ham", "spam")

        # `smneuron invoke` with a body on stdin, against the same endpoint.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "smneuron.tools.cli",
                "invoke",
                "--endpoint-name",
                predictor.endpoint_name,
                "--local-port",
                str(port),
                "--content-type",
                "text/csv",
                "--accept",
                "text/csv",
            ],
            input=MESSAGES[1].encode(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split(",")[0].strip() in ("ham", "spam")
    finally:
        localmode.delete(predictor)


def test_batch_transform_line_by_line(offline, cpu_images, model_data, tmp_path):

    data = tmp_path / "input"
    data.mkdir()
    (data / "messages.csv").write_text("\n".join(MESSAGES * 3) + "\n")
    port = free_port("")  # the SDK binds it on every interface
    outputs = localmode.transform(
        cpu_images["inference"],
        model_data,
        data,
        tmp_path / "output",
        port=port,
        environment=SERVE_ENV,
        sagemaker_session=localmode.session(port, tmp_path / "containers"),
    )
    lines = [line for line in outputs[0].read_text().splitlines() if line.strip()]
    assert len(lines) == 6, lines
    assert all(line.split(",")[0] in ("ham", "spam") for line in lines)


def test_two_instance_training_trains_across_both_containers(
    offline, cpu_images, spam_channels, tmp_path, capfd
):
    uri = localmode.train(
        cpu_images["training"],
        spam_channels,
        tmp_path / "output",
        hyperparameters=HYPERPARAMETERS,
        instance_count=2,
        environment=SMALL_ENV,
        sagemaker_session=localmode.session(container_root=tmp_path / "containers"),
    )
    names = {name.removeprefix("./") for name in open_tar(uri)}
    assert "manifest.json" in names
    # Each container launched its torchrun node of a 2-node job (the SDK streams their logs).
    logs = capfd.readouterr().out
    assert "on host 0 of 2" in logs and "on host 1 of 2" in logs, logs[-3000:]
