"""The gunicorn + flask stack: the WSGI app, the model-loading worker, the gunicorn child.

``serve`` starts ``python -m smneuron.serving.stacks.gunicorn RUNTIME_DIR`` as its child; that
process is the gunicorn arbiter, listening on a unix socket behind nginx. Each worker loads the
model in a background thread and accepts connections only once it is loaded and warmed up, so
a worker being replaced never answers for the pool; readiness lives in the supervisor, read
from the ready markers workers write (the arbiter withdraws a dead worker's marker).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from smneuron.errors import PayloadTooLarge, ServerError, SmneuronError
from smneuron.serving.handler import Response, error_response
from smneuron.serving.runtime import Layout, WorkerRuntime, clear_ready
from smneuron.serving.settings import ServingSettings
from smneuron.serving.stacks.nginx import Upstream
from smneuron.serving.stacks.supervisor import ModelServer

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
SOCKET = "gunicorn.sock"
GRACEFUL_S = 6  # in-flight requests were already drained by nginx


def create_app(settings: ServingSettings, runtime: WorkerRuntime) -> Any:  # flask.Flask
    """The WSGI app of one worker (/invocations; nginx answers the other routes)."""
    from flask import Flask, request
    from werkzeug.exceptions import HTTPException

    app = Flask("smneuron")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    def reply(response: Response) -> Any:
        # A stream goes out chunk by chunk (chunked transfer; X-Accel-Buffering: no tells
        # nginx not to buffer it); werkzeug closes it when the client goes away.
        body = response.body if response.stream is None else response.stream
        answer = app.response_class(
            body, status=response.status, content_type=response.content_type
        )
        for name, value in response.headers:  # e.g. Retry-After on a 503 (queue full)
            answer.headers[name] = value
        return answer

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


def gunicorn_server(settings: ServingSettings, runtime_dir: Path, layout: Layout) -> ModelServer:
    """The child ``serve`` supervises for this stack."""
    from smneuron.accelerator import worker_env
    from smneuron.serving.safety import offline_environ

    return ModelServer(
        name="gunicorn",
        command=[sys.executable, "-m", "smneuron.serving.stacks.gunicorn", str(runtime_dir)],
        env=worker_env(offline_environ(), None, layout.torch_threads),
        upstream=Upstream(f"unix:{runtime_dir / SOCKET}", "/invocations"),
    )


def run_gunicorn(settings: ServingSettings, runtime_dir: Path) -> int:
    """The gunicorn arbiter, in this process (the supervisor's child)."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.glogging import Logger
    from gunicorn.workers.gthread import ThreadWorker

    layout = Layout.read(runtime_dir)

    class RootLogger(Logger):
        """gunicorn's error log through our root handler; nginx writes the access log."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                logger.handlers = []
                logger.propagate = True

        def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
            pass

    class ModelWorker(ThreadWorker):
        """A gthread worker that accepts connections only once its model is ready.

        Until then it keeps telling the arbiter it is alive (a Neuron load takes minutes, far
        past gunicorn's timeout). A worker whose load failed stays up without accepting, so
        the failure stays visible on /ping instead of a restart loop. Once serving, a watchdog
        follows the runtime's health: a dead batcher or a request stuck past its deadline
        withdraws the ready marker and ends the process, and the arbiter starts a fresh one.
        """

        def run(self) -> None:
            self.app.runtime.watch()
            # Until loaded (and forever after a failed load): heartbeat only, accept nothing.
            while self.alive and self.app.runtime.state != "ready":
                self.notify()
                if self.ppid != os.getppid():
                    return  # the arbiter is gone
                if self.app.loaded.wait(1.0) and self.app.runtime.state != "ready":
                    time.sleep(1.0)  # the load failed: stay, without spinning
            if self.alive:
                super().run()

    def child_exit(server: Any, worker: Any) -> None:
        # Runs in the arbiter: a dead worker's marker goes at once, not at the next probe.
        clear_ready(runtime_dir, pid=worker.pid)

    class Application(BaseApplication):
        runtime: WorkerRuntime
        loaded: Any

        def load_config(self) -> None:
            options = {
                "bind": f"unix:{runtime_dir / SOCKET}",
                "umask": 0o111,  # nginx workers (nobody) must connect to the socket
                "workers": layout.workers,
                "worker_class": ModelWorker,
                "threads": layout.http_threads,
                "timeout": max(settings.model_server_timeout, 30),
                "graceful_timeout": GRACEFUL_S,
                "keepalive": 5,
                "backlog": 2048,
                "logger_class": RootLogger,
                "accesslog": None,
                "proc_name": "smneuron-gunicorn",
                "preload_app": False,
                "child_exit": child_exit,
            }
            if "control_socket_disable" in self.cfg.settings:  # gunicorn ≥ 23: one per server
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            self.runtime = WorkerRuntime(settings, runtime_dir)
            self.loaded = self.runtime.load_in_background()
            return create_app(settings, self.runtime)

    Application().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    from smneuron.serving.logs import configure_logging

    args = sys.argv[1:] if argv is None else argv
    settings = ServingSettings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    sys.argv = sys.argv[:1]  # gunicorn parses the command line too
    return run_gunicorn(settings, Path(args[0]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
