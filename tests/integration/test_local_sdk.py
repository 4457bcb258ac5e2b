"""smneuron.tools.local.sdk: a local-mode session that stays offline without editing os.environ.

In the integration tier: importing the SageMaker SDK takes seconds.
"""

from __future__ import annotations

import os

import pytest

from smneuron.tools.local import sdk


@pytest.fixture
def bare_environment(monkeypatch, tmp_path):
    """No credentials, region or SDK config anywhere this process could read them."""
    for key in (*sdk.OFFLINE_DEFAULTS, "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SAGEMAKER_USER_CONFIG_OVERRIDE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


def test_session_has_dummy_credentials_region_and_telemetry_off(bare_environment):
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.utils import resolve_value_from_config

    before = dict(os.environ)
    local = sdk.session(8123)
    assert dict(os.environ) == before
    credentials = local.boto_session.get_credentials()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "local",
        "local",
        None,
    )
    assert local.boto_region_name == "us-east-1"
    assert resolve_value_from_config(None, TELEMETRY_OPT_OUT_PATH, False, local) is True
    assert local.config["local"]["serving_port"] == 8123


def test_the_environments_own_credentials_and_region_win(bare_environment, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    local = sdk.session()
    credentials = local.boto_session.get_credentials()
    assert (credentials.access_key, credentials.token) == ("AKIDEXAMPLE", "token")
    assert local.boto_region_name == "eu-west-1"


def test_offline_env_is_for_a_child_process(tmp_path):
    env = sdk.offline_env(tmp_path / "sdk", {"AWS_DEFAULT_REGION": "eu-west-1"})
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1" and env["AWS_ACCESS_KEY_ID"] == "local"
    import yaml

    config = yaml.safe_load(open(env["SAGEMAKER_USER_CONFIG_OVERRIDE"], encoding="utf-8"))
    assert config == sdk.SDK_DEFAULTS
