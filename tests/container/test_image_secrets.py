"""No credentials in any image layer or its environment: read through docker-py."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Names that carry AWS secrets, and values shaped like access keys (long-term AKIA, STS ASIA).
SECRET_NAMES = re.compile(
    r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN|SECURITY_TOKEN|"
    r"CONTAINER_AUTHORIZATION_TOKEN|WEB_IDENTITY_TOKEN)|aws_secret_access_key|aws_session_token",
    re.IGNORECASE,
)
SECRET_VALUES = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|aws_secret_access_key\s*=")


def findings(text: str) -> list[str]:
    return [m.group(0) for m in SECRET_NAMES.finditer(text)] + [
        m.group(0) for m in SECRET_VALUES.finditer(text)
    ]


def test_the_check_can_fail():
    assert findings("ENV AWS_SECRET_ACCESS_KEY=x")
    assert findings("/bin/sh -c #(nop) ENV KEY=AKIAABCDEFGHIJKLMNOP")
    assert not findings("ENV AWS_DEFAULT_REGION=us-east-1 PATH=/opt/venv/bin:/usr/bin")


@pytest.mark.parametrize("image", ["training", "inference"])
def test_no_credentials_in_history_or_environment(docker_client, cpu_images, image):
    built = docker_client.images.get(cpu_images[image])
    config = built.attrs.get("Config") or {}
    places = {f"Config.Env {entry.split('=', 1)[0]}": entry for entry in config.get("Env") or []}
    for name, value in (config.get("Labels") or {}).items():
        places[f"label {name}"] = f"{name}={value}"
    for index, layer in enumerate(built.history()):
        places[f"history[{index}]"] = f"{layer.get('CreatedBy', '')} {layer.get('Comment', '')}"
    found = {where: findings(text) for where, text in places.items() if findings(text)}
    assert found == {}
    assert any(where.startswith("history") for where in places)  # the history was read
