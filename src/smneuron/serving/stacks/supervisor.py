"""The ``serve`` process: nginx and one model server as children, /ping's state, signals.

``serve`` is a small supervisor. It starts nginx (public port) and the model server (gunicorn
on a unix socket, or MMS on loopback), keeps the readiness of the worker pool from the ready
markers the workers write, publishes it to nginx's ``/ping`` state, and on SIGTERM drains:
nginx stops accepting and finishes what is in flight, then the model server stops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smneuron.errors import ConfigurationError, ServerError
from smneuron.serving.runtime import read_failure, ready_workers
from smneuron.serving.stacks import nginx
from smneuron.serving.stacks.nginx import Upstream

if TYPE_CHECKING:
    from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)

POLL_S = 0.2
NGINX_START_S = 10.0
SERVER_STOP_S = 8.0  # after nginx's drain (nginx.DRAIN_S): the whole stop stays within 30 s
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A child left behind by a killed supervisor would keep the port or the model.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


class Child:
    """One supervised child process: start, wait until ready (monotonic deadline), stop.

    The child runs in its own session, so a signal sent to ``serve``'s process group (tini -g
    in the image) reaches only ``serve``, which then stops its children in order.
    """

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = list(command)
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log.info("starting %s: %s", self.name, " ".join(self.command))
        try:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # before any thread of ours starts
            )
        except FileNotFoundError as err:
            raise ConfigurationError(f"cannot start {self.name}: {err}") from err

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exited(self) -> int | None:
        """The exit status once the child has ended (reaped), else None."""
        return self.process.poll() if self.process else None

    def wait_until(self, check: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``check`` until true, the child exits, or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.exited() is not None:
                return False
            if check():
                return True
            time.sleep(POLL_S)
        return False

    def send(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, grace_s: float, signum: int = signal.SIGTERM) -> int | None:
        """``signum`` to the child's group, wait ``grace_s``, then SIGKILL what is left."""
        if self.process is None:
            return None
        self.send(signum)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs: killing it", self.name, grace_s)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # leftovers in its group
        except (ProcessLookupError, PermissionError):
            pass
        return self.process.wait()


class Readiness:
    """/ping's answer for a pool of workers, kept by the supervisor (one instance, one flag).

    503 with the reason until every worker has loaded and warmed up once; then 200 while at
    least one worker is alive and ready, so one worker being replaced does not fail the
    platform's health check. A load failure keeps it 503 with that failure as the reason.
    """

    def __init__(self, runtime_dir: Path, workers: int) -> None:
        self.runtime_dir = runtime_dir
        self.workers = workers
        self.all_ready_once = False

    def check(self) -> tuple[bool, str]:
        ready = ready_workers(self.runtime_dir, self.workers)
        status = f"{ready} of {self.workers} workers ready"
        if ready >= self.workers:
            self.all_ready_once = True
        if ready and self.all_ready_once:
            return True, status
        failure = read_failure(self.runtime_dir)
        if failure and not self.all_ready_once:
            return False, f"the model failed to load: {failure} ({status})"
        if self.all_ready_once:
            return False, f"no worker is ready; workers are being restarted ({status})"
        return False, f"the model is loading ({status})"


@dataclass
class ModelServer:
    """What the supervisor needs from a stack: its child, its upstream, optional start-up work.

    ``after_start`` runs in a thread once the child is started (MMS: register the model); it
    raises ``ServerError`` when the server cannot come up.
    """

    name: str
    command: list[str]
    env: dict[str, str]
    upstream: Upstream
    after_start: Callable[[threading.Event], None] | None = None


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Supervisor:
    """Run nginx + a model server until SIGTERM/SIGINT or a child's death; return the status."""

    def __init__(
        self,
        settings: ServingSettings,
        runtime_dir: Path,
        workers: int,
        server: ModelServer,
        execution_parameters: dict,
    ) -> None:
        self.settings = settings
        self.runtime_dir = runtime_dir
        self.server = server
        self.readiness = Readiness(runtime_dir, workers)
        self.workers = workers
        self.stop_requested = threading.Event()
        self.startup_error: str | None = None
        command, self.ping = nginx.prepare(
            settings, runtime_dir, server.upstream, execution_parameters, workers
        )
        from smneuron.serving.safety import offline_environ

        self.nginx = Child("nginx", command, offline_environ())
        self.model = Child(server.name, server.command, server.env)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.stop_requested.set()

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        # The public port first: SageMaker expects it to accept within moments of start.
        self.nginx.start()
        if not self.nginx.wait_until(lambda: _port_accepts(self.settings.port), NGINX_START_S):
            self.nginx.stop(2.0)
            raise ServerError(
                f"nginx did not start listening on port {self.settings.port} (its log above "
                "says why; is the port taken?)"
            )
        try:
            self.model.start()
        except ConfigurationError:
            self.nginx.stop(2.0)
            raise
        if self.server.after_start is not None:
            threading.Thread(target=self._after_start, name="smneuron-start", daemon=True).start()
        code = self._watch()
        self.ping.set(False, "the server is stopping")
        return self._stop(code)

    def _after_start(self) -> None:
        assert self.server.after_start is not None
        try:
            self.server.after_start(self.stop_requested)
        except ServerError as err:
            self.startup_error = err.message
            log.error("%s did not come up: %s", self.server.name, err.message)

    def _watch(self) -> int | None:
        """Publish readiness until asked to stop (None) or the server fails (a status)."""
        was_ready: bool | None = None
        while not self.stop_requested.wait(POLL_S):
            for child in (self.nginx, self.model):
                status = child.exited()
                if status is not None:
                    log.error("%s exited with status %s: stopping", child.name, status)
                    return status or 1
            if self.startup_error is not None:
                return 1
            ready, reason = self.readiness.check()
            if self.ping.set(ready, reason) and ready != was_ready:
                level = logging.INFO if ready or was_ready is None else logging.WARNING
                log.log(level, "health: %s (%s)", "ready" if ready else "not ready", reason)
                was_ready = ready
        return None

    def _stop(self, failed: int | None) -> int:
        """nginx drains (stops accepting, answers what is in flight), then the model server."""
        began = time.monotonic()
        self.nginx.stop(nginx.DRAIN_S + 2.0, signal.SIGQUIT)
        self.model.stop(SERVER_STOP_S)
        log.info("stopped in %.1fs", time.monotonic() - began)
        if failed is not None:
            return failed
        if not self.readiness.all_ready_once:
            log.error("stopped before the server ever came up")
            return 1
        return 0
