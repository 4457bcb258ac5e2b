"""Running the user's script: its own process group, signals forwarded, stderr tail kept.

stdout is inherited (streamed as it comes); stderr is copied through as it comes and its last
lines kept for the failure file. SIGTERM/SIGINT go to the whole group (torchrun, its workers,
anything they started); SIGKILL follows a grace period after SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

STDERR_SCAN_LINES = 400  # kept, and searched for the exception line


def last_line(lines: Sequence[str]) -> str:
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def exception_line(lines: Sequence[str]) -> str:
    """The exception a Python traceback ended with (a worker's, not torchrun's), else the
    last line of stderr."""
    found: list[str] = []
    in_trace = False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_trace = True
        elif in_trace and line and not line[0].isspace():
            in_trace = False
            found.append(line.strip())
    if not found:
        return last_line(lines)
    workers = [line for line in found if "ChildFailedError" not in line]
    return (workers or found)[-1]


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(
    command: Sequence[str], env: Mapping[str, str], cwd: Path, grace_s: float
) -> tuple[int, bool, list[str]]:
    """Run ``command`` in its own process group; return (exit code, stopped, stderr lines).

    stdout is inherited (streamed as it comes); stderr is copied through as it comes and its
    last lines kept. SIGTERM/SIGINT are forwarded to the whole group; SIGKILL follows
    ``grace_s`` after a SIGTERM. Whatever is left of the group at the end is killed.
    """
    child = subprocess.Popen(
        list(command), env=dict(env), cwd=cwd, stderr=subprocess.PIPE, start_new_session=True
    )
    assert child.stderr is not None
    tail: deque[str] = deque(maxlen=STDERR_SCAN_LINES)

    def pump() -> None:
        assert child.stderr is not None
        for raw in child.stderr:
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            tail.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    reader = threading.Thread(target=pump, name="script-stderr", daemon=True)
    reader.start()
    stopped = threading.Event()
    killer: list[threading.Timer] = []

    def forward(signum: int, frame: object) -> None:
        _signal_group(child.pid, signum)
        if signum == signal.SIGTERM and not stopped.is_set():
            stopped.set()
            log.warning("SIGTERM: forwarded to the script; SIGKILL in %.0fs", grace_s)
            timer = threading.Timer(grace_s, _signal_group, (child.pid, signal.SIGKILL))
            timer.daemon = True
            timer.start()
            killer.append(timer)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for timer in killer:
            timer.cancel()
        _signal_group(child.pid, signal.SIGKILL)  # leftovers hold stderr open
        reader.join(timeout=10)
    return (128 - code if code < 0 else code), stopped.is_set(), list(tail)
