"""Everything ``serve`` reads from the environment, read once into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smneuron.env import ENV, accelerator_override, read
from smneuron.job import Paths


@dataclass(frozen=True)
class ServingSettings:
    """Everything ``serve`` reads from the environment (declared in ``smneuron.env``)."""

    paths: Paths
    server: str = "mms"
    port: int = 8080
    max_payload_mb: int = 6
    workers: int | None = None  # None: derive from the accelerator
    threads_per_worker: int | None = None
    model_server_timeout: int = 60
    max_concurrent_transforms: int | None = None
    batch_strategy: str = "MULTI_RECORD"
    default_accept: str = "application/json"
    max_batch_delay_ms: float = 5.0
    overflow: str = "truncate"
    accelerator: str | None = None  # None: detect
    log_level: str = "INFO"
    log_format: str = "json"
    vmargs: str | None = None
    trust_remote_code: bool = False

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        environ = os.environ if environ is None else environ

        def value(name: str) -> Any:
            return read(name, environ)

        return cls(
            paths=Paths.from_env(environ),
            server=value(ENV.SERVER),
            port=value(ENV.BIND_TO_PORT),
            max_payload_mb=value(ENV.MAX_PAYLOAD_IN_MB),
            workers=value(ENV.MODEL_SERVER_WORKERS),
            threads_per_worker=value(ENV.THREADS_PER_WORKER),
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
        )
