"""`smneuron build`: base image, wheelhouse, staged context, then both images, tagged and sized.

The build context is a staged folder (``build/context/<accelerator>``) with hard links to the
wheelhouse and the freshly built smneuron wheel: small to send, and a change to Python source
alone only rebuilds the images' last layer. The legacy builder runs through the Docker SDK;
BuildKit (which the SDK cannot drive) through the ``docker`` CLI with ``DOCKER_BUILDKIT=1``.

Neuron images build FROM the AWS Neuron DLC pinned in ``constraints/neuron.txt``: the base is
inspected first (its Python, glibc and distributions), and each image's context
(``build/context/neuron-<image>``) gets a wheelhouse of only what that base lacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from smneuron import __version__
from smneuron.env import ENV
from smneuron.errors import ConfigurationError, SmneuronError
from smneuron.typed import one_of
from smneuron.tools.build.wheelhouse import (
    IMAGES,
    INVENTORY_SCRIPT,
    BaseInventory,
    build_wheelhouse,
    repo_root,
    smneuron_wheel,
)

log = logging.getLogger(__name__)

IMAGE_NAMES = {"training": "smneuron-training", "inference": "smneuron-inference"}
CPU_BASE = "smneuron-base:bookworm"
# Per accelerator: how the Dockerfiles' ARGs are set (the base image is resolved separately).
BUILD_ARGS = {
    "cpu": {"PYTHON": "python3", "BUILD_PACKAGES": "python3-venv"},
    # The Neuron DLCs bring their own Python with torch-neuronx; the venv sees it. Their
    # Neuron tools (neuron-ls, neuron-top, neuron_parallel_compile) live in /opt/aws/neuron/bin.
    "neuron": {
        "PYTHON": "python3",
        "BUILD_PACKAGES": "",
        "SYSTEM_PACKAGES": "tini",
        "PATH_PREFIX": "/opt/venv/bin:/opt/aws/neuron/bin",
    },
}
# Java is not among them: the inference image's MMS runs on a jlink'ed runtime (its java stage).
INFERENCE_SYSTEM_PACKAGES = {
    "cpu": "python3 tini ca-certificates",
    "neuron": "tini",
}
# Dependencies the inference image removes again (unused by `serve`); the DLC's stay as built.
INFERENCE_DROP_PACKAGES = {"cpu": "scipy hf-xet", "neuron": ""}


class BuildError(SmneuronError):
    """A docker build failed or no engine is reachable."""


@dataclass
class BuildResult:
    image: str
    tags: list[str]
    size_bytes: int
    seconds: float
    extra: dict[str, str] = field(default_factory=dict)


def image_tag(image: str, accelerator: str, version: str = __version__) -> str:
    return f"{IMAGE_NAMES[image]}:{version}-{accelerator}"


def git_sha(root: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def docker_client():
    """A Docker SDK client, or a clear error where no engine answers."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:  # docker raises several unrelated types for "no engine"
        raise BuildError(
            f"no Docker engine answers ({err}); start one (scripts/docker-engine.sh)"
        ) from err
    return client


def base_image(root: Path, accelerator: str, image: str, region: str) -> str:
    """The FROM image: the local bookworm base for cpu, the pinned Neuron DLC for neuron."""
    if accelerator == "cpu":
        done = subprocess.run(
            ["bash", str(root / "scripts" / "base-image.sh")],
            env={**os.environ, "BASE_TAG": CPU_BASE},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BuildError(f"the base image could not be made:\n{done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1]
    from smneuron.tools.build.pins import read_pins

    return read_pins(root / "constraints" / "neuron.txt").dlc_uri(image, region)


def ensure_local(client, image: str) -> None:
    """Pull ``image`` unless it is present; say how to log in where the pull fails."""
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    log.info("pulling %s", image)
    try:
        client.images.pull(image)
    except docker.errors.APIError as err:
        registry = image.split("/", 1)[0]
        raise BuildError(
            f"the base image {image} is not here and cannot be pulled ({err.explanation}); "
            f"log Docker in to {registry} first (smneuron push --login-only --login-account "
            f"{registry.split('.', 1)[0]})"
        ) from err


def inspect_base(client, image: str, python: str = "python3") -> BaseInventory:
    """Python version, glibc and installed distributions of a base image's ``python``."""
    import docker.errors

    ensure_local(client, image)
    try:
        output = client.containers.run(
            image, entrypoint=[python, "-c", INVENTORY_SCRIPT], remove=True, network_disabled=True
        )
    except docker.errors.ContainerError as err:
        raise BuildError(f"{python} in {image} cannot list its packages: {err}") from err
    return BaseInventory.from_json(image, output.decode(errors="replace"))


def stage_context(
    root: Path, accelerator: str, base: BaseInventory | None = None, image: str | None = None
) -> Path:
    """build/context/<accelerator>: wheelhouse (hard links) + the smneuron wheel.

    Neuron: one context per image (``neuron-<image>``), the wheelhouse made against ``base``.
    """
    if accelerator == "neuron" and base is not None and image is not None:
        wheelhouse = build_wheelhouse(accelerator, root, base=base, images=(image,))
        context = root / "build" / "context" / f"{accelerator}-{image}"
    else:
        wheelhouse = build_wheelhouse(accelerator, root)
        context = root / "build" / "context" / accelerator
    staged = context / "wheelhouse"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for item in wheelhouse.iterdir():
        if item.name.startswith("."):
            continue
        try:
            os.link(item, staged / item.name)
        except OSError:  # another filesystem
            shutil.copy2(item, staged / item.name)
    smneuron_wheel(root, context / "dist")
    return context


def _build_args(accelerator: str, image: str, base: str) -> dict[str, str]:
    args = {"BASE_IMAGE": base, "ACCELERATOR": accelerator, **BUILD_ARGS[accelerator]}
    if image == "inference":
        args["SYSTEM_PACKAGES"] = INFERENCE_SYSTEM_PACKAGES[accelerator]
        args["DROP_PACKAGES"] = INFERENCE_DROP_PACKAGES[accelerator]
    return args


def _build_sdk(dockerfile: Path, context: Path, tag: str, args: dict[str, str]) -> None:
    client = docker_client()
    stream = client.api.build(
        path=str(context),
        dockerfile=str(dockerfile),
        tag=tag,
        buildargs=args,
        rm=True,
        decode=True,
    )
    for chunk in stream:
        if "stream" in chunk:
            text = chunk["stream"].rstrip()
            if text:
                print(text, flush=True)
        elif "error" in chunk:
            raise BuildError(f"docker build of {tag} failed: {chunk['error'].strip()}")


def _build_cli(dockerfile: Path, context: Path, tag: str, args: dict[str, str]) -> None:
    docker = shutil.which("docker", path="/usr/bin") or shutil.which("docker") or "docker"
    cmd = [docker, "build", "--progress=plain", "-f", str(dockerfile), "-t", tag]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(str(context))
    done = subprocess.run(cmd, env={**os.environ, "DOCKER_BUILDKIT": "1"}, check=False)
    if done.returncode != 0:
        raise BuildError(f"docker build of {tag} failed (exit {done.returncode}); see above")


def build_images(
    accelerator: str = "cpu",
    *,
    images: tuple[str, ...] = IMAGES,
    builder: str = "legacy",
    region: str | None = None,
    base: str | None = None,
    root: Path | None = None,
) -> list[BuildResult]:
    """Build the images; return their tags and sizes."""
    root = root or repo_root()
    one_of(accelerator, sorted(BUILD_ARGS), "accelerator")
    region = region or os.environ.get(ENV.AWS_DEFAULT_REGION) or "us-east-1"
    client = docker_client()
    if accelerator != "neuron":
        started = time.monotonic()
        context = stage_context(root, accelerator)
        log.info("context staged in %.1fs: %s", time.monotonic() - started, context)
    sha = git_sha(root)
    results = []
    for image in images:
        tag = image_tag(image, accelerator)
        from_image = base or base_image(root, accelerator, image, region)
        args = _build_args(accelerator, image, from_image)
        if accelerator == "neuron":
            started = time.monotonic()
            inventory = inspect_base(client, from_image, args["PYTHON"])
            context = stage_context(root, accelerator, inventory, image)
            log.info("context staged in %.1fs: %s", time.monotonic() - started, context)
        dockerfile = root / "containers" / image / "Dockerfile"
        log.info("building %s from %s (%s builder)", tag, from_image, builder)
        began = time.monotonic()
        if builder == "buildkit":
            _build_cli(dockerfile, context, tag, args)
        else:
            _build_sdk(dockerfile, context, tag, args)
        built = client.images.get(tag)
        tags = [tag]
        if sha:
            sha_tag = f"{IMAGE_NAMES[image]}:{sha}-{accelerator}"
            built.tag(*sha_tag.split(":"))
            tags.append(sha_tag)
        results.append(BuildResult(image, tags, int(built.attrs["Size"]), time.monotonic() - began))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accelerator", choices=sorted(BUILD_ARGS), default="cpu")
    parser.add_argument("--image", choices=IMAGES, action="append", help="default: both")
    parser.add_argument(
        "--builder",
        choices=("legacy", "buildkit"),
        default=os.environ.get(ENV.BUILDER) or "legacy",
        help="legacy: through the Docker SDK; buildkit: DOCKER_BUILDKIT=1 docker build",
    )
    parser.add_argument("--base-image", help="FROM image (default: per accelerator)")
    parser.add_argument("--region", help="region of the Neuron DLC registry")
    parser.add_argument("--json", type=Path, help="also write the results to this file")


def run(args: argparse.Namespace) -> int:
    results = build_images(
        args.accelerator,
        images=tuple(args.image or IMAGES),
        builder=args.builder,
        region=args.region,
        base=args.base_image,
    )
    print()
    for result in results:
        print(
            f"{' '.join(result.tags)}  {result.size_bytes / 1e6:.0f} MB  "
            f"built in {result.seconds:.0f}s"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps([result.__dict__ for result in results], indent=2) + "\n", "utf-8"
        )
    return 0
