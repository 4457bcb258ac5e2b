"""The host's Neuron driver against the runtime in this image: checked before serve and train.

A runtime library newer than the host's driver supports fails inside ``nrt_init`` with an
opaque status at the first model load or invocation (Neuron runtime troubleshooting, "This
Neuron Runtime (compatibility id: X) is not compatible with the installed aws-neuron-dkms
package"). So ``serve`` and ``train`` read the loaded driver's version first and refuse, with
both versions and the fix, when it is older than ``MIN_DRIVER``.

The loaded module's version is ``/sys/module/neuron/version`` (what the kernel runs;
``modinfo neuron`` reads the .ko file on disk and can show a newer driver that never loaded,
as the same troubleshooting page warns), else ``modinfo -F version neuron``. Nothing is
checked where neither exists (no Neuron driver: the CPU path).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from smneuron.errors import AcceleratorError

log = logging.getLogger(__name__)

SYS_MODULE_VERSION = "/sys/module/neuron/version"

# The oldest driver this image's runtime is run with: the aws-neuronx-dkms of the pinned SDK
# (2.29: driver 2.27.4.0 with runtime library 2.31.24.0, Neuron runtime release notes). The
# Neuron DLC update guide says to match the host driver to the container's SDK; runtime 2.32
# (SDK 2.30) is documented as failing on driver 2.26 or older. Kept equal to the
# ``#@ neuron-driver-min`` line of constraints/neuron.txt by tests/unit/test_pins.py.
MIN_DRIVER = "2.27.4.0"


class DriverTooOld(AcceleratorError):
    """The host's Neuron driver is older than this image's runtime needs (fixed by the user)."""

    client_error = True


def parse_version(text: str) -> tuple[int, ...]:
    """``2.27.4.0`` / ``2.27.4.0-dkms`` -> (2, 27, 4, 0); leading numbers only."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    if not match:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _modinfo_version() -> str | None:
    tool = shutil.which("modinfo")
    if not tool:
        return None
    try:
        out = subprocess.run(
            [tool, "-F", "version", "neuron"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def host_driver_version(
    sys_path: str | Path | None = None,
    modinfo: Callable[[], str | None] | None = None,
) -> str | None:
    """The loaded Neuron driver's version, or None where no Neuron driver is present."""
    try:
        path = Path(sys_path or SYS_MODULE_VERSION)
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        text = ""
    return text or (modinfo or _modinfo_version)()


def check_driver(
    driver: str | None,
    runtime: str | None,
    minimum: str = MIN_DRIVER,
    *,
    where: str = "this host",
) -> None:
    """Refuse a driver older than ``minimum``; no driver or an unreadable one passes with a log.

    Raises:
        DriverTooOld: with the driver and runtime versions and how to get a newer driver.
    """
    if not driver:
        log.info("no Neuron driver version readable on %s: driver check skipped", where)
        return
    try:
        too_old = parse_version(driver) < parse_version(minimum)
    except ValueError:
        log.warning("cannot read Neuron driver version %r: driver check skipped", driver)
        return
    if not too_old:
        log.info("Neuron driver %s (runtime %s): ok", driver, runtime or "unknown")
        return
    raise DriverTooOld(
        f"{where}: Neuron driver {driver} is older than {minimum}, the oldest this image's "
        f"Neuron runtime {runtime or '(version unknown)'} supports; the first model load would "
        "fail. Fix: on a SageMaker endpoint pick a newer driver with the production variant's "
        "inference_ami_version (e.g. al2-ami-sagemaker-inference-neuron-2, the Neuron AMI of "
        "the ProductionVariant API); on "
        "EC2/EKS update aws-neuronx-dkms on the host and reload the driver; or use the smneuron "
        "image built for an older Neuron SDK (docs/compatibility.md)."
    )


def check_host_driver(
    runtime: str | None = None,
    *,
    sys_path: str | Path | None = None,
    modinfo: Callable[[], str | None] | None = None,
    where: str = "this host",
) -> None:
    """``check_driver`` on what this host has; ``runtime`` defaults to the image's libnrt."""
    if runtime is None:
        from smneuron.neuron.backend import RUNTIME_DEB, debian_package_version

        runtime = debian_package_version(RUNTIME_DEB)
    check_driver(host_driver_version(sys_path, modinfo), runtime, where=where)
