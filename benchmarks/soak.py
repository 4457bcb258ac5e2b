"""Soak: `serve` (nginx + a stack) under closed-loop load on loopback for a long while.

Builds the tiny random-weight test artifact (tests/servingfixtures.py: a 2-layer BERT with the
real MiniLM tokenizer), starts `serve` on a free 127.0.0.1 port, runs CONCURRENCY keep-alive
clients posting small JSON requests for DURATION seconds, and prints requests, errors, p50/p99
latency and the workers' RSS growth from the end of warm-up to the end. Exits 1 on any error.

    python benchmarks/soak.py                                  # gunicorn, 32 clients, 600 s
    python benchmarks/soak.py --stack mms --duration 60 --concurrency 16
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from hostserver import Server, run_load  # noqa: E402

from servingfixtures import build_artifact  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("gunicorn", "mms"), default="gunicorn")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--warm-up", type=float, default=None, help="seconds (default: 10%%)")
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
            figures = run_load(
                server.url,
                args.duration,
                args.concurrency,
                pids=server.worker_pids,
                warm_up_s=args.warm_up,
            )
        finally:
            code = server.stop()
        print(f"soak: {figures.summary()} serve_exit={code}")
        for sample in figures.error_samples:
            print(f"soak: error sample: {sample}")
        return 0 if figures.errors == 0 and code == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
