"""The in-process limit of `make bench`: what our compiled graphs and handler do without HTTP.

Two figures for an artifact, in a process of its own (so its torch threads and memory are its
own; ``make bench`` runs it as a subprocess and reads the JSON it prints):

- **graphs**: the forward time of every compiled graph (each batch size and sequence bucket the
  manifest lists), on inputs of that static shape, and the rows per second it gives;
- **handler**: the same message mix as the HTTP load, sent straight to ``WorkerRuntime.invoke``
  (decode -> tokenize -> dynamic batcher -> graph -> encode, as in a serving worker) by
  closed-loop threads at each concurrency: throughput and p50/p90/p99.

    python benchmarks/inprocess.py ARTIFACT_DIR [--concurrency 1,16] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import bodies, closed_loop, message_mix


def graph_shapes(manifest: Any) -> list[tuple[int, int]]:
    """(batch size, bucket) of every compiled graph (manifest format 1 or 2)."""
    graphs = getattr(manifest, "graphs", None)
    if callable(graphs):
        return [(int(b), int(n)) for b, n in graphs()]
    return [(int(manifest.batch_size), int(n)) for n in manifest.sequence_lengths]


def graph_path(manifest: Any, root: Path, batch: int, length: int) -> Path:
    try:
        return Path(manifest.graph_path(root, length, batch))
    except TypeError:  # format 1 API: one batch size
        return Path(manifest.graph_path(root, length))


def time_graphs(model_dir: Path, seconds_each: float) -> list[dict[str, Any]]:
    import torch

    from smneuron.artifact.backends import get_backend
    from smneuron.artifact.manifest import read_manifest

    manifest = read_manifest(model_dir)
    backend = get_backend(manifest.backend)
    rows = []
    for batch, length in graph_shapes(manifest):
        graph = backend.load(graph_path(manifest, model_dir, batch, length))
        # The graph's inputs in the manifest's order (token_type_ids: segment 0).
        names = tuple(getattr(manifest, "input_names", ()) or ("input_ids", "attention_mask"))
        inputs = [
            (torch.zeros if name == "token_type_ids" else torch.ones)(
                (batch, length), dtype=torch.long
            )
            for name in names
        ]
        with torch.no_grad():
            for _ in range(4):  # TorchScript's profiling runs, then the optimised graph
                graph(*inputs)
            times = []
            stop = time.monotonic() + seconds_each
            while time.monotonic() < stop or len(times) < 7:
                began = time.perf_counter()
                graph(*inputs)
                times.append(time.perf_counter() - began)
        times.sort()
        median, best = times[len(times) // 2], times[0]
        # The best run is the limit; the median says how much a shared machine took from it.
        rows.append(
            {
                "batch": batch,
                "bucket": length,
                "forward_ms": 1000 * best,
                "median_ms": 1000 * median,
                "rows_per_s": batch / best,
                "runs": len(times),
            }
        )
    return rows


class _RuntimeSender:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def send(self, body: bytes) -> tuple[int, bytes]:
        response = self.runtime.invoke(body, "application/json", "application/json")
        return int(response.status), bytes(response.body)

    def close(self) -> None:
        pass


def time_handler(
    model_dir: Path,
    levels: list[int],
    max_requests: int,
    seconds: float,
    warm_up_s: float,
    ready_file: Path | None = None,
) -> list[dict[str, Any]]:
    from smneuron.serving.runtime import WorkerRuntime
    from smneuron.serving.settings import ServingSettings

    base = model_dir.parent
    settings = ServingSettings.from_env(
        {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SMNEURON_ACCELERATOR": "cpu"}
    )
    runtime = WorkerRuntime(settings, None)
    runtime.load()
    payloads = bodies(message_mix())
    if ready_file is not None:  # make profile: sampling starts once the model is loaded
        ready_file.write_text(str(os.getpid()))
    results = []
    for level in levels:
        result = closed_loop(
            lambda: _RuntimeSender(runtime),
            payloads,
            level,
            max_requests=max_requests,
            max_seconds=seconds,
            warm_up_s=warm_up_s,
        )
        results.append(result.to_dict())
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="folder named model, with manifest.json")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warm-up", type=float, default=1.5)
    parser.add_argument("--graph-seconds", type=float, default=0.6)
    parser.add_argument("--skip-graphs", action="store_true", help="the handler part only")
    parser.add_argument("--ready-file", type=Path, help="written once the model is loaded")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    figures = {
        "torch_threads": torch.get_num_threads(),
        "graphs": [] if args.skip_graphs else time_graphs(args.artifact, args.graph_seconds),
        "handler": time_handler(
            args.artifact,
            [int(x) for x in args.concurrency.split(",")],
            args.requests,
            args.seconds,
            args.warm_up,
            args.ready_file,
        ),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
