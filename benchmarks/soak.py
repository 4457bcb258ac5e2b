"""Soak: `serve` (nginx + a stack) under closed-loop load on loopback for a long while.

Builds the tiny random-weight test artifact (tests/servingfixtures.py: a 2-layer BERT with the
real MiniLM tokenizer), starts `serve` on a free 127.0.0.1 port, runs CONCURRENCY keep-alive
clients posting small JSON requests for DURATION seconds, and prints requests, errors, p50/p99
latency and the workers' RSS growth from the end of warm-up to the end. Meanwhile a probe
GETs /ping every --ping-every seconds (default 0.05) from its own process on a fresh
connection, as the platform's health check does; its p50/p99/max latency and non-200 count
are printed. Exits 1 on any error or failed probe.

    python benchmarks/soak.py                                  # gunicorn, 32 clients, 600 s
    python benchmarks/soak.py --stack mms --duration 60 --concurrency 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from hostserver import Server, run_load  # noqa: E402

from servingfixtures import build_artifact  # noqa: E402


def _probe(url: str, every_s: float, stop: Any, results: Any) -> None:
    """The probe's own process: the load clients' threads must not delay its timings (GIL)."""
    import requests

    latencies, failures = [], []
    while not stop.wait(every_s):
        began = time.monotonic()
        try:
            status = requests.get(url, timeout=2).status_code
        except requests.RequestException as err:
            status, detail = 0, repr(err)
        else:
            detail = str(status)
        latencies.append(1000 * (time.monotonic() - began))
        if status != 200:
            failures.append(detail)
    results.put((latencies, failures))


class PingProbe:
    """GET /ping every ``every_s`` on a fresh connection, from a separate process."""

    def __init__(self, url: str, every_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        self.results = context.Queue()
        self.process = context.Process(
            target=_probe, args=(url + "/ping", every_s, self.stop_event, self.results)
        )
        self.latencies_ms: list[float] = []
        self.failures: list[str] = []

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.latencies_ms, self.failures = self.results.get(timeout=30)
        self.process.join(10)

    def summary(self) -> str:
        ordered = sorted(self.latencies_ms) or [float("nan")]

        def at(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return (
            f"ping_probes={len(self.latencies_ms)} ping_non200={len(self.failures)} "
            f"ping_p50_ms={at(0.5):.1f} ping_p99_ms={at(0.99):.1f} ping_max_ms={ordered[-1]:.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("gunicorn", "mms"), default="gunicorn")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warm-up", type=float, default=None, help="seconds (default: 10%%)")
    parser.add_argument("--ping-every", type=float, default=0.05, help="seconds between probes")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    work = Path(tempfile.mkdtemp(prefix="smneuron-soak-"))
    try:
        build_artifact(work / "model", "text-classification")
        server = Server(
            args.stack,
            work,
            work / "server.log",
            {"SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)},
        )
        try:
            server.wait_ready()
            print(
                f"soak: stack={args.stack} workers={args.workers} "
                f"concurrency={args.concurrency} duration={args.duration:.0f}s (loopback)",
                flush=True,
            )
            probe = PingProbe(server.url, args.ping_every)
            probe.start()
            try:
                figures = run_load(
                    server.url,
                    args.duration,
                    args.concurrency,
                    pids=server.worker_pids,
                    warm_up_s=args.warm_up,
                )
            finally:
                probe.stop()
        finally:
            code = server.stop()
        print(f"soak: {figures.summary()} serve_exit={code}")
        print(f"soak: {probe.summary()} load_avg={os.getloadavg()[0]:.1f}")
        for sample in figures.error_samples:
            print(f"soak: error sample: {sample}")
        return 0 if figures.errors == 0 and not probe.failures and code == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
