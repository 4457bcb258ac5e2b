"""Everything ``serve`` reads from the environment, read once into a frozen dataclass."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from smneuron.env import ENV, _env_int, accelerator_override
from smneuron.errors import ConfigurationError
from smneuron.job import Paths
from smneuron.typed import parse_bool, parse_float, parse_int

CSV_HEADER_RULES = ("auto", "always", "never")


@dataclass(frozen=True)
class ServingSettings:
    """Everything ``serve`` reads from the environment."""

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
    max_inputs: int = 1000
    max_text_chars: int = 32768
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        environ = os.environ if environ is None else environ
        server = environ.get(ENV.SERVER, "mms").strip().lower() or "mms"
        if server not in ("mms", "gunicorn"):
            raise ConfigurationError(f"{ENV.SERVER}: {server!r} is not one of: mms, gunicorn")
        overflow = environ.get(ENV.OVERFLOW, "truncate").strip().lower() or "truncate"
        if overflow not in ("truncate", "reject"):
            raise ConfigurationError(
                f"{ENV.OVERFLOW}: {overflow!r} is not one of: truncate, reject"
            )
        strategy = environ.get(ENV.BATCH_STRATEGY, "MULTI_RECORD").strip().upper()
        if strategy not in ("MULTI_RECORD", "SINGLE_RECORD"):
            raise ConfigurationError(
                f"{ENV.BATCH_STRATEGY}: {strategy!r} is not one of: MULTI_RECORD, SINGLE_RECORD"
            )
        payload = _env_int(environ, ENV.MAX_PAYLOAD_IN_MB, 6, minimum=1)
        if payload > 100:
            raise ConfigurationError(f"{ENV.MAX_PAYLOAD_IN_MB}: {payload} is above the maximum 100")
        workers = environ.get(ENV.MODEL_SERVER_WORKERS)
        threads = environ.get(ENV.THREADS_PER_WORKER)
        concurrent = environ.get(ENV.MAX_CONCURRENT_TRANSFORMS)
        delay = environ.get(ENV.MAX_BATCH_DELAY_MS)
        csv_header = environ.get(ENV.CSV_HEADER, "auto").strip().lower() or "auto"
        if csv_header not in CSV_HEADER_RULES:
            raise ConfigurationError(
                f"{ENV.CSV_HEADER}: {csv_header!r} is not one of: {', '.join(CSV_HEADER_RULES)}"
            )
        max_inputs = _env_int(environ, ENV.MAX_INPUTS, 1000, minimum=1)
        max_queue = _env_int(environ, ENV.MAX_QUEUE, max(4096, max_inputs), minimum=1)
        if max_queue < max_inputs:
            raise ConfigurationError(
                f"{ENV.MAX_QUEUE}: {max_queue} is below {ENV.MAX_INPUTS} ({max_inputs}); "
                "a request that may be accepted must fit in the queue"
            )
        deadline = environ.get(ENV.REQUEST_DEADLINE_S, "").strip()
        deadline_s = parse_float(deadline, ENV.REQUEST_DEADLINE_S) if deadline else None
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigurationError(f"{ENV.REQUEST_DEADLINE_S}: {deadline_s} must be above 0")
        return cls(
            paths=Paths.from_env(environ),
            server=server,
            port=_env_int(environ, ENV.BIND_TO_PORT, 8080, minimum=1),
            max_payload_mb=payload,
            workers=parse_int(workers, ENV.MODEL_SERVER_WORKERS) if workers else None,
            threads_per_worker=parse_int(threads, ENV.THREADS_PER_WORKER) if threads else None,
            model_server_timeout=_env_int(environ, ENV.MODEL_SERVER_TIMEOUT, 60, minimum=1),
            max_concurrent_transforms=(
                parse_int(concurrent, ENV.MAX_CONCURRENT_TRANSFORMS) if concurrent else None
            ),
            batch_strategy=strategy,
            default_accept=environ.get(ENV.DEFAULT_ACCEPT, "application/json"),
            max_batch_delay_ms=parse_float(delay, ENV.MAX_BATCH_DELAY_MS) if delay else 5.0,
            overflow=overflow,
            accelerator=accelerator_override(environ),
            log_level=environ.get(ENV.LOG_LEVEL, "INFO").upper(),
            log_format=environ.get(ENV.LOG_FORMAT, "json").lower(),
            vmargs=environ.get(ENV.MODEL_SERVER_VMARGS),
            trust_remote_code=parse_bool(
                environ.get(ENV.TRUST_REMOTE_CODE, "false"), ENV.TRUST_REMOTE_CODE
            ),
            max_inputs=max_inputs,
            max_text_chars=_env_int(environ, ENV.MAX_TEXT_CHARS, 32768, minimum=1),
            request_deadline_s=deadline_s,
            max_queue=max_queue,
            csv_header=csv_header,
            install_requirements=parse_bool(
                environ.get(ENV.INSTALL_REQUIREMENTS, "false"), ENV.INSTALL_REQUIREMENTS
            ),
        )
