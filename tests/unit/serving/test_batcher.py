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
    assert batcher.stats() == {"batches_run": 2, "items_run": 8, "batch_sizes": {4: 2}}


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
