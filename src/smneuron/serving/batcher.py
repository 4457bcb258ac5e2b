"""Dynamic batching inside one worker: group concurrent items per key up to a batch size.

Every item has a deadline and the queue a bound: an item whose deadline passes while it waits
is dropped before it costs a forward (504), a submission that would overfill the queue is
refused (503 with ``Retry-After``), and a dead batcher thread fails what it held and every
later submission at once (503) instead of leaving callers waiting.

What each run cost is counted: the compiled batch it ran on against the real rows in it, and
the tokens computed against the real ones (``Run``), so ``stats()`` shows the padding waste.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from smneuron.errors import DeadlineExceeded, NotReady, Overloaded

log = logging.getLogger(__name__)

STATS_LOG_INTERVAL_S = 60.0  # a summary line of stats() at INFO at most this often


@dataclass(frozen=True)
class Run:
    """What ``run_batch`` may return instead of a bare list: the outputs and their cost.

    Attributes:
        outputs: one per item, in order.
        graph_batch: rows the forward computed (the compiled batch size it ran on).
        real_tokens: tokens of the real rows (attention mask ones).
        computed_tokens: tokens the forward computed (graph_batch × sequence length).
    """

    outputs: Sequence[Any]
    graph_batch: int
    real_tokens: int = 0
    computed_tokens: int = 0


@dataclass(frozen=True)
class BatchResult:
    """One item's output, with how long it queued and the batch it ran in.

    ``batch_size`` is the real items of its run, ``graph_batch`` the compiled batch size the run
    used (equal unless the run was padded with empty rows).
    """

    value: Any
    queued_s: float
    forward_s: float
    batch_size: int
    graph_batch: int = 0


@dataclass
class _Pending:
    item: Any
    future: Future
    arrived: float
    deadline: float | None


class BatcherDied(NotReady):
    """The batcher thread is gone: this worker cannot answer and must be restarted."""


class DynamicBatcher:
    """Runs ``run_batch(key, items) -> outputs | Run`` on groups of items that share a key.

    One background thread owns the model: it waits for the oldest pending item, then for up
    to ``max_delay_s`` more (or until ``max_batch`` items share its key), and runs one batch.
    Each caller gets a Future for its own item; an exception in ``run_batch`` reaches exactly
    the callers whose items were in that batch.

    Args:
        max_queue: items that may wait at once (None: unbounded); a submission that would go
            above it raises ``Overloaded``.
        stall_after_s: a batch running longer than this makes ``health()`` report the worker
            unhealthy (None: never).
    """

    def __init__(
        self,
        run_batch: Callable[[Any, list[Any]], Sequence[Any] | Run],
        max_batch: int,
        max_delay_s: float,
        name: str = "batcher",
        *,
        max_queue: int | None = None,
        stall_after_s: float | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_delay_s = max(0.0, max_delay_s)
        self.max_queue = max_queue
        self.stall_after_s = stall_after_s
        self._queues: dict[Hashable, deque[_Pending]] = {}
        self._waiting = 0
        self._cond = threading.Condition()
        self._closed = False
        self._died: str | None = None
        self._running_since: float | None = None
        self.batches_run = 0
        self.items_run = 0
        self.expired = 0
        self.refused = 0
        self.batch_sizes: Counter[int] = Counter()
        self.graph_batches: Counter[int] = Counter()
        self.padded_rows = 0
        self.real_tokens = 0
        self.padded_tokens = 0
        self._stats_logged = time.monotonic()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------------
    # Callers

    def submit(self, key: Hashable, item: Any, deadline: float | None = None) -> Future:
        """Queue ``item`` under ``key``; the Future resolves to a ``BatchResult``.

        ``deadline`` is a ``time.monotonic()`` instant after which the item is not run.
        """
        return self.submit_many([(key, item)], deadline)[0]

    def submit_many(
        self, pairs: Iterable[tuple[Hashable, Any]], deadline: float | None = None
    ) -> list[Future]:
        """Queue all of ``pairs`` or none (a request's items are admitted together)."""
        pairs = list(pairs)
        with self._cond:
            self._check_alive()
            if self.max_queue is not None and self._waiting + len(pairs) > self.max_queue:
                self.refused += 1
                raise Overloaded(
                    f"this worker's queue is full ({self._waiting} of {self.max_queue} items "
                    f"waiting, this request adds {len(pairs)}); retry shortly"
                )
            now = time.monotonic()
            futures = []
            for key, item in pairs:
                future: Future = Future()
                self._queues.setdefault(key, deque()).append(_Pending(item, future, now, deadline))
                futures.append(future)
            self._waiting += len(pairs)
            self._cond.notify_all()
        return futures

    def wait(self, futures: Sequence[Future], deadline: float | None) -> list[BatchResult]:
        """Each future's result, never waiting past ``deadline`` (504 when it passes)."""
        results = []
        for future in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                results.append(future.result(timeout=remaining))
            except (FutureTimeout, CancelledError) as err:
                for pending in futures:
                    pending.cancel()  # items not yet taken are skipped by the batcher
                raise DeadlineExceeded(
                    "the request was not answered within its deadline; the server is busy or "
                    "a batch is stuck (see SMNEURON_REQUEST_DEADLINE_S)"
                ) from err
        return results

    def health(self) -> tuple[bool, str]:
        """(ok, reason): the thread is alive and no batch has run past ``stall_after_s``."""
        with self._cond:
            if self._died is not None or not self._thread.is_alive():
                return False, f"batcher thread stopped: {self._died or 'unknown reason'}"
            running = self._running_since
        if running is not None and self.stall_after_s is not None:
            elapsed = time.monotonic() - running
            if elapsed > self.stall_after_s:
                return False, f"a batch has been running for {elapsed:.0f}s"
        return True, "ok"

    def stats(self) -> dict[str, Any]:
        """Counts since start (or ``reset_stats``).

        ``batch_sizes``: runs per number of real items; ``graph_batches``: runs per compiled
        batch size used; ``padded_rows / real_rows`` and ``padded_tokens / real_tokens``: the
        padding waste (rows of padding added to fill a graph; tokens computed that were not
        real: padded rows and the padding of each row up to its bucket).
        """
        with self._cond:
            return {
                "batches_run": self.batches_run,
                "items_run": self.items_run,
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
                "graph_batches": dict(sorted(self.graph_batches.items())),
                "real_rows": self.items_run,
                "padded_rows": self.padded_rows,
                "real_tokens": self.real_tokens,
                "padded_tokens": self.padded_tokens,
                "padded_rows_per_real": _ratio(self.padded_rows, self.items_run),
                "padded_tokens_per_real": _ratio(self.padded_tokens, self.real_tokens),
            }

    def reset_stats(self) -> None:
        """Start counting afresh (after warm-up, whose runs are not traffic)."""
        with self._cond:
            self.batches_run = self.items_run = 0
            self.padded_rows = self.real_tokens = self.padded_tokens = 0
            self.batch_sizes.clear()
            self.graph_batches.clear()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _check_alive(self) -> None:
        if self._closed:
            raise RuntimeError("batcher is closed")
        if self._died is not None or not self._thread.is_alive():
            raise BatcherDied(
                f"this worker's batcher thread stopped ({self._died or 'unknown reason'}); "
                "the worker must be restarted",
                headers={"Retry-After": "1"},
            )

    # ----------------------------------------------------------------------------------------
    # The batcher thread

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
                first = queue[0].arrived + self.max_delay_s
                while len(queue) < self.max_batch and not self._closed:
                    remaining = first - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                taken: list[_Pending] = []
                now = time.monotonic()
                while queue and len(taken) < self.max_batch:
                    pending = queue.popleft()
                    self._waiting -= 1
                    # After this, cancel() fails: the caller waits for the result or its deadline.
                    if not pending.future.set_running_or_notify_cancel():
                        self.expired += 1
                        continue
                    if pending.deadline is not None and now >= pending.deadline:
                        self.expired += 1
                        pending.future.set_exception(
                            DeadlineExceeded("the request's deadline passed while it queued")
                        )
                        continue
                    taken.append(pending)
                if not taken:
                    continue
                self._running_since = now
                return key, taken

    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # the thread is dying: nobody may wait on it
            self._die(f"{type(err).__name__}: {err}")
            if not isinstance(err, Exception):
                raise
            log.exception("batcher thread failed")

    def _loop(self) -> None:
        while True:
            work = self._take()
            if work is None:
                return
            key, taken = work
            started = time.monotonic()
            try:
                try:
                    returned = self._run_batch(key, [pending.item for pending in taken])
                    run = returned if isinstance(returned, Run) else Run(returned, len(taken))
                    outputs = list(run.outputs)
                    if len(outputs) != len(taken):
                        raise RuntimeError(
                            f"batch function returned {len(outputs)} outputs for {len(taken)} items"
                        )
                except Exception as err:
                    for pending in taken:
                        pending.future.set_exception(err)
                    self._count(Run((), len(taken)), len(taken))
                    continue
            except BaseException as err:  # SystemExit & co. end the thread: fail its batch
                for pending in taken:
                    if not pending.future.done():
                        pending.future.set_exception(
                            BatcherDied(f"the batcher thread stopped: {type(err).__name__}")
                        )
                raise
            finally:
                with self._cond:
                    self._running_since = None
            forward = time.monotonic() - started
            self._count(run, len(taken))
            log.debug(
                "batch key=%s rows=%d graph_batch=%d padded_rows=%d real_tokens=%d "
                "padded_tokens=%d forward_ms=%.1f",
                key,
                len(taken),
                run.graph_batch,
                run.graph_batch - len(taken),
                run.real_tokens,
                run.computed_tokens - run.real_tokens,
                forward * 1000,
            )
            for pending, value in zip(taken, outputs, strict=True):
                pending.future.set_result(
                    BatchResult(
                        value, started - pending.arrived, forward, len(taken), run.graph_batch
                    )
                )
            self._log_stats()

    def _die(self, reason: str) -> None:
        with self._cond:
            self._died = reason
            queued = [pending for queue in self._queues.values() for pending in queue]
            self._queues.clear()
            self._waiting = 0
        log.error("batcher thread stopped (%s); failing %d queued items", reason, len(queued))
        for pending in queued:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(BatcherDied(f"the batcher thread stopped ({reason})"))

    def _count(self, run: Run, size: int) -> None:
        with self._cond:
            self.batches_run += 1
            self.items_run += size
            self.batch_sizes[size] += 1
            self.graph_batches[run.graph_batch] += 1
            self.padded_rows += max(0, run.graph_batch - size)
            self.real_tokens += run.real_tokens
            self.padded_tokens += max(0, run.computed_tokens - run.real_tokens)

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_logged < STATS_LOG_INTERVAL_S:
            return
        self._stats_logged = now
        log.info("batcher stats", extra={"batcher": self.stats()})


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
