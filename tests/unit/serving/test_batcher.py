"""The dynamic batcher: grouping, ordering, timeouts (partial batches), error routing."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from smneuron.serving.batcher import DynamicBatcher


def test_groups_concurrent_items_and_routes_results_in_order():
    seen = []

    def run(key, items):
        seen.append((key, list(items)))
        return [item * 10 for item in items]

    batcher = DynamicBatcher(run, max_batch=4, max_delay_s=0.5)
    try:
        futures = [batcher.submit("k", i) for i in range(8)]
        results = [future.result(timeout=5) for future in futures]
    finally:
        batcher.close()
    assert [r.value for r in results] == [i * 10 for i in range(8)]
    assert [items for _, items in seen] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert {r.batch_size for r in results} == {4}
    stats = batcher.stats()
    assert (stats["batches_run"], stats["items_run"], stats["batch_sizes"]) == (2, 8, {4: 2})
    assert (stats["graph_batches"], stats["padded_rows"]) == ({4: 2}, 0)


def test_partial_batch_runs_after_the_delay():
    batcher = DynamicBatcher(lambda key, items: items, max_batch=8, max_delay_s=0.05)
    try:
        futures = [batcher.submit("k", i) for i in range(3)]
        results = [future.result(timeout=5) for future in futures]
    finally:
        batcher.close()
    assert [r.value for r in results] == [0, 1, 2]
    assert batcher.stats()["batch_sizes"] == {3: 1}


def test_keys_never_share_a_batch():
    batches = []

    def run(key, items):
        batches.append((key, list(items)))
        return [(key, item) for item in items]

    batcher = DynamicBatcher(run, max_batch=4, max_delay_s=0.05)
    try:
        futures = [batcher.submit(16 if i % 2 else 32, i) for i in range(6)]
        values = [future.result(timeout=5).value for future in futures]
    finally:
        batcher.close()
    assert values == [(16 if i % 2 else 32, i) for i in range(6)]
    for key, items in batches:
        assert all((i % 2 == 1) == (key == 16) for i in items)


def test_exception_reaches_only_the_callers_in_that_batch():
    def run(key, items):
        if key == "bad":
            raise ValueError("broken batch")
        return items

    batcher = DynamicBatcher(run, max_batch=4, max_delay_s=0.02)
    try:
        bad = [batcher.submit("bad", i) for i in range(2)]
        good = [batcher.submit("good", i) for i in range(2)]
        for future in bad:
            with pytest.raises(ValueError, match="broken batch"):
                future.result(timeout=5)
        assert [f.result(timeout=5).value for f in good] == [0, 1]
        # The worker thread survived the failure.
        assert batcher.submit("good", 9).result(timeout=5).value == 9
    finally:
        batcher.close()


def test_wrong_output_count_is_an_error_for_the_callers():
    batcher = DynamicBatcher(lambda key, items: items[:1], max_batch=2, max_delay_s=0.5)
    try:
        futures = [batcher.submit("k", i) for i in range(2)]
        for future in futures:
            with pytest.raises(RuntimeError, match="outputs"):
                future.result(timeout=5)
    finally:
        batcher.close()


def test_many_threads_all_get_their_own_answer():
    lock = threading.Lock()
    sizes = []

    def run(key, items):
        with lock:
            sizes.append(len(items))
        return [-item for item in items]

    batcher = DynamicBatcher(run, max_batch=4, max_delay_s=0.02)
    try:
        with ThreadPoolExecutor(16) as pool:
            values = list(pool.map(lambda i: batcher.submit("k", i).result(5).value, range(64)))
    finally:
        batcher.close()
    assert values == [-i for i in range(64)]
    assert max(sizes) <= 4
    assert sum(sizes) == 64


def test_closed_batcher_refuses_work():
    batcher = DynamicBatcher(lambda key, items: items, max_batch=2, max_delay_s=0.01)
    batcher.close()
    with pytest.raises(RuntimeError):
        batcher.submit("k", 1)


def _blocking(release: threading.Event, started: threading.Event | None = None):
    def run(key, items):
        if started is not None:
            started.set()
        release.wait(30)
        return items

    return run


def test_a_stuck_batch_is_a_504_at_the_deadline_and_the_worker_reports_it():
    import time

    from smneuron.errors import DeadlineExceeded

    release, started = threading.Event(), threading.Event()
    batcher = DynamicBatcher(
        _blocking(release, started), max_batch=2, max_delay_s=0, stall_after_s=0.05
    )
    try:
        deadline = time.monotonic() + 2.0  # ample for the thread to take it, even on a busy host
        futures = batcher.submit_many([("k", 1)], deadline)
        assert started.wait(5)
        with pytest.raises(DeadlineExceeded) as caught:
            batcher.wait(futures, deadline)
        assert caught.value.status_code == 504
        ok, reason = batcher.health()
        assert not ok and "running for" in reason
        # Queued behind the stuck batch: expired before it costs a forward.
        late = batcher.submit_many([("k", 2)], time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceeded):
            batcher.wait(late, time.monotonic() + 0.1)
        release.set()
        assert batcher.submit("k", 3).result(5).value == 3
        assert batcher.health() == (True, "ok")
        assert batcher.expired >= 1
    finally:
        release.set()
        batcher.close()


def test_a_full_queue_refuses_with_503_and_retry_after():
    from smneuron.errors import Overloaded

    release, started = threading.Event(), threading.Event()
    batcher = DynamicBatcher(_blocking(release, started), max_batch=1, max_delay_s=0, max_queue=3)
    try:
        first = batcher.submit("k", 0)
        assert started.wait(5)  # the running item has left the queue
        queued = batcher.submit_many([("k", 1), ("k", 2)])
        with pytest.raises(Overloaded) as caught:
            batcher.submit_many([("k", 3), ("k", 4)])  # all or nothing
        assert caught.value.status_code == 503
        assert caught.value.headers == {"Retry-After": "1"}
        assert batcher.submit("k", 5).done() is False  # one more still fits
        release.set()
        assert [f.result(5).value for f in [first, *queued]] == [0, 1, 2]
    finally:
        release.set()
        batcher.close()


class _Fatal(BaseException):
    """Stands for what ends a thread (SystemExit, KeyboardInterrupt) in a forward."""


def test_a_dead_batcher_thread_fails_its_callers_fast_and_reports_unhealthy():
    from smneuron.serving.batcher import BatcherDied

    release = threading.Event()

    def run(key, items):
        release.wait(5)
        raise _Fatal("gone")

    batcher = DynamicBatcher(run, max_batch=1, max_delay_s=0)
    original_hook = threading.excepthook
    threading.excepthook = lambda args: None  # the thread's death is the point of the test
    try:
        running = batcher.submit("k", 1)
        queued = batcher.submit("k", 2)
        release.set()
        for future in (running, queued):
            with pytest.raises(BatcherDied) as caught:
                future.result(5)
            assert caught.value.status_code == 503
        batcher._thread.join(5)
        ok, reason = batcher.health()
        assert not ok and "_Fatal" in reason
        with pytest.raises(BatcherDied):
            batcher.submit("k", 3)  # later requests fail at once instead of queueing
    finally:
        threading.excepthook = original_hook
        batcher.close()
