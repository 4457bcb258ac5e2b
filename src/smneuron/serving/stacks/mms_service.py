"""The MMS backend-worker entry: ``handle(data, context)``, called with ``data=None`` at load.

MMS counts a worker as running only once this load call returns, so the model is loaded and
warmed up synchronously here. A function entry point (not a service class) is used on purpose:
MMS logs and swallows exceptions from a class's ``initialize``, which would leave a worker
without a model counted as healthy.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from smneuron.env import ENV
from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"

_runtime: Any = None
_pool: ThreadPoolExecutor | None = None


def _header(context: Any, index: int, name: str) -> str | None:
    try:
        headers = context.request_processor[index].get_request_properties()
    except (AttributeError, IndexError, TypeError):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return value.decode("utf-8") if isinstance(value, bytes) else value
    return None


def _load() -> None:
    global _runtime, _pool
    from smneuron.serving.logs import configure_logging
    from smneuron.serving.runtime import WorkerRuntime

    settings = ServingSettings.from_env()
    # This backend process is started by MMS, not by `serve`: it is its own entry point.
    configure_logging(settings.log_level, settings.log_format)
    runtime_dir = Path(os.environ[ENV.RUNTIME_DIR]) if os.environ.get(ENV.RUNTIME_DIR) else None
    runtime = WorkerRuntime(settings, runtime_dir)
    runtime.load()  # a failure is kept in the runtime dir for /ping, and fails this worker
    # Unhealthy later (dead batcher, a request stuck past its deadline): the marker goes and
    # this backend process exits; MMS sees its worker die and starts a fresh one.
    runtime.watch()
    batch = getattr(getattr(runtime.handler, "model", None), "manifest", None)
    _pool = ThreadPoolExecutor(max_workers=max(1, batch.batch_size if batch else 1))
    _runtime = runtime


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """Load on ``data=None``; else answer each request of MMS's batch (concurrently, so that
    their items meet in the dynamic batcher)."""
    if data is None:
        _load()
        return None

    def one(index: int) -> Any:
        request = data[index]
        body = request.get("body")
        if body is None:
            body = request.get("data") or b""
        if isinstance(body, bytearray | memoryview):
            body = bytes(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        return _runtime.invoke(
            body,
            _header(context, index, "content-type"),
            _header(context, index, "accept"),
            _header(context, index, CUSTOM_ATTRIBUTES),
        )

    if _pool is not None and len(data) > 1:
        responses = list(_pool.map(one, range(len(data))))
    else:
        responses = [one(index) for index in range(len(data))]
    for index, response in enumerate(responses):
        context.set_response_content_type(index, response.content_type)
        for name, value in response.headers:  # e.g. Retry-After on a 503 (queue full)
            context.set_response_header(index, name, value)
        if response.status != 200:
            context.set_response_status(code=response.status, phrase="error", idx=index)
    # MMS answers with whole bodies: a token stream is sent once it has ended.
    return [
        response.body if response.stream is None else b"".join(response.stream)
        for response in responses
    ]
