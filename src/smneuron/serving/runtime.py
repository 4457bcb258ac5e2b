"""One worker process's model state: slot and cores, loading, readiness, the error boundary."""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smneuron.accelerator import worker_env
from smneuron.env import ENV
from smneuron.errors import DeadlineExceeded, NotReady, ServerError, SmneuronError
from smneuron.serving.handler import Handler, Response, WorkerInfo, error_response
from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)

LAYOUT_FILE = "layout.json"


@dataclass(frozen=True)
class Layout:
    """What ``serve`` decided for its workers, shared through the runtime directory.

    Attributes:
        backend: "cpu" or "neuron".
        workers: worker processes.
        core_ranges: per worker slot, the NeuronCores it owns (empty on CPU).
        http_threads: request threads per worker (they feed the dynamic batcher).
        torch_threads: intra-op threads per worker on CPU (None: leave torch's default).
    """

    backend: str
    workers: int
    core_ranges: tuple[tuple[int, ...], ...] = ()
    http_threads: int = 16
    torch_threads: int | None = None

    def write(self, runtime_dir: Path) -> Path:
        runtime_dir.mkdir(parents=True, exist_ok=True)
        path = runtime_dir / LAYOUT_FILE
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")
        return path

    @classmethod
    def read(cls, runtime_dir: Path) -> Layout:
        data = json.loads((runtime_dir / LAYOUT_FILE).read_text(encoding="utf-8"))
        data["core_ranges"] = tuple(tuple(cores) for cores in data.get("core_ranges") or ())
        return cls(**data)


def claim_slot(runtime_dir: Path, slots: int) -> tuple[int, Any]:
    """Take the first free worker slot by holding an exclusive lock on its file.

    The kernel drops the lock when the process dies, so a restarted worker (gunicorn or MMS
    replace dead workers) takes over the dead one's slot and NeuronCores.
    """
    for index in range(slots):
        handle = open(runtime_dir / f"slot-{index}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return index, handle
    raise ServerError(f"all {slots} worker slots are taken; a worker was started twice")


READY_PREFIX = "ready-"
FAILURE_FILE = "failure"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def mark_ready(runtime_dir: Path, slot: int) -> None:
    """Record that the worker in ``slot`` (this process) has loaded and warmed up."""
    _write_atomically(runtime_dir / f"{READY_PREFIX}{slot}.json", json.dumps({"pid": os.getpid()}))


def clear_ready(runtime_dir: Path, slot: int | None = None, pid: int | None = None) -> None:
    """Withdraw ready markers: ``slot``'s, or every one naming ``pid`` (a worker that ended)."""
    slots = [slot] if slot is not None else range(_marker_count(runtime_dir))
    for index in slots:
        path = runtime_dir / f"{READY_PREFIX}{index}.json"
        if pid is None or _marker_pid(path) == pid:
            path.unlink(missing_ok=True)


def _marker_count(runtime_dir: Path) -> int:
    names = [p.stem[len(READY_PREFIX) :] for p in runtime_dir.glob(f"{READY_PREFIX}*.json")]
    return max((int(n) + 1 for n in names if n.isdigit()), default=0)


def record_failure(runtime_dir: Path, message: str) -> None:
    """Keep a worker's load failure where the supervisor reads /ping's reason from."""
    _write_atomically(runtime_dir / FAILURE_FILE, message)


def read_failure(runtime_dir: Path) -> str | None:
    try:
        return (runtime_dir / FAILURE_FILE).read_text("utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _marker_pid(path: Path) -> int | None:
    try:
        return int(json.loads(path.read_text("utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped) does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal probe is all there is
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def ready_workers(runtime_dir: Path, slots: int) -> int:
    """Slots whose worker marked itself ready and is still alive (a restarted worker only
    counts once it has loaded again)."""
    count = 0
    for slot in range(slots):
        pid = _marker_pid(runtime_dir / f"{READY_PREFIX}{slot}.json")
        if pid is not None and process_alive(pid):
            count += 1
    return count


def pin_neuron_cores(cores: tuple[int, ...]) -> None:
    """Give the Neuron runtime of THIS worker process its core range, before it initialises.

    The Neuron runtime reads ``NEURON_RT_VISIBLE_CORES`` from its own process environment at
    init, and a worker's slot (hence its cores) is only known inside the worker: gunicorn forks
    workers and the MMS JVM spawns them, both with the server's environment. So this is the one
    place a process sets its own environment; no parent's environment is touched, and children
    elsewhere get a copy (``worker_env``).
    """
    os.environ.update(worker_env({}, cores))
    os.environ.pop(ENV.NEURON_NUM_CORES, None)


# A request still running this long past its deadline (its 504 already answered) means a hook
# is stuck: the worker reports itself unhealthy and is replaced.
STUCK_GRACE_S = 2.0
WATCH_S = 0.5
# Before a worker found unhealthy exits: time for the 504s already decided to be written out.
EXIT_GRACE_S = 1.0
EXIT_UNHEALTHY = 70  # not gunicorn's 3/4 (boot/app-load errors stop the whole arbiter)


def exit_process(code: int) -> None:  # pragma: no cover - ends the process
    logging.shutdown()
    os._exit(code)


class WorkerRuntime:
    """The model inside one worker process: load (once), answer invocations, report health.

    Readiness leaves the process as a ready marker in the runtime directory (written once the
    model is loaded and warmed up, withdrawn when the worker turns unhealthy) and a load
    failure as the failure record; the supervisor turns them into nginx's ``/ping``.
    """

    def __init__(self, settings: ServingSettings, runtime_dir: Path | None) -> None:
        self.settings = settings
        self.runtime_dir = runtime_dir
        self.state = "loading"
        self.error: str | None = None
        self.handler: Handler | None = None
        self._slot_lock: Any = None
        self.slot = 0
        self.workers = 1
        self._lock = threading.Lock()
        self._in_flight: dict[int, float] = {}  # request id -> time.monotonic() it began
        self._ids = itertools.count()

    def _read_layout(self) -> Layout:
        from smneuron.accelerator import detect_backend

        if self.runtime_dir is not None and (self.runtime_dir / LAYOUT_FILE).is_file():
            return Layout.read(self.runtime_dir)
        return Layout(backend=self.settings.accelerator or detect_backend(), workers=1)

    def _claim_slot(self, layout: Layout) -> int:
        """Take a free worker slot (held until this process exits); 0 without a runtime dir."""
        if self.runtime_dir is None:
            return 0
        index, self._slot_lock = claim_slot(self.runtime_dir, layout.workers)
        return index

    def _worker_info(self) -> WorkerInfo:
        """Read the layout, claim a slot, pin its cores and threads; who this worker is."""
        from smneuron.artifact.backends import get_backend

        layout = self._read_layout()
        self.slot, self.workers = self._claim_slot(layout), layout.workers
        cores = layout.core_ranges[self.slot] if layout.core_ranges else None
        if cores is not None:
            pin_neuron_cores(cores)
        if layout.torch_threads:
            import torch

            torch.set_num_threads(layout.torch_threads)
        log.info("worker slot=%d cores=%s backend=%s", self.slot, cores, layout.backend)
        return WorkerInfo(self.slot, cores, self.settings, get_backend(layout.backend))

    def load(self) -> None:
        """Load and warm up; failures are kept for /ping and logged with what to do."""
        started = time.monotonic()
        try:
            handler = Handler.load(self.settings.paths.model, self._worker_info())
            handler.warm_up()
        except SmneuronError as err:
            self._fail(err.message)
            raise
        except Exception as err:
            log.exception("model load failed")
            self._fail(f"model load failed: {type(err).__name__}: {err}")
            raise
        with self._lock:
            self.handler = handler
            self.state = "ready"
        if self.runtime_dir is not None:
            mark_ready(self.runtime_dir, self.slot)
        log.info("ready: loaded and warmed up in %.1fs", time.monotonic() - started)

    def _fail(self, message: str) -> None:
        with self._lock:
            self.state = "failed"
            self.error = message
        log.error("model not loaded: %s", message)
        if self.runtime_dir is not None:
            record_failure(self.runtime_dir, message)

    def load_in_background(self) -> threading.Event:
        """Load in a thread; the returned event is set once the load has ended, either way."""
        done = threading.Event()

        def run() -> None:
            try:
                self.load()
            except Exception:
                pass  # kept in self.error and the failure file; load() logged it
            finally:
                done.set()

        threading.Thread(target=run, name="smneuron-load", daemon=True).start()
        return done

    @property
    def ready(self) -> bool:
        """Loaded and warmed up (a worker that turns unhealthy later stays ``ready`` here but
        withdraws its marker; see ``health``)."""
        return self.state == "ready"

    def health(self) -> tuple[bool, str]:
        """(ok, reason): loaded, the handler healthy (batcher thread alive, no batch past the
        deadline), and no request running past its deadline by more than ``STUCK_GRACE_S``."""
        if self.handler is None:
            return False, self.error or "the model is loading"
        ok, reason = self.handler.health()
        if not ok:
            return False, reason
        with self._lock:
            oldest = min(self._in_flight.values(), default=None)
        if oldest is not None:
            running = time.monotonic() - oldest
            if running > self.settings.deadline_s + STUCK_GRACE_S:
                return False, (
                    f"a request has been running for {running:.0f}s, past its deadline of "
                    f"{self.settings.deadline_s:g}s (a hook is stuck)"
                )
        return True, "ok"

    def healthy(self) -> bool:
        return self.health()[0]

    def withdraw_ready(self) -> None:
        """Take this worker's ready marker back: /ping stops counting it."""
        if self.runtime_dir is not None:
            clear_ready(self.runtime_dir, self.slot)

    def watch(
        self,
        on_unhealthy: Callable[[int], None] = exit_process,
        interval_s: float = WATCH_S,
    ) -> threading.Thread:
        """Poll ``health`` once loaded; on the first failure withdraw the ready marker, log the
        reason, wait ``EXIT_GRACE_S`` and call ``on_unhealthy(EXIT_UNHEALTHY)`` (by default:
        the process exits, and gunicorn's arbiter or MMS starts a fresh worker)."""

        def run() -> None:
            while True:
                time.sleep(interval_s)
                if self.state == "failed":
                    return  # the failure record keeps /ping non-200; nothing to restart
                if self.state != "ready":
                    continue
                ok, reason = self.health()
                if ok:
                    continue
                log.error("worker slot=%d unhealthy, restarting it: %s", self.slot, reason)
                self.withdraw_ready()
                time.sleep(EXIT_GRACE_S)
                on_unhealthy(EXIT_UNHEALTHY)
                return

        thread = threading.Thread(target=run, name="smneuron-health", daemon=True)
        thread.start()
        return thread

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
    ) -> Response:
        """The error boundary: every failure becomes a JSON error; traces go to the log.

        The handler runs in a helper thread so that a hook that hangs still gets its 504 at
        the request deadline; the stuck thread then makes ``health`` fail.
        """
        request_id = next(self._ids)
        with self._lock:
            self._in_flight[request_id] = time.monotonic()
        outcome: list[Response | BaseException] = []
        finished = threading.Event()

        def run() -> None:
            try:
                outcome.append(self._invoke(body, content_type, accept, custom_attributes))
            except BaseException as err:  # handed to the caller's thread below
                outcome.append(err)
            finally:
                with self._lock:
                    self._in_flight.pop(request_id, None)
                finished.set()

        threading.Thread(target=run, name="smneuron-request", daemon=True).start()
        if not finished.wait(self.settings.deadline_s):
            log.error(
                "request still running after its deadline of %gs: answered 504",
                self.settings.deadline_s,
            )
            return error_response(
                DeadlineExceeded(
                    f"the request was not answered within its deadline of "
                    f"{self.settings.deadline_s:g}s ({ENV.REQUEST_DEADLINE_S})"
                )
            )
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None,
    ) -> Response:
        try:
            if self.handler is None:
                raise NotReady(self.error or "the model is still loading; retry after /ping is 200")
            return self.handler.invoke(body, content_type, accept, custom_attributes)
        except SmneuronError as err:
            if err.status_code >= 500:
                log.exception("request failed: %s", err.message)
            else:
                log.info("request rejected: %s %s", err.status_code, err.message)
            return error_response(err)
        except Exception:
            log.exception("request failed with an unexpected error")
            return error_response(
                ServerError("the model server failed on this request; see the server log")
            )


def execution_parameters(settings: ServingSettings, workers: int) -> dict[str, Any]:
    """What batch transform asks ``/execution-parameters`` for."""
    return {
        "MaxConcurrentTransforms": settings.max_concurrent_transforms or workers,
        "BatchStrategy": settings.batch_strategy,
        "MaxPayloadInMB": settings.max_payload_mb,
    }
