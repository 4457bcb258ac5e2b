"""`smneuron invoke` through boto3's sagemaker-runtime client with --endpoint-url (moto)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.localmode]


def invoke(endpoint_url: str, *extra: str) -> subprocess.CompletedProcess:
    """Run `smneuron invoke` for endpoint "spam" at ``endpoint_url`` with body "hello"."""
    command = [sys.executable, "-m", "smneuron.tools.cli", "invoke", "--endpoint-name", "spam"]
    command += ["--endpoint-url", endpoint_url, "--region", "us-east-1", "--body", "@hello"]
    return subprocess.run([*command, *extra], capture_output=True, timeout=60, check=False)


def test_invoke_reaches_the_runtime_api_at_the_given_url(offline, moto_ecr):
    done = invoke(moto_ecr, "--custom-attributes", "trace=1")
    assert done.returncode == 0, done.stderr.decode()
    # moto answers every InvokeEndpoint with a canned body; reaching it is what counts here.
    assert done.stdout.strip()


def test_invoke_without_credentials_says_so(offline, monkeypatch, moto_ecr):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    done = invoke(moto_ecr)
    assert done.returncode != 0
    assert "no AWS credentials" in done.stderr.decode()
