"""Neuron devices for local container runs: ``--neuron-devices auto|/dev/neuron0,...`` -> docker.

SageMaker's local mode knows only ``local`` and ``local_gpu``; on an inf2/trn1 instance the
containers need the Neuron devices passed through (``docker run --device /dev/neuronN``).
``docker_device_args`` turns the flag into docker arguments, the docker SDK's ``devices``
list and the environment for the container. It is a pure function of the flag and a ``/dev``
root, so the tests run it against a fake ``/dev`` tree.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from smneuron.accelerator import check_contiguous, device_index, list_neuron_devices
from smneuron.env import ENV
from smneuron.errors import AcceleratorError, ConfigurationError

AUTO = "auto"


@dataclass(frozen=True)
class NeuronDevices:
    """What a local run passes to docker for its Neuron devices.

    Attributes:
        devices: host device paths, e.g. ``("/dev/neuron0", "/dev/neuron1")``.
        docker_args: CLI arguments, e.g. ``["--device", "/dev/neuron0", ...]``.
        sdk_devices: the docker SDK's ``containers.run(devices=...)`` list
            (``"/dev/neuron0:/dev/neuron0:rwm"``).
        env: environment for the container (forces the neuron backend).
    """

    devices: tuple[str, ...]
    docker_args: list[str]
    sdk_devices: list[str]
    env: dict[str, str]


def _resolve(item: str, root: Path) -> Path:
    """``/dev/neuron3``, ``neuron3`` or ``3`` -> ``<root>/neuron3``."""
    text = item.strip()
    name = Path(text).name
    if text.isdigit():
        name = f"neuron{text}"
    if device_index(name) < 0:
        raise ConfigurationError(
            f"--neuron-devices: {item!r} is not a Neuron device; use auto, /dev/neuron0,... "
            "or device numbers like 0,1"
        )
    if "/" in text and Path(text).parent != Path("/dev") and Path(text).parent != root:
        raise ConfigurationError(f"--neuron-devices: {item!r} is not under /dev")
    return root / name


def docker_device_args(spec: str | None, dev_root: str | Path = "/dev") -> NeuronDevices:
    """Docker arguments for ``--neuron-devices``.

    Args:
        spec: ``auto`` (every ``/dev/neuron*``), a comma list (``/dev/neuron0,/dev/neuron1``,
            ``neuron0``, ``0,1``), or None/empty for no Neuron devices.
        dev_root: where device nodes live (``/dev``; a temporary tree in tests). The paths
            handed to docker are always ``/dev/neuronN``, the same inside the container.

    Raises:
        AcceleratorError: ``auto`` finds no device, a listed device does not exist, or the
            listed devices are not contiguous (``0,2``: the runtime rejects them).
        ConfigurationError: an entry is not a Neuron device name.
    """
    if spec is None or not spec.strip():
        return NeuronDevices((), [], [], {})
    root = Path(dev_root)
    present = list_neuron_devices(root)
    if spec.strip().lower() == AUTO:
        if not present:
            raise AcceleratorError(
                f"--neuron-devices auto: no Neuron device under {root} (no {root}/neuron*). "
                "Run on an inf2/trn1/trn2 instance with the Neuron driver (aws-neuronx-dkms) "
                "installed, or leave --neuron-devices out to run on CPU."
            )
        chosen = present
    else:
        chosen = []
        for item in spec.split(","):
            if not item.strip():
                continue
            path = _resolve(item, root)
            if path not in chosen:
                chosen.append(path)
        missing = [f"/dev/{path.name}" for path in chosen if not path.exists()]
        if missing:
            found = ", ".join(f"/dev/{p.name}" for p in present) or "none"
            raise AcceleratorError(
                f"--neuron-devices: {', '.join(missing)} not found on this host "
                f"(Neuron devices here: {found}). Use --neuron-devices auto or list existing ones."
            )
        chosen.sort(key=device_index)
        # The runtime needs contiguous devices (Neuron containers troubleshooting page).
        check_contiguous([device_index(path) for path in chosen], "--neuron-devices")
    devices = tuple(f"/dev/{path.name}" for path in chosen)
    docker_args: list[str] = []
    for device in devices:
        docker_args += ["--device", device]
    return NeuronDevices(
        devices=devices,
        docker_args=docker_args,
        sdk_devices=[f"{device}:{device}:rwm" for device in devices],
        env={ENV.ACCELERATOR: "neuron"},
    )


def add_neuron_devices_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--neuron-devices`` to a ``smneuron local ...`` subcommand."""
    parser.add_argument(
        "--neuron-devices",
        metavar="auto|/dev/neuron0,...",
        default=None,
        help="pass Neuron devices into the container (auto: every /dev/neuron*); "
        "without it the container runs on CPU",
    )
