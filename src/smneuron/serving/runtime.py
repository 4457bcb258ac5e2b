"""One worker process's model state: slot and cores, loading, readiness, the error boundary."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smneuron.accelerator import worker_env
from smneuron.errors import NotReady, ServerError, SmneuronError
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


def mark_ready(runtime_dir: Path, slot: int) -> None:
    """Record that the worker in ``slot`` (this process) has loaded and warmed up."""
    path = runtime_dir / f"ready-{slot}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")
    os.replace(tmp, path)


def ready_workers(runtime_dir: Path, slots: int) -> int:
    """Slots whose worker marked itself ready and is still alive (a restarted worker only
    counts once it has loaded again)."""
    count = 0
    for slot in range(slots):
        try:
            pid = json.loads((runtime_dir / f"ready-{slot}.json").read_text("utf-8"))["pid"]
            os.kill(int(pid), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        count += 1
    return count


class Readiness:
    """/ping's answer for a pool of workers: every worker ready the first time, then any one
    (so that one restarting worker does not fail the platform's health check)."""

    def __init__(self, runtime_dir: Path | None, workers: int) -> None:
        self.runtime_dir = runtime_dir
        self.workers = workers
        self.all_ready_once = False

    def check(self) -> tuple[bool, str]:
        if self.runtime_dir is None:
            return False, "no runtime directory"
        ready = ready_workers(self.runtime_dir, self.workers)
        if ready >= self.workers:
            self.all_ready_once = True
        return bool(ready) and self.all_ready_once, f"{ready} of {self.workers} workers ready"


class WorkerRuntime:
    """The model inside one worker process: load (once), answer ping and invocations."""

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

    def _worker_info(self) -> WorkerInfo:
        from smneuron.accelerator import detect_backend
        from smneuron.artifact.backends import get_backend

        if self.runtime_dir is not None and (self.runtime_dir / LAYOUT_FILE).is_file():
            layout = Layout.read(self.runtime_dir)
        else:
            layout = Layout(backend=self.settings.accelerator or detect_backend(), workers=1)
        index, self._slot_lock = (
            claim_slot(self.runtime_dir, layout.workers) if self.runtime_dir else (0, None)
        )
        self.slot, self.workers = index, layout.workers
        cores = layout.core_ranges[index] if layout.core_ranges else None
        if cores is not None:
            # This process's own environment, before the Neuron runtime reads it at init.
            os.environ.update(worker_env({}, cores))
        if layout.torch_threads:
            import torch

            torch.set_num_threads(layout.torch_threads)
        log.info("worker slot=%d cores=%s backend=%s", index, cores, layout.backend)
        return WorkerInfo(index, cores, self.settings, get_backend(layout.backend))

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

    def load_in_background(self) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except Exception:
                pass

        thread = threading.Thread(target=run, name="smneuron-load", daemon=True)
        thread.start()
        return thread

    def ping(self, readiness: Readiness | None = None) -> Response:
        """200 once the model is loaded and warmed up (in every worker, given ``readiness``)."""
        if self.state == "ready":
            if readiness is None:
                return Response(b'{"status": "ready"}', "application/json")
            ready, status = readiness.check()
            if ready:
                return Response(b'{"status": "ready"}', "application/json")
            return error_response(NotReady(f"the model is loading ({status})"))
        message = self.error or "the model is loading"
        return error_response(NotReady(message))

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None = None,
    ) -> Response:
        """The error boundary: every failure becomes a JSON error; traces go to the log."""
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
