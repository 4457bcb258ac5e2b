"""`smneuron push` against moto_server (ECR API) and a local registry: nothing leaves loopback."""

from __future__ import annotations

import argparse
import json

import boto3
import pytest
import requests

from smneuron.tools.aws import ecr

pytestmark = [pytest.mark.docker, pytest.mark.localmode]


@pytest.fixture
def small_image(docker_client, cpu_images) -> str:
    """A one-layer image tagged like ours (pushing the 1.5 GB images costs minutes)."""
    tag = "smneuron-pushtest:0.0.1-cpu"
    base = docker_client.images.get("smneuron-base:bookworm")
    base.tag("smneuron-pushtest", "0.0.1-cpu")
    yield tag
    docker_client.images.remove(tag, force=True)


def test_push_creates_the_repository_and_pushes(
    offline, moto_ecr, local_registry, small_image, tmp_path
):
    output = tmp_path / "images.json"
    parser = argparse.ArgumentParser()
    ecr.add_arguments(parser)
    args = parser.parse_args(
        [small_image, "--region", "us-east-1", "--registry", local_registry]
        + ["--ecr-endpoint-url", moto_ecr, "--output", str(output)]
    )
    assert ecr.run(args) == 0
    client = boto3.client("ecr", region_name="us-east-1", endpoint_url=moto_ecr)
    names = [r["repositoryName"] for r in client.describe_repositories()["repositories"]]
    assert "smneuron-pushtest" in names
    tags = requests.get(f"http://{local_registry}/v2/smneuron-pushtest/tags/list", timeout=5)
    assert tags.json()["tags"] == ["0.0.1-cpu"]
    pushed = json.loads(output.read_text())
    assert pushed[0]["imageUri"] == f"{local_registry}/smneuron-pushtest:0.0.1-cpu"
    assert pushed[0]["digest"].startswith("sha256:")


def test_a_second_push_reuses_the_repository(offline, moto_ecr, local_registry, small_image):
    for _ in range(2):
        pushed = ecr.push(
            [small_image], region="us-east-1", registry=local_registry, endpoint_url=moto_ecr
        )
    assert pushed[0].remote.endswith(":0.0.1-cpu")


def test_missing_credentials_are_a_clear_error(offline, monkeypatch, moto_ecr, small_image):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ecr.PushError, match="no AWS credentials"):
        ecr.push([small_image], region="us-east-1", registry="127.0.0.1:1", endpoint_url=moto_ecr)


def test_access_denied_names_the_permissions(offline):
    from botocore.exceptions import ClientError

    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
        "CreateRepository",
    )
    error = ecr._aws_error(denied, "creating repository x")
    assert "access denied" in error.message and "ecr:PutImage" in error.message


def test_a_refusing_registry_is_a_clear_error(offline, moto_ecr, small_image):
    # Nothing listens on this loopback port: docker login / push are refused.
    with pytest.raises(ecr.PushError, match="refused|failed"):
        ecr.push([small_image], region="us-east-1", registry="127.0.0.1:9", endpoint_url=moto_ecr)
