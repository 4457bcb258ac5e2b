"""In-process cost of oversized requests: one request of 20,000 short texts, one 6 MB text.

Builds the tiny random-weight classifier the unit tests use (real MiniLM tokenizer), loads the
default handler in this process, and sends each request straight to ``WorkerRuntime.invoke`` (no
HTTP), each case in a fresh subprocess so its peak memory is its own. Prints status, wall time,
and resident-memory growth per case. Settings come from the environment as ``serve`` reads them.

    python benchmarks/handler_limits.py
    SMNEURON_OVERFLOW=reject python benchmarks/handler_limits.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "20000 short texts (JSON)": lambda: (
        json.dumps({"inputs": [f"hello world {i}" for i in range(20_000)]}).encode(),
        "application/json",
    ),
    "one 6 MB text (text/plain)": lambda: (b"spam " * (6 * 1024 * 1024 // 5 - 1), "text/plain"),
}


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_case(name: str, base: Path) -> None:
    import logging

    import torch

    from smneuron.serving.runtime import WorkerRuntime
    from smneuron.serving.settings import ServingSettings

    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    runtime = WorkerRuntime(
        ServingSettings.from_env({**os.environ, "SAGEMAKER_BASE_DIR": str(base)}), None
    )
    runtime.load()
    body, content_type = CASES[name]()
    before = rss_kb("VmRSS")
    started = time.monotonic()
    response = runtime.invoke(body, content_type, None)
    elapsed = time.monotonic() - started
    peak = rss_kb("VmHWM")
    detail = json.loads(response.body)["error"][:90] if response.status != 200 else "ok"
    print(
        f"{name:28s} status={response.status} time={elapsed:6.2f}s "
        f"rss_peak_growth={(peak - before) / 1024:6.0f} MB  {detail}",
        flush=True,
    )


def main() -> None:
    if len(sys.argv) == 3:
        run_case(sys.argv[1], Path(sys.argv[2]))
        return
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from servingfixtures import build_artifact

    with tempfile.TemporaryDirectory() as tmp:
        build_artifact(Path(tmp) / "model", "text-classification")
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}",
            "HF_HUB_OFFLINE": "1",
        }
        for name in CASES:
            subprocess.run([sys.executable, __file__, name, tmp], env=env, check=True)


if __name__ == "__main__":
    main()
