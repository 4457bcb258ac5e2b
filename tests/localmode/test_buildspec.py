"""buildspec.yml run locally, phase by phase, with CodeBuild's variables, against moto_server
(ECR API) and a loopback registry.

What runs for real: the ECR login, `make images` (a cache hit after the container tests built
the images), the push of both images and the imageDetail.json artifact. `make setup`,
`make lint`, `make test-unit` and `make test-docker` are recorded, not run: CI runs them as
its own stages, and running test-docker here would recurse.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

pytestmark = [pytest.mark.docker, pytest.mark.localmode, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ("setup", "lint", "test-unit", "test-docker")
MAKE_SHIM = """#!/usr/bin/env bash
for target in "$@"; do
  case "$target" in {targets}) echo "make $target" >> "{log}"; exit 0;; esac
done
exec {make} "$@"
"""


@pytest.mark.skipif("CODEBUILD_BUILD_ID" in os.environ, reason="already inside CodeBuild")
def test_buildspec_phases_push_both_images(offline, moto_ecr, local_registry, cpu_images, tmp_path):
    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    assert spec["version"] == 0.2
    assert list(spec["phases"]) == ["install", "pre_build", "build", "post_build"]

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "make.log"
    shim = bin_dir / "make"
    shim.write_text(
        MAKE_SHIM.format(targets="|".join(RECORDED), log=log, make=shutil.which("make"))
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {
        **os.environ,
        **{key: str(value) for key, value in spec["env"]["variables"].items()},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": sha,
        "CODEBUILD_SRC_DIR": str(ROOT),
        "CODEBUILD_BUILD_ID": "smneuron:local-test",
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "AWS_ACCOUNT_ID": "123456789012",
        "AWS_REGION": os.environ["AWS_DEFAULT_REGION"],
        "SMNEURON_ECR_ENDPOINT_URL": moto_ecr,
        "SMNEURON_REGISTRY": local_registry,
    }
    # CodeBuild runs every command of a build in one shell: variables carry across phases.
    script = ["set -euo pipefail"]
    for phase in spec["phases"].values():
        script += phase["commands"]
    script.append('echo "IMAGE_TAG=$IMAGE_TAG"')
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert log.read_text().split("\n")[:-1] == [
        "make setup",
        "make lint",
        "make test-unit",
        "make test-docker",
    ]
    tag = f"{sha[:12]}-cpu"
    assert f"IMAGE_TAG={tag}" in done.stdout
    details = json.loads((ROOT / "imageDetail.json").read_text())
    uris = sorted(item["imageUri"] for item in details)
    assert uris == [
        f"{local_registry}/smneuron-inference:{tag}",
        f"{local_registry}/smneuron-training:{tag}",
    ]
    for name in ("smneuron-training", "smneuron-inference"):
        tags = requests.get(f"http://{local_registry}/v2/{name}/tags/list", timeout=5).json()
        assert tags["tags"] == [tag]
    (ROOT / "imageDetail.json").unlink()
