"""A stand-in for the AWS Neuron DLC, built locally and offline, for the neuron image tests.

The image (``standin/Dockerfile``): the local bookworm base + Python 3.11 (the DLC has 3.12)
with venv and pip, CPU torch from the CPU wheelhouse, the FAKE ``torch-neuronx`` and
``neuronx-cc`` packages of this folder installed as real distributions, and the fake
``neuron-ls`` in ``/opt/aws/neuron/bin``. It is cached under
``smneuron-neuron-standin:<hash of its inputs>`` and labelled ``com.smneuron.stand-in=true``.
Tests tag it with the DLC URIs from ``constraints/neuron.txt`` only while they build, and
untag it afterwards.

By hand (to try ``smneuron build --accelerator neuron`` without the real DLC)::

    python tests/resources/fake_neuron/standin.py --tag-as-dlc   # prints the tags it set
    smneuron build --accelerator neuron --region us-east-1
    python tests/resources/fake_neuron/standin.py --untag
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
REPOSITORY = "smneuron-neuron-standin"
FAKE_PACKAGES = ("torch-neuronx", "neuronx-cc")
LABEL = "com.smneuron.stand-in"
DEFAULT_REGION = "us-east-1"
# Packages the stand-in must hold at a DLC-compatible version rather than the CPU wheelhouse's:
# the DLC's datasets (constraints/neuron.txt) requires fsspec<=2025.9.0, so the real DLC ships
# an fsspec in that range, while the CPU pins carry a newer one that datasets would refuse.
DLC_COMPATIBLE = {"fsspec": "2025.9.0"}


def _inputs_hash(base_id: str, torch_version: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"{base_id}\n{torch_version}\n{sorted(DLC_COMPATIBLE.items())}\n".encode())
    files = [HERE / "standin" / "Dockerfile", HERE / "bin" / "neuron-ls"]
    for package in FAKE_PACKAGES:
        files += sorted(p for p in (HERE / package).rglob("*") if p.is_file() and _source(p))
    for path in files:
        digest.update(str(path.relative_to(HERE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _source(path: Path) -> bool:
    return "__pycache__" not in path.parts and ".egg-info" not in str(path)


def _fake_wheels(dest: Path) -> None:
    """Wheels of the fake packages, built from a copy (pip builds in the source tree)."""
    with tempfile.TemporaryDirectory() as scratch:
        for package in FAKE_PACKAGES:
            copy = Path(scratch) / package
            shutil.copytree(HERE / package, copy, ignore=shutil.ignore_patterns("__pycache__"))
            done = subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                 "--no-build-isolation", "-w", str(dest), str(copy)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"building the fake {package} wheel failed:\n{done.stderr}")


def _dlc_compatible_wheels(dest: Path) -> None:
    """Pure-Python wheels of DLC_COMPATIBLE (a build step, like the wheelhouse's downloads)."""
    for name, version in DLC_COMPATIBLE.items():
        for old in dest.glob(f"{name}-*.whl"):
            old.unlink()
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "-d", str(dest), f"{name}=={version}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"downloading {name}=={version} failed:\n{done.stderr}")


def stage_context(root: Path = ROOT) -> tuple[Path, str]:
    """build/context/neuron-standin: the CPU wheelhouse (hard links), the fake wheels, neuron-ls.

    Returns the context and the torch version to install.
    """
    from smneuron.tools.build.wheelhouse import build_wheelhouse, wheel_versions

    wheelhouse = build_wheelhouse("cpu", root)
    torch_version = wheel_versions(wheelhouse)["torch"]
    context = root / "build" / "context" / "neuron-standin"
    shutil.rmtree(context, ignore_errors=True)
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    for item in wheelhouse.glob("*.whl"):
        try:
            os.link(item, wheels / item.name)
        except OSError:
            shutil.copy2(item, wheels / item.name)
    _fake_wheels(wheels)
    _dlc_compatible_wheels(wheels)
    shutil.copy2(HERE / "bin" / "neuron-ls", context / "neuron-ls")
    return context, torch_version


def build_standin(client, root: Path = ROOT) -> str:  # type: ignore[no-untyped-def]
    """Build (or reuse) the stand-in from the local bookworm base; return its cache tag."""
    from smneuron.tools.build.images import _build_sdk, base_image
    from smneuron.tools.build.wheelhouse import build_wheelhouse, wheel_versions

    base = base_image(root, "cpu", "training", DEFAULT_REGION)
    torch_version = wheel_versions(build_wheelhouse("cpu", root))["torch"]
    tag = f"{REPOSITORY}:{_inputs_hash(client.images.get(base).id, torch_version)}"
    if client.images.list(name=tag):
        return tag
    context, torch_version = stage_context(root)
    args = {
        "BASE_IMAGE": base,
        "TORCH_VERSION": torch_version,
        "FSSPEC_VERSION": DLC_COMPATIBLE["fsspec"],
        "STANDIN_KEY": tag,
    }
    _build_sdk(HERE / "standin" / "Dockerfile", context, tag, args)
    for old in client.images.list(name=REPOSITORY):  # earlier inputs: drop their tags
        for other in old.tags:
            if other != tag:
                client.images.remove(other, noprune=True)
    return tag


def dlc_tags(root: Path = ROOT, region: str = DEFAULT_REGION) -> dict[str, str]:
    """{"training": uri, "inference": uri}: the pinned DLC names the stand-in poses as."""
    from smneuron.tools.build.pins import read_pins

    pins = read_pins(root / "constraints" / "neuron.txt")
    return {image: pins.dlc_uri(image, region) for image in ("training", "inference")}


def tag_as_dlc(client, standin: str, uris: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Tag the stand-in with the DLC URIs; refuse to shadow anything that is not a stand-in."""
    image = client.images.get(standin)
    for uri in uris.values():
        present = client.images.list(name=uri)
        if present and present[0].labels.get(LABEL) != "true":
            raise RuntimeError(f"{uri} exists and is not a stand-in: not overwriting it")
        repository, tag = uri.rsplit(":", 1)
        image.tag(repository, tag)


def untag(client, uris: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Remove the DLC-named tags again (only where they point at a stand-in)."""
    for uri in set(uris.values()):
        present = client.images.list(name=uri)
        if present and present[0].labels.get(LABEL) == "true":
            client.images.remove(uri, noprune=True)


def main(argv: list[str] | None = None) -> int:
    import docker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag-as-dlc", action="store_true", help="also tag it as the DLCs")
    parser.add_argument("--untag", action="store_true", help="remove the DLC tags and stop")
    parser.add_argument("--region", default=DEFAULT_REGION)
    args = parser.parse_args(argv)
    client = docker.from_env(timeout=600)
    uris = dlc_tags(ROOT, args.region)
    if args.untag:
        untag(client, uris)
        return 0
    standin = build_standin(client)
    print(standin)
    if args.tag_as_dlc:
        tag_as_dlc(client, standin, uris)
        for uri in uris.values():
            print(uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
