"""Dynamic batching inside one worker: group concurrent items per key up to a batch size."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """One item's output, with how long it queued and the batch it ran in."""

    value: Any
    queued_s: float
    forward_s: float
    batch_size: int


@dataclass
class _Pending:
    item: Any
    future: Future
    arrived: float


class DynamicBatcher:
    """Runs ``run_batch(key, items) -> outputs`` on groups of items that share a key.

    One background thread owns the model: it waits for the oldest pending item, then for up
    to ``max_delay_s`` more (or until ``max_batch`` items share its key), and runs one batch.
    Each caller gets a Future for its own item; an exception in ``run_batch`` reaches exactly
    the callers whose items were in that batch.
    """

    def __init__(
        self,
        run_batch: Callable[[Any, list[Any]], Sequence[Any]],
        max_batch: int,
        max_delay_s: float,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_delay_s = max(0.0, max_delay_s)
        self._queues: dict[Hashable, deque[_Pending]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.items_run = 0
        self.batch_sizes: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, item: Any) -> Future:
        """Queue ``item`` under ``key``; the Future resolves to a ``BatchResult``."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._queues.setdefault(key, deque()).append(_Pending(item, future, time.monotonic()))
            self._cond.notify_all()
        return future

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "batches_run": self.batches_run,
                "items_run": self.items_run,
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
            }

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _oldest_key(self) -> Hashable | None:
        oldest = None
        for key, queue in self._queues.items():
            if queue and (oldest is None or queue[0].arrived < oldest[1]):
                oldest = (key, queue[0].arrived)
        return None if oldest is None else oldest[0]

    def _take(self) -> tuple[Hashable, list[_Pending]] | None:
        with self._cond:
            while True:
                key = self._oldest_key()
                if key is None:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                queue = self._queues[key]
                deadline = queue[0].arrived + self.max_delay_s
                while len(queue) < self.max_batch and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                taken = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
                return key, taken

    def _loop(self) -> None:
        while True:
            work = self._take()
            if work is None:
                return
            key, taken = work
            started = time.monotonic()
            try:
                outputs = list(self._run_batch(key, [pending.item for pending in taken]))
                if len(outputs) != len(taken):
                    raise RuntimeError(
                        f"batch function returned {len(outputs)} outputs for {len(taken)} items"
                    )
            except BaseException as err:
                for pending in taken:
                    pending.future.set_exception(err)
                self._count(len(taken))
                continue
            forward = time.monotonic() - started
            self._count(len(taken))
            log.debug("batch key=%s size=%d forward_ms=%.1f", key, len(taken), forward * 1000)
            for pending, value in zip(taken, outputs, strict=True):
                pending.future.set_result(
                    BatchResult(value, started - pending.arrived, forward, len(taken))
                )

    def _count(self, size: int) -> None:
        with self._cond:
            self.batches_run += 1
            self.items_run += size
            self.batch_sizes[size] += 1
