"""Batch-size buckets: the smallest compiled graph that holds what waits, and the padding waste."""

from __future__ import annotations

import pytest

from smneuron.serving.batcher import DynamicBatcher, Run
from smneuron.serving.shapes import choose_batch

SIZES = (1, 2, 4, 8)


@pytest.mark.parametrize(("rows", "graph"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (8, 8)])
def test_smallest_compiled_batch_that_holds_the_rows(rows, graph):
    assert choose_batch(rows, SIZES) == graph


def test_rows_outside_the_compiled_sizes_are_a_fault():
    with pytest.raises(ValueError, match="9 rows are more than the largest compiled batch 8"):
        choose_batch(9, SIZES)
    with pytest.raises(ValueError, match="at least one row"):
        choose_batch(0, SIZES)


def padded_runner(bucket_tokens: int):
    """A run_batch that pads like CompiledModel: items are their real token counts."""

    def run(key, items):
        graph = choose_batch(len(items), SIZES)
        return Run(list(items), graph, sum(items), graph * bucket_tokens)

    return run


@pytest.mark.parametrize(
    ("waiting", "runs"), [(1, [1]), (3, [4]), (8, [8]), (9, [8, 1]), (13, [8, 8])]
)
def test_a_queue_is_split_into_full_largest_graphs_and_one_smallest_that_fits(waiting, runs):
    batcher = DynamicBatcher(padded_runner(16), max_batch=8, max_delay_s=0.01)
    try:
        futures = batcher.submit_many([("seq16", 5)] * waiting)
        results = batcher.wait(futures, None)
        stats = batcher.stats()
    finally:
        batcher.close()
    per_item = [
        graph for index, graph in enumerate(runs) for _ in range(min(8, waiting - 8 * index))
    ]
    assert [r.graph_batch for r in results] == per_item
    assert stats["batches_run"] == len(runs)
    assert sum(stats["graph_batches"].values()) == len(runs)
    assert stats["graph_batches"] == {size: runs.count(size) for size in set(runs)}
    assert stats["real_rows"] == waiting
    assert stats["padded_rows"] == sum(runs) - waiting
    assert stats["real_tokens"] == 5 * waiting
    assert stats["padded_tokens"] == 16 * sum(runs) - 5 * waiting


def test_padding_ratios_and_reset():
    batcher = DynamicBatcher(padded_runner(16), max_batch=8, max_delay_s=0.01)
    try:
        batcher.wait(batcher.submit_many([("seq16", 4)] * 3), None)  # one run at batch 4
        stats = batcher.stats()
        assert stats["padded_rows_per_real"] == pytest.approx(1 / 3, abs=1e-4)
        # 4 x 16 tokens computed, 12 real
        assert stats["padded_tokens_per_real"] == pytest.approx((64 - 12) / 12, abs=1e-4)
        batcher.reset_stats()
        empty = batcher.stats()
        assert (empty["batches_run"], empty["graph_batches"], empty["padded_tokens"]) == (0, {}, 0)
        assert empty["padded_rows_per_real"] is None
    finally:
        batcher.close()


def test_a_plain_list_from_run_batch_counts_as_an_unpadded_run():
    batcher = DynamicBatcher(lambda key, items: list(items), max_batch=4, max_delay_s=0.01)
    try:
        results = batcher.wait(batcher.submit_many([("k", 1)] * 3), None)
        assert {r.graph_batch for r in results} == {3}
        assert batcher.stats()["padded_rows"] == 0
    finally:
        batcher.close()


# --------------------------------------------------------------------------------------------
# The served model on a real artifact compiled at batch sizes 1, 2, 4, 8


@pytest.fixture(scope="module")
def bucketed_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact
    from tinymodels import minilm_dir, tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bucketed") / "model"
    model = tiny_model(max_positions=64)
    model.save_pretrained(root)
    AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True).save_pretrained(root)
    compile_artifact(
        root,
        model,
        task="text-classification",
        labels=["ham", "spam"],
        batch_sizes=SIZES,
        sequence_lengths=(16,),
        backend=CpuBackend(),
    )
    return root


@pytest.fixture(scope="module")
def served(bucketed_dir):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.serving.model import load_compiled

    model = load_compiled(bucketed_dir, CpuBackend(), max_delay_ms=20)
    model.warm_up()
    yield model
    model.close()


def test_warm_up_runs_every_graph_and_is_not_counted(served):
    assert set(served.graphs) == {(size, 16) for size in SIZES}
    assert served.stats()["batches_run"] == 0


def test_one_request_runs_on_the_batch_1_graph_and_equals_the_batch_8_graph(served):
    import torch

    before = served.stats()["graph_batches"].get(1, 0)
    single = served.predict(["win a free cruise"])
    assert (single.batch_sizes, single.graph_batches) == ([1], [1])
    assert served.stats()["graph_batches"][1] == before + 1
    # The same row through the batch-8 graph, padded with seven empty rows.
    ((bucket, row, _),) = served.encode(["win a free cruise"])
    filler = served._padded({"input_ids": []}, bucket)  # an empty row, as the batcher pads
    rows = [row] + [filler] * 7
    with torch.no_grad():
        logits = served.graphs[(8, bucket)](
            *(torch.tensor([r[i] for r in rows]) for i in range(len(row)))
        )[0]
    probs = torch.softmax(logits, -1)
    best = int(probs.argmax())
    assert single.results[0]["label"] == ["ham", "spam"][best]
    assert single.results[0]["score"] == pytest.approx(float(probs[best]), abs=1e-5)


def test_three_texts_run_at_batch_4_and_nine_as_8_plus_1(served):
    served.batcher.reset_stats()
    three = served.predict(["a", "b", "c"])
    assert three.graph_batches == [4, 4, 4]
    nine = served.predict([f"text {i}" for i in range(9)])
    assert sorted(nine.graph_batches) == [1] + [8] * 8
    stats = served.stats()
    assert stats["graph_batches"] == {1: 1, 4: 1, 8: 1}
    assert (stats["real_rows"], stats["padded_rows"]) == (12, 1)
    real = sum(sum(row[1]) for _, row, _ in served.encode(["a", "b", "c"]))
    real += sum(sum(row[1]) for _, row, _ in served.encode([f"text {i}" for i in range(9)]))
    assert stats["real_tokens"] == real
    assert stats["padded_tokens"] == (4 + 8 + 1) * 16 - real


def test_the_stats_are_logged_as_one_line_with_the_padding(monkeypatch, caplog):
    import logging

    monkeypatch.setattr("smneuron.serving.batcher.STATS_LOG_INTERVAL_S", 0.0)
    batcher = DynamicBatcher(padded_runner(16), max_batch=8, max_delay_s=0.01)
    try:
        with caplog.at_level(logging.INFO, logger="smneuron.serving.batcher"):
            batcher.wait(batcher.submit_many([("seq16", 5)] * 3), None)
            batcher.close()  # the line is written after the run, on the batcher thread
    finally:
        batcher.close()
    lines = [r for r in caplog.records if r.getMessage() == "batcher stats"]
    assert lines, [r.getMessage() for r in caplog.records]
    logged = lines[-1].batcher
    assert (logged["graph_batches"], logged["padded_rows"], logged["real_tokens"]) == (
        {4: 1},
        1,
        15,
    )
