"""The docker side of `make bench`: the baseline image, serving containers, their figures.

- ``build_toolkit_image``: the Hugging Face toolkit image (benchmarks/toolkit/Dockerfile) from
  the same Debian base and host-side CPU wheelhouse as our images, plus the toolkit's own wheel
  (fetched once into build/wheelhouse/toolkit with ``pip download --no-deps``).
- ``Served``: one container of an image with the model mounted at /opt/ml/model, as SageMaker
  runs it (``docker run IMAGE serve``), on a free 127.0.0.1 port; it measures the cold start
  (docker run -> first /ping 200 -> first successful answer), then the load levels, the batch
  runs from our servers' invocation logs, and the container's memory after load.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smneuron.tools.http import free_port, probe

log = logging.getLogger(__name__)

TOOLKIT_DIR = Path(__file__).resolve().parent / "toolkit"
TOOLKIT_TAG = "smneuron-bench-hf-toolkit:2.6.0-cpu"


def _link_tree(source: Path, dest: Path) -> None:
    for item in source.iterdir():
        if item.name.startswith(".") or not item.is_file():
            continue
        try:
            os.link(item, dest / item.name)
        except OSError:  # another filesystem
            shutil.copy2(item, dest / item.name)


def toolkit_wheel(root: Path) -> Path:
    """The toolkit's wheel (pure Python), downloaded once into build/wheelhouse/toolkit."""
    folder = root / "build" / "wheelhouse" / "toolkit"
    found = sorted(folder.glob("sagemaker_huggingface_inference_toolkit-*.whl"))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
        + ["-r", str(TOOLKIT_DIR / "toolkit.txt")],
        capture_output=True,
        text=True,
        check=False,
    )
    found = sorted(folder.glob("sagemaker_huggingface_inference_toolkit-*.whl"))
    if done.returncode != 0 or not found:
        raise RuntimeError(f"pip download of the toolkit failed:\n{done.stderr[-2000:]}")
    return found[-1]


def stage_toolkit_context(root: Path) -> Path:
    """build/context/toolkit: the CPU wheelhouse (hard links), the toolkit wheel, the files."""
    from smneuron.tools.build.wheelhouse import build_wheelhouse

    wheelhouse = build_wheelhouse("cpu", root)
    context = root / "build" / "context" / "toolkit"
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheelhouse").mkdir(parents=True)
    _link_tree(wheelhouse, context / "wheelhouse")
    wheel = toolkit_wheel(root)
    shutil.copy2(wheel, context / "wheelhouse" / wheel.name)
    for name in ("Dockerfile", "requirements.txt", "toolkit.txt", "entrypoint.py"):
        shutil.copy2(TOOLKIT_DIR / name, context / name)
    return context


def build_toolkit_image(root: Path) -> dict[str, Any]:
    """Build (layers cached) the baseline image; its tag, size and build seconds."""
    from smneuron.tools.build.images import base_image, docker_client

    started = time.monotonic()
    base = base_image(root, "cpu", "inference", "us-east-1")
    context = stage_toolkit_context(root)
    client = docker_client()
    stream = client.api.build(
        path=str(context), tag=TOOLKIT_TAG, buildargs={"BASE_IMAGE": base}, rm=True, decode=True
    )
    for chunk in stream:
        if "error" in chunk:
            raise RuntimeError(f"docker build of {TOOLKIT_TAG} failed: {chunk['error'].strip()}")
        text = chunk.get("stream", "").rstrip()
        if text.startswith("Step "):
            log.info("%s", text)
    image = client.images.get(TOOLKIT_TAG)
    return {
        "tag": TOOLKIT_TAG,
        "size_bytes": int(image.attrs["Size"]),
        "build_s": time.monotonic() - started,
    }


def build_our_image(root: Path) -> dict[str, Any]:
    """`make images` for the inference image (cached layers); its tag and size."""
    from smneuron.tools.build.images import build_images

    started = time.monotonic()
    (result,) = build_images("cpu", images=("inference",), root=root)
    return {
        "tag": result.tags[0],
        "size_bytes": result.size_bytes,
        "build_s": time.monotonic() - started,
    }


def image_size(tag: str) -> int:
    from smneuron.tools.build.images import docker_client

    return int(docker_client().images.get(tag).attrs["Size"])


def post_once(port: int, body: bytes, timeout_s: float = 60.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(
            "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
        )
        reply = conn.getresponse()
        reply.read()
        return reply.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


TIMINGS = ("tokenize_ms", "queue_ms", "forward_ms", "total_ms")


def batch_runs(lines: list[str]) -> dict[str, Any]:
    """Batch figures from our invocation log lines (JSON): runs, rows, mean rows per run.

    Each invocation logs ``batch_sizes``: per item, the real items of the run it was in, so a
    run of ``k`` rows appears ``k`` times and contributes ``1/k`` per appearance. The mean of
    each stage timing the lines carry (``TIMINGS``) comes along: where a request's time goes.
    """
    sizes: list[int] = []
    timings: dict[str, list[float]] = {key: [] for key in TIMINGS}
    for line in lines:
        start = line.find("{")
        if start < 0 or "batch_sizes" not in line:
            continue
        try:
            record = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        sizes.extend(int(x) for x in record.get("batch_sizes") or [] if int(x) > 0)
        for key in TIMINGS:
            if isinstance(record.get(key), int | float):
                timings[key].append(float(record[key]))
    means = {f"mean_{k}": sum(v) / len(v) for k, v in timings.items() if v}
    if not sizes:
        return {"rows": 0, "runs": 0.0, "mean_batch": None, **means}
    runs = sum(1.0 / k for k in sizes)
    return {"rows": len(sizes), "runs": round(runs, 1), "mean_batch": len(sizes) / runs, **means}


@dataclass
class Served:
    """One serving container on 127.0.0.1:``port``; use as a context manager (removed after)."""

    name: str
    image: str
    model_dir: Path
    environment: dict[str, str]
    port: int = field(default_factory=free_port)
    container: Any = None
    started_at: float = 0.0

    def __enter__(self) -> Served:
        from smneuron.tools.build.images import docker_client

        client = docker_client()
        self.started_at = time.monotonic()
        self.container = client.containers.run(
            self.image,
            ["serve"],
            detach=True,
            ports={"8080/tcp": ("127.0.0.1", self.port)},
            volumes={str(self.model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
            environment=self.environment,
            labels={"smneuron.bench": self.name},
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            try:
                self.container.stop(timeout=10)
            finally:
                self.container.remove(force=True)

    def running(self) -> bool:
        self.container.reload()
        return self.container.status in ("created", "running")

    def cold_start(self, body: bytes, timeout_s: float) -> dict[str, float | int | None]:
        """Seconds from docker run to the first /ping 200 and to the first 200 answer.

        ``answers_refused_after_ping`` counts the answers other than 200 after /ping said 200:
        more than 0 means /ping was 200 before an answer could be given.
        """
        deadline = self.started_at + timeout_s
        ping_s = answer_s = None
        refused = 0
        url = f"http://127.0.0.1:{self.port}/ping"
        while time.monotonic() < deadline and self.running():
            if ping_s is None:
                if probe(url, 2.0) == 200:
                    ping_s = time.monotonic() - self.started_at
                else:
                    time.sleep(0.1)
                    continue
            if post_once(self.port, body, 30.0) == 200:
                answer_s = time.monotonic() - self.started_at
                break
            refused += 1
            time.sleep(0.1)
        if answer_s is None:
            tail = self.logs()[-30:]
            raise RuntimeError(
                f"{self.name}: no answer within {timeout_s:.0f}s (ping at {ping_s}); log tail:\n"
                + "\n".join(tail)
            )
        return {"ping_s": ping_s, "answer_s": answer_s, "answers_refused_after_ping": refused}

    def logs(self) -> list[str]:
        return self.container.logs().decode(errors="replace").splitlines()

    def memory(self) -> dict[str, int]:
        """The container's memory now: cgroup usage, and less the page cache as docker stats."""
        stats = self.container.stats(stream=False)
        memory = stats.get("memory_stats") or {}
        usage = int(memory.get("usage") or 0)
        inactive = int((memory.get("stats") or {}).get("inactive_file") or 0)
        return {"usage_bytes": usage, "docker_stats_bytes": max(usage - inactive, 0)}
