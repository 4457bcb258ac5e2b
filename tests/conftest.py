"""Docker tiers: skip with a reason where no engine runs; FAIL in CI (CI=true) instead.

Also the session fixtures the docker tiers share (tests/container, tests/localmode): the CPU
images built once from this checkout, and a tiny random-weight model with the real MiniLM
tokenizer. Unit-test fixtures live in tests/unit/conftest.py.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from tinymodels import save_tiny_model

DOCKER_MARKERS = ("docker", "localmode")
# Set to reuse images already built from this checkout (the buildspec test builds them first).
REUSE_IMAGES_ENV = "SMNEURON_REUSE_IMAGES"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@functools.cache
def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when one answers."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed (`make venv` installs it)"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as err:  # docker raises several unrelated types for "no engine"
        return f"no Docker engine answers ({type(err).__name__}); run scripts/docker-engine.sh"
    client.close()
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not any(item.get_closest_marker(name) for name in DOCKER_MARKERS):
        return
    problem = engine_problem()
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and the docker tier cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def docker_client():
    problem = engine_problem()
    if problem:
        if in_ci():
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def cpu_images(docker_client) -> dict[str, str]:
    """{"training": tag, "inference": tag}: the CPU images built from this checkout (once)."""
    from smneuron.tools.build.images import IMAGE_NAMES, build_images, image_tag

    tags = {image: image_tag(image, "cpu") for image in IMAGE_NAMES}
    if os.environ.get(REUSE_IMAGES_ENV) == "1":
        missing = [tag for tag in tags.values() if not docker_client.images.list(name=tag)]
        if not missing:
            return tags
    results = build_images("cpu")
    for result in results:
        print(f"\n{result.tags[0]}: {result.size_bytes / 1e6:.0f} MB")
    return tags


@pytest.fixture(scope="session")
def docker_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random-weight 2-layer BERT classifier (ham/spam) with the MiniLM tokenizer."""
    return save_tiny_model(tmp_path_factory.mktemp("docker-tiny-model"))
