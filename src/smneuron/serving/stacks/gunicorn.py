"""The gunicorn + flask stack: the WSGI app, its error boundary, and the gunicorn launcher."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from smneuron.errors import PayloadTooLarge, ServerError, SmneuronError
from smneuron.serving.handler import Response, error_response
from smneuron.serving.runtime import Readiness, WorkerRuntime, execution_parameters
from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def create_app(
    settings: ServingSettings,
    runtime: WorkerRuntime,
    workers: int,
    readiness: Readiness | None = None,
) -> Any:  # flask.Flask
    """The WSGI app of one worker; ``runtime`` loads the model (in the background)."""
    from flask import Flask, request
    from werkzeug.exceptions import HTTPException

    app = Flask("smneuron")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    def reply(response: Response) -> Any:
        return app.response_class(
            response.body, status=response.status, content_type=response.content_type
        )

    @app.get("/ping")
    def ping() -> Any:
        return reply(runtime.ping(readiness))

    @app.get("/execution-parameters")
    def parameters() -> Any:
        return execution_parameters(settings, workers)

    @app.post("/invocations")
    def invocations() -> Any:
        length = request.content_length
        if length is not None and length > settings.max_payload_bytes:
            raise PayloadTooLarge(_too_large(length, settings))
        body = request.get_data(cache=False)
        return reply(
            runtime.invoke(
                body,
                request.headers.get("Content-Type"),
                request.headers.get("Accept"),
                request.headers.get(CUSTOM_ATTRIBUTES),
            )
        )

    @app.errorhandler(Exception)
    def on_error(err: Exception) -> Any:
        # The boundary for what happens outside the handler (routing, body size, ...).
        if isinstance(err, SmneuronError):
            return reply(error_response(err))
        if isinstance(err, HTTPException):
            if err.code == 413:
                return reply(error_response(PayloadTooLarge(_too_large(None, settings))))
            wrapped = SmneuronError(err.description or err.name, status_code=err.code or 500)
            return reply(error_response(wrapped))
        log.exception("unhandled error in the web layer")
        return reply(error_response(ServerError("internal server error; see the server log")))

    return app


def _too_large(length: int | None, settings: ServingSettings) -> str:
    size = f"{length} bytes" if length is not None else "the request body"
    return f"{size} exceeds the limit of {settings.max_payload_mb} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB)"


def run_gunicorn(settings: ServingSettings, runtime_dir: Path, workers: int, threads: int) -> int:
    """Run gunicorn in this process (its arbiter forwards signals to, and reaps, the workers)."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger

    class QuietPingLogger(Logger):
        """Gunicorn's logs through our root handler; /ping stays out of the access log."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                logger.handlers = []
                logger.propagate = True

        def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
            if environ.get("PATH_INFO") == "/ping":
                return
            self.access_log.info(
                "%s %s %s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                resp.status_code if hasattr(resp, "status_code") else resp.status,
                extra={
                    "status": getattr(resp, "status_code", None),
                    "duration_ms": round(request_time.total_seconds() * 1000, 2),
                    "remote": environ.get("REMOTE_ADDR"),
                },
            )

    class Application(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"0.0.0.0:{settings.port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": threads,
                "timeout": max(settings.model_server_timeout, 30),
                "graceful_timeout": 20,
                "keepalive": 75,  # above the load balancer's idle timeout
                "logger_class": QuietPingLogger,
                "accesslog": "-",
                "proc_name": "smneuron-serve",
                "preload_app": False,
            }
            if "control_socket_disable" in self.cfg.settings:  # gunicorn ≥ 23: one per server
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            runtime = WorkerRuntime(settings, runtime_dir)
            runtime.load_in_background()
            return create_app(settings, runtime, workers, Readiness(runtime_dir, workers))

    Application().run()
    return 0
