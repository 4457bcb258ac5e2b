"""The front of the MMS stack: /ping, /execution-parameters and the payload limit, over MMS.

MMS 1.1 answers ``/ping`` with HTTP 200 even while no worker has loaded the model (the body
says "Unhealthy"), has no ``/execution-parameters``, and rejects an oversized body with a
non-JSON 413. This small threaded HTTP server owns the public port, answers those three itself,
and relays ``/invocations`` to MMS on a loopback port.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from smneuron.errors import (
    ClientError,
    NotReady,
    PayloadTooLarge,
    ServerError,
    SmneuronError,
)
from smneuron.serving.runtime import Readiness

log = logging.getLogger(__name__)

FORWARDED = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")


class FrontConfig:
    """What the front needs: limits, where MMS listens, and how to tell why it is not ready."""

    def __init__(
        self,
        *,
        port: int,
        backend_port: int,
        readiness: Readiness,
        predict_path: str,
        max_payload_bytes: int,
        max_payload_mb: int,
        execution_parameters: dict[str, Any],
        failure_file: Path,
        timeout_s: float,
    ) -> None:
        self.port = port
        self.backend_port = backend_port
        self.readiness = readiness
        self.predict_path = predict_path
        self.max_payload_bytes = max_payload_bytes
        self.max_payload_mb = max_payload_mb
        self.execution_parameters = execution_parameters
        self.failure_file = failure_file
        self.timeout_s = timeout_s


def _error_body(err: SmneuronError) -> bytes:
    return json.dumps(err.to_dict()).encode("utf-8")


def _normalize_error(status: int, content_type: str, body: bytes) -> bytes:
    """Keep our handler's JSON errors; wrap MMS's own errors into the same shape."""
    try:
        data = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and "error" in data and "type" in data:
        return body
    message = ""
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("error") or "")
    phrase = http.client.responses.get(status, "error")
    err = SmneuronError(f"model server: {message or phrase}", status_code=status)
    return _error_body(err)


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smneuron"
    config: FrontConfig  # set on the subclass made by make_server

    # ---- plumbing

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logging is done in _send, without /ping

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path != "/ping":
            log.info(
                "%s %s %s",
                self.command,
                self.path,
                status,
                extra={"status": status, "bytes_out": len(body)},
            )

    def _send_error(self, err: SmneuronError, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._send(err.status_code, _error_body(err))

    def _read_body(self) -> bytes:
        limit = self.config.max_payload_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > limit:
                    raise PayloadTooLarge(self._too_large(None))
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw else 0
        except ValueError as err:
            raise ClientError(f"bad Content-Length {raw!r}") from err
        if length > limit:
            raise PayloadTooLarge(self._too_large(length))
        return self.rfile.read(length) if length else b""

    def _too_large(self, length: int | None) -> str:
        size = f"{length} bytes" if length is not None else "the request body"
        return (
            f"{size} exceeds the limit of {self.config.max_payload_mb} MB "
            "(SAGEMAKER_MAX_PAYLOAD_IN_MB)"
        )

    def _backend(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.config.backend_port, timeout=timeout)

    # ---- routes

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._ping()
        elif self.path == "/execution-parameters":
            self._send(200, json.dumps(self.config.execution_parameters).encode("utf-8"))
        else:
            self._send_error(SmneuronError(f"no route GET {self.path}", status_code=404))

    def do_POST(self) -> None:
        if self.path != "/invocations":
            self._send_error(SmneuronError(f"no route POST {self.path}", status_code=404), True)
            return
        ready, status = self.config.readiness.check()
        if not ready:
            message = f"the model is loading ({status}); retry after /ping is 200"
            self._send_error(NotReady(message), close=True)
            return
        try:
            body = self._read_body()
        except SmneuronError as err:
            self._send_error(err, close=True)  # the unread body makes the connection unusable
            return
        self._relay(body)

    def _ping(self) -> None:
        # MMS's own /ping says 200 "Healthy" with no model registered, and its management API
        # lists a worker as READY before our load in handle(None) has finished. Readiness comes
        # from the markers our workers write after load and warm-up instead.
        ready, status = self.config.readiness.check()
        if ready:
            self._send(200, b'{"status": "ready"}')
            return
        reason = "the model is loading"
        if self.config.failure_file.is_file():
            reason = self.config.failure_file.read_text("utf-8", errors="replace")
        self._send_error(NotReady(f"{reason} ({status})"))

    def _relay(self, body: bytes) -> None:
        headers = {name: self.headers[name] for name in FORWARDED if self.headers.get(name)}
        try:
            connection = self._backend(timeout=self.config.timeout_s)
            connection.request("POST", self.config.predict_path, body=body, headers=headers)
            reply = connection.getresponse()
            payload = reply.read()
            content_type = reply.getheader("Content-Type") or "application/json"
            connection.close()
        except ConnectionRefusedError:
            self._send_error(NotReady("the model server is starting; retry after /ping is 200"))
            return
        except (OSError, http.client.HTTPException) as err:
            log.exception("relay to the model server failed")
            self._send_error(ServerError(f"the model server did not answer: {type(err).__name__}"))
            return
        if reply.status >= 400:
            payload = _normalize_error(reply.status, content_type, payload)
            content_type = "application/json"
        self._send(reply.status, payload, content_type)


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog; the default 5 resets bursts of connections


def make_server(config: FrontConfig) -> ThreadingHTTPServer:
    handler = type("BoundFrontHandler", (FrontHandler,), {"config": config})
    try:
        server = FrontServer(("0.0.0.0", config.port), handler)
    except OSError as err:
        raise ServerError(f"cannot listen on port {config.port}: {err}") from err
    return server


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll ``check`` on the monotonic clock until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="smneuron-front", daemon=True)
    thread.start()
    return thread
