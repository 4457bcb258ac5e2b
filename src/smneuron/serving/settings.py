"""Everything ``serve`` reads from the environment, read once into a frozen dataclass."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smneuron.env import ENV, accelerator_override, read
from smneuron.errors import ConfigurationError
from smneuron.job import Paths

CSV_HEADER_RULES = ("auto", "always", "never")
UPSTREAM_MARGIN_S = 5  # the upstream timeout stays this far above the request deadline


@dataclass(frozen=True)
class ServingSettings:
    """Everything ``serve`` reads from the environment (declared in ``smneuron.env``)."""

    paths: Paths
    server: str = "gunicorn"
    port: int = 8080
    max_payload_mb: int = 6
    workers: int | None = None  # None: derive from the accelerator
    threads_per_worker: int | None = None
    torch_threads: int | None = None  # None: the CPUs ÷ workers
    model_server_timeout: int = 60
    max_concurrent_transforms: int | None = None
    batch_strategy: str = "MULTI_RECORD"
    default_accept: str = "application/json"
    max_batch_delay_ms: float = 0.0
    overflow: str = "truncate"
    accelerator: str | None = None  # None: detect
    log_level: str = "INFO"
    log_format: str = "json"
    vmargs: str | None = None
    trust_remote_code: bool = False
    max_inputs: int = 1000
    max_text_chars: int = 32768
    max_image_pixels: int = 40_000_000
    request_deadline_s: float | None = None  # None: 0.9 x model_server_timeout
    max_queue: int = 4096
    csv_header: str = "auto"
    install_requirements: bool = False

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

    @property
    def deadline_s(self) -> float:
        """Per-request deadline in the batcher: answered (504) before the front's timeout."""
        if self.request_deadline_s is not None:
            return self.request_deadline_s
        return 0.9 * self.model_server_timeout

    @property
    def upstream_timeout_s(self) -> int:
        """nginx's upstream timeout and MMS's response timeout: ``SAGEMAKER_MODEL_SERVER_TIMEOUT``,
        raised when needed to stay ``UPSTREAM_MARGIN_S`` above the request deadline, so that the
        worker's own 504 JSON (which names the deadline) is the one the client gets."""
        return max(self.model_server_timeout, math.ceil(self.deadline_s) + UPSTREAM_MARGIN_S)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        environ = os.environ if environ is None else environ

        def value(name: str) -> Any:
            return read(name, environ)

        max_inputs = value(ENV.MAX_INPUTS)
        max_queue = value(ENV.MAX_QUEUE)
        max_queue = max(4096, max_inputs) if max_queue is None else max_queue
        if max_queue < max_inputs:
            raise ConfigurationError(
                f"{ENV.MAX_QUEUE}: {max_queue} is below {ENV.MAX_INPUTS} ({max_inputs}); "
                "a request that may be accepted must fit in the queue"
            )
        return cls(
            paths=Paths.from_env(environ),
            server=value(ENV.SERVER),
            port=value(ENV.BIND_TO_PORT),
            max_payload_mb=value(ENV.MAX_PAYLOAD_IN_MB),
            workers=value(ENV.MODEL_SERVER_WORKERS),
            threads_per_worker=value(ENV.THREADS_PER_WORKER),
            torch_threads=value(ENV.TORCH_THREADS),
            model_server_timeout=value(ENV.MODEL_SERVER_TIMEOUT),
            max_concurrent_transforms=value(ENV.MAX_CONCURRENT_TRANSFORMS),
            batch_strategy=value(ENV.BATCH_STRATEGY),
            default_accept=value(ENV.DEFAULT_ACCEPT),
            max_batch_delay_ms=value(ENV.MAX_BATCH_DELAY_MS),
            overflow=value(ENV.OVERFLOW),
            accelerator=accelerator_override(environ),
            log_level=value(ENV.LOG_LEVEL).upper(),
            log_format=value(ENV.LOG_FORMAT),
            vmargs=value(ENV.MODEL_SERVER_VMARGS),
            trust_remote_code=value(ENV.TRUST_REMOTE_CODE),
            max_inputs=max_inputs,
            max_text_chars=value(ENV.MAX_TEXT_CHARS),
            max_image_pixels=value(ENV.MAX_IMAGE_PIXELS),
            request_deadline_s=value(ENV.REQUEST_DEADLINE_S),
            max_queue=max_queue,
            csv_header=value(ENV.CSV_HEADER),
            install_requirements=value(ENV.INSTALL_MODEL_REQUIREMENTS),
        )
