"""`make bench` cannot rot: its target ratios, report writer, message mix and closed loop.

The report is written from fake results (no docker, no model): a user reading report.md must
see each target marked met or missed from the figures, and the plots must be real PNGs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import dockerbench  # noqa: E402
import loadgen  # noqa: E402
import report  # noqa: E402

from smneuron.tools.build.pins import read_pins  # noqa: E402


def level(c: int, rps: float, p50: float, p99: float, mean_batch: float | None = None) -> dict:
    figures = {
        "concurrency": c,
        "requests": 100,
        "errors": 0,
        "throughput_rps": rps,
        "p50_ms": p50,
        "p90_ms": p50 * 1.5,
        "p99_ms": p99,
    }
    if mean_batch is not None:
        figures["batches"] = {"rows": 100, "runs": 100 / mean_batch, "mean_batch": mean_batch}
    return figures


def fake_results() -> dict:
    return {
        "meta": {"started": "2026-12-01T00:00:00Z", "git": "abc", "cpus": 2, "idle": {}},
        "artifact": {"batch_sizes": [1, 2, 4, 8], "buckets": [32, 64, 128], "graphs": 12},
        "images": {"toolkit": {"size_bytes": 2.0e9}, "ours": {"size_bytes": 1.1e9}},
        "servers": {
            "toolkit": {
                "label": "HF toolkit",
                "cold_start": {"ping_s": 20.0, "answer_s": 28.0},
                "levels": [level(1, 30.0, 30.0, 40.0), level(16, 50.0, 300.0, 500.0)],
                "memory": {"docker_stats_bytes": 2**30, "usage_bytes": 2**31},
            },
            "ours-gunicorn": {  # meets every serving target
                "label": "ours, gunicorn",
                "cold_start": {"ping_s": 5.0, "answer_s": 5.2, "answers_refused_after_ping": 0},
                "levels": [level(1, 50.0, 20.0, 25.0, 1.0), level(16, 90.0, 150.0, 250.0, 6.0)],
                "memory": {"docker_stats_bytes": 2**29, "usage_bytes": 2**30},
            },
            "ours-mms": {  # misses them: slower than the toolkit at c=16, ping came early
                "label": "ours, MMS",
                "cold_start": {"ping_s": 9.0, "answer_s": 20.0, "answers_refused_after_ping": 3},
                "levels": [level(1, 25.0, 40.0, 60.0, 1.0), level(16, 40.0, 400.0, 900.0, 3.0)],
                "memory": {},
            },
        },
        "inprocess": {
            "torch_threads": 2,
            "graphs": [
                {"batch": 1, "bucket": 32, "forward_ms": 8.0, "rows_per_s": 125.0},
                {"batch": 8, "bucket": 32, "forward_ms": 30.0, "rows_per_s": 266.0},
            ],
            "handler": [level(1, 60.0, 19.0, 22.0), level(16, 100.0, 140.0, 200.0)],
        },
        "training": {
            "plan": {"rows": 160, "epochs": 1.0, "batch_size": 8, "max_length": 128},
            "ours_samples_per_s": 40.0,
            "plain_samples_per_s": 38.0,
            "ours_runs": [39.0, 40.0],
            "plain_runs": [38.0, 37.0],
        },
        "errors": {},
    }


def by_key(found: list[report.Target], stack: str) -> dict[str, report.Target]:
    return {t.key: t for t in found if t.stack == stack}


def test_targets_are_the_issue_ratios_marked_met_or_missed():
    found = report.targets(fake_results())
    good, bad = by_key(found, "ours-gunicorn"), by_key(found, "ours-mms")
    assert good["c1_p50_vs_toolkit"].value == pytest.approx(20 / 30)
    assert good["c1_p50_vs_inprocess"].value == pytest.approx(20 / 19)
    assert good["c16_rps_vs_toolkit"].value == pytest.approx(90 / 50)
    assert good["c16_rps_vs_inprocess"].value == pytest.approx(90 / 100)
    assert good["c16_p99_vs_toolkit"].value == pytest.approx(250 / 500)
    assert good["cold_start_vs_toolkit"].value == pytest.approx(5.2 / 28)
    assert all(t.met for t in good.values()), [t.to_dict() for t in good.values() if not t.met]
    assert bad["no_level_slower"].value == pytest.approx(40 / 50)  # the worst level: c=16
    assert bad["no_level_slower"].limit == "worst at c=16"
    assert good["ping_not_early"].value == pytest.approx(0.2 - 0.025)  # less the c=1 p99
    assert bad["ping_not_early"].value == float("inf")  # 3 answers refused after /ping 200
    for key in ("c1_p50_vs_toolkit", "c16_rps_vs_toolkit", "ping_not_early", "no_level_slower"):
        assert bad[key].met is False, key
    (train,) = [t for t in found if t.key == "training_vs_plain"]
    assert train.value == pytest.approx(40 / 38)
    assert train.met


def test_targets_without_a_figure_are_not_applicable():
    results = fake_results()
    del results["servers"]["toolkit"]
    results["inprocess"] = {}
    good = by_key(report.targets(results), "ours-gunicorn")
    assert good["c1_p50_vs_toolkit"].met is None
    assert good["c16_rps_vs_inprocess"].met is None
    assert good["ping_not_early"].met is True  # needs no toolkit


def test_write_produces_the_report_the_json_and_real_pngs(tmp_path):
    written = report.write(fake_results(), tmp_path)
    names = {p.name for p in written}
    assert {"results.json", "report.md", "throughput.png", "latency.png", "forward.png"} <= names
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {t["key"] for t in saved["targets"]} >= {"c1_p50_vs_toolkit", "training_vs_plain"}
    text = (tmp_path / "report.md").read_text()
    assert (
        "| ours-mms | c=16 throughput ≥ 1.5 × the toolkit's | 0.80 | >= 1.5 | **missed** |" in text
    )
    assert "| ours, gunicorn | 16 | 90.0 | 150.0 | 225.0 | 250.0 | 0 | 6.00 | — | — |" in text
    assert "28.0" in text and "1.10" in text  # toolkit cold start, our image in GB


def test_a_failed_part_is_reported(tmp_path):
    results = {"meta": {}, "errors": {"serving": "RuntimeError: no docker engine\ntrace"}}
    report.write(results, tmp_path)
    assert "- `serving`: RuntimeError: no docker engine" in (tmp_path / "report.md").read_text()


def test_the_toolkit_image_pins_agree_with_the_cpu_constraints():
    pins = read_pins(ROOT / "constraints" / "cpu.txt").packages
    baseline = read_pins(ROOT / "benchmarks" / "toolkit" / "requirements.txt").packages
    assert {"torch", "transformers", "sagemaker-inference", "multi-model-server"} <= set(baseline)
    assert {name: pins.get(name) for name in baseline} == baseline
    toolkit = read_pins(ROOT / "benchmarks" / "toolkit" / "toolkit.txt").packages
    assert toolkit == {"sagemaker-huggingface-inference-toolkit": "2.6.0"}


def test_the_message_mix_is_fixed_and_spans_short_to_long():
    mix = loadgen.message_mix()
    assert mix == loadgen.message_mix()
    assert min(map(len, mix)) >= 10 and max(map(len, mix)) == 400
    assert sum(len(text) < 100 for text in mix) >= len(mix) // 2  # mostly short
    assert all(
        json.loads(body) == {"inputs": text}
        for body, text in zip(loadgen.bodies(mix), mix, strict=True)
    )


def test_percentile_is_nearest_rank():
    values = [float(x) for x in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50.0
    assert loadgen.percentile(values, 99) == 99.0
    assert loadgen.percentile([5.0], 90) == 5.0


class FakeSender:
    """Answers after 2 ms; every seventh body gets a 503."""

    calls = 0
    lock = threading.Lock()

    def send(self, body: bytes) -> tuple[int, bytes]:
        time.sleep(0.002)
        with self.lock:
            FakeSender.calls += 1
            n = FakeSender.calls
        return (503, b"busy") if n % 7 == 0 else (200, b"ok")

    def close(self) -> None:
        pass


def test_closed_loop_is_bounded_by_requests_and_counts_errors():
    FakeSender.calls = 0
    result = loadgen.closed_loop(
        FakeSender, [b"a", b"b"], 4, max_requests=70, max_seconds=30, warm_up_s=0.05
    )
    assert result.requests + result.errors == 70  # the warm-up is not counted
    assert result.errors == pytest.approx(10, abs=2)
    assert result.error_samples and result.error_samples[0].startswith("503")
    assert result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.throughput_rps > 0


def test_closed_loop_is_bounded_by_seconds():
    began = time.monotonic()
    result = loadgen.closed_loop(
        FakeSender, [b"a"], 2, max_requests=10**9, max_seconds=0.3, warm_up_s=0.0
    )
    assert time.monotonic() - began < 5
    assert result.requests > 0


def test_the_load_generator_targets_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        loadgen.run_level(80, [b"x"], 1, max_requests=1, max_seconds=1, host="192.0.2.1")


def test_batch_runs_from_invocation_log_lines():
    lines = [
        'noise before {"message": "invocation", "batch_sizes": [1]}',
        '{"message": "invocation", "batch_sizes": [4], "forward_ms": 30.0, "queue_ms": 2}',
        '{"message": "invocation", "batch_sizes": [4]}',
        '{"message": "invocation", "batch_sizes": [4]}',
        '{"message": "invocation", "batch_sizes": [4]}',
        "not json batch_sizes",
        '{"message": "ready"}',
    ]
    figures = dockerbench.batch_runs(lines)
    assert figures["rows"] == 5
    assert figures["runs"] == pytest.approx(2.0)  # one run of 1, one run of 4
    assert figures["mean_batch"] == pytest.approx(2.5)
    assert figures["mean_forward_ms"] == 30.0 and figures["mean_queue_ms"] == 2.0
    assert dockerbench.batch_runs([])["mean_batch"] is None
