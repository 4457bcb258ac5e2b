"""Security defaults of serving: Hugging Face libraries offline, no pip install unless opted in."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from smneuron.env import ENV
from smneuron.errors import ArtifactError

log = logging.getLogger(__name__)

# The Hugging Face libraries read these when they are imported: a served model never reaches
# the Hub (no downloads, no telemetry, no remote code fetched behind the user's back).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
REQUIREMENTS = "requirements.txt"
PIP_TIMEOUT_S = 900


def offline_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) with the offline switches set: the
    environment to give any child process of the server (gunicorn, MMS and its workers)."""
    return {**(os.environ if environ is None else environ), **OFFLINE_ENV}


def enforce_offline(environ: MutableMapping[str, str] | None = None) -> None:
    """Set the offline switches in this process's environment (``serve`` and every worker
    call it before anything imports transformers or huggingface_hub)."""
    target = os.environ if environ is None else environ
    target.update(OFFLINE_ENV)


def prepare_requirements(code_dir: Path, install: bool) -> bool:
    """Refuse ``code/requirements.txt`` unless ``install``; with it, pip install it once.

    Returns True when something was installed. Installing at start makes every start depend
    on a package index and on what it serves that day, so it is opt-in
    (``SMNEURON_INSTALL_MODEL_REQUIREMENTS=true``); baking the packages into the image is better.
    """
    path = code_dir / REQUIREMENTS
    if not path.is_file():
        return False
    if not install:
        raise ArtifactError(
            f"{path} is present but installing packages at container start is off. Either "
            "install them into the image (a Dockerfile FROM this image with `RUN pip install "
            "-r requirements.txt`) and remove code/requirements.txt from the model, or opt in "
            f"with {ENV.INSTALL_MODEL_REQUIREMENTS}=true (the endpoint then needs a package index "
            "at every start)."
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    marker = Path(tempfile.gettempdir()) / f"smneuron-requirements-{digest}.done"
    # Workers start together: one installs, the others wait on the lock and find the marker.
    with open(Path(tempfile.gettempdir()) / "smneuron-requirements.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return False
        log.info("installing %s (%s=true)", path, ENV.INSTALL_MODEL_REQUIREMENTS)
        command = [sys.executable, "-m", "pip", "install", "--no-input", "-r", str(path)]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise ArtifactError(f"pip install -r {path} took over {PIP_TIMEOUT_S}s") from err
        if result.returncode != 0:
            raise ArtifactError(
                f"pip install -r {path} failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-1500:]}"
            )
        marker.write_text(result.stdout[-2000:], encoding="utf-8")
    return True
