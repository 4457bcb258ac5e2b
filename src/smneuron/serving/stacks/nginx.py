"""nginx in front of both stacks: its config rendered from settings, the /ping state it serves.

nginx owns the public port. It absorbs slow clients (header, body and send timeouts), buffers
and de-chunks request bodies before the model server sees them, enforces the payload limit,
caps concurrent invocations, answers every error it produces itself with a JSON body, and
serves ``/ping`` from a state file the supervisor rewrites atomically — so a health check
never waits behind an invocation.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from smneuron.errors import ConfigurationError
from smneuron.serving.settings import ServingSettings

NGINX_DIR = "nginx"
STATE_DIR = "state"
READY_FILE = "ready.json"
NOT_READY_FILE = "not-ready.json"
CONF_FILE = "nginx.conf"
HEADER_TIMEOUT_S = 10
BODY_TIMEOUT_S = 30
SEND_TIMEOUT_S = 60
KEEPALIVE_S = 75  # above the load balancer's 60 s idle timeout
DRAIN_S = 20  # graceful stop: in-flight requests get this long, inside SageMaker's 30 s
MAX_CONNECTIONS = 4096
# As root (the image), nginx workers run ahead of the model workers for the CPU, so /ping and
# error answers are not delayed when the workers saturate every core.
WORKER_PRIORITY = -5
MAX_INVOCATIONS = 1024  # concurrent /invocations; more get a 503 with Retry-After

# Every error nginx produces itself: status -> (type, message). The model server's own
# errors pass through untouched (they are already JSON).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "malformed HTTP request"),
    404: (
        "NotFound",
        "no such route; the routes are GET /ping, POST /invocations and GET /execution-parameters",
    ),
    405: ("MethodNotAllowed", "method not allowed on this route"),
    408: ("RequestTimeout", "the client sent the request too slowly"),
    411: ("LengthRequired", "a request body needs Content-Length or chunked encoding"),
    414: ("URITooLong", "request URI too long"),
    494: ("BadRequest", "request header too large"),
    500: ("ServerError", "internal server error in the front; see the server log"),
    501: ("BadRequest", "unsupported Transfer-Encoding (only chunked is accepted)"),
    502: ("ServerError", "the model server did not answer (a worker may have restarted); retry"),
    503: ("NotReady", "the model server is not ready; GET /ping says why"),
    505: ("BadRequest", "HTTP version not supported"),
}
# Shown as 400 (nginx's own codes for these are not statuses a client should see).
AS_400 = (494, 501, 505)
ERROR_PATH = "/_smneuron/error/"  # + status: the internal locations of nginx's own errors


@dataclass(frozen=True)
class Upstream:
    """Where nginx relays ``/invocations``: a unix socket or a loopback port, and the path."""

    address: str  # "unix:/path/to.sock" or "127.0.0.1:PORT"
    path: str
    keepalive: int = 0  # pooled connections; 0 for gunicorn (a killed worker's pool would fail)


def nginx_dir(runtime_dir: Path) -> Path:
    return runtime_dir / NGINX_DIR


def state_dir(runtime_dir: Path) -> Path:
    return nginx_dir(runtime_dir) / STATE_DIR


def _json_literal(status: int, kind: str, message: str) -> str:
    body = json.dumps({"error": message, "type": kind, "code": status})
    return "'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _worker_user() -> str | None:
    """``user`` for nginx workers when the master runs as root (nobody and its own group)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return f"nobody {grp.getgrgid(entry.pw_gid).gr_name}"
    except KeyError:
        return None


def _connection_cap() -> tuple[int, int]:
    """worker_connections and the file limit it needs, within the process's hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if os.geteuid() != 0:
        ceiling = soft if soft != resource.RLIM_INFINITY else ceiling
    connections = max(256, min(MAX_CONNECTIONS, (ceiling - 64) // 2))
    return connections, min(ceiling, connections * 2 + 64)


def _error_location(path: str, status: int, kind: str, message: str, extra: str = "") -> str:
    # A URI location, not a named one: nginx cannot redirect a request whose request line did
    # not parse (empty URI) to a named location, and answers such a 400 with an HTML 500.
    allow = "            add_header Allow $smneuron_allow always;\n" if status == 405 else ""
    return (
        f"        location = {path} {{\n"
        "            internal;\n"
        "            default_type application/json;\n"
        "            add_header Cache-Control no-store always;\n"
        f"{allow}{extra}"
        f"            return {status} {_json_literal(status, kind, message)};\n"
        "        }"
    )


def render_config(
    settings: ServingSettings, runtime_dir: Path, upstream: Upstream, workers: int = 1
) -> str:
    """The whole nginx.conf for this server, derived from ``settings``."""
    base = nginx_dir(runtime_dir)
    state = state_dir(runtime_dir)
    connections, nofile = _connection_cap()
    user = _worker_user()
    timeout = settings.upstream_timeout_s
    text_log = settings.log_format == "text"
    log_format = (
        "'$time_iso8601 INFO nginx.access $request_method $uri $status "
        "bytes_in=$request_length bytes_out=$bytes_sent duration_s=$request_time "
        "upstream_s=$upstream_response_time'"
        if text_log
        else 'escape=json \'{"time": "$time_iso8601", "level": "INFO", '
        '"logger": "nginx.access", "message": "$request_method $uri $status", '
        '"pid": $pid, "method": "$request_method", "path": "$uri", "status": $status, '
        '"bytes_in": $request_length, "bytes_out": $bytes_sent, '
        '"duration_s": $request_time, "upstream_s": "$upstream_response_time", '
        '"remote": "$remote_addr"}\''
    )
    error_pages = "\n".join(
        f"        error_page {code} {'=400 ' if code in AS_400 else ''}{ERROR_PATH}{code};"
        for code in ERRORS
    )
    error_locations = "\n".join(
        _error_location(f"{ERROR_PATH}{code}", 400 if code in AS_400 else code, kind, message)
        for code, (kind, message) in ERRORS.items()
    )
    too_large = (
        f"the request body exceeds the limit of {settings.max_payload_mb} MB "
        "(SAGEMAKER_MAX_PAYLOAD_IN_MB)"
    )
    upstream_timeout = (
        f"the model server did not answer within {timeout} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)"
    )
    busy = f"more than {MAX_INVOCATIONS} concurrent invocations; retry shortly"
    retry_after = "            add_header Retry-After 1 always;\n"
    busy_location = _error_location(f"{ERROR_PATH}busy", 503, "Busy", busy, retry_after)
    keepalive = f"        keepalive {upstream.keepalive};\n" if upstream.keepalive else ""
    return f"""# Rendered by smneuron serve from its settings at every start; do not edit.
{f"user {user};" if user else ""}
{f"worker_priority {WORKER_PRIORITY};" if os.geteuid() == 0 else ""}
daemon off;
master_process on;
worker_processes {max(1, min(workers, 4))};
worker_rlimit_nofile {nofile};
worker_shutdown_timeout {DRAIN_S}s;
pid {base / "nginx.pid"};
error_log stderr warn;

events {{
    worker_connections {connections};
}}

http {{
    client_body_temp_path {base / "client_body"};
    proxy_temp_path {base / "proxy"};
    fastcgi_temp_path {base / "fastcgi"};
    uwsgi_temp_path {base / "uwsgi"};
    scgi_temp_path {base / "scgi"};

    log_format smneuron {log_format};
    access_log /dev/stdout smneuron;
    server_tokens off;
    types {{ }}
    default_type application/json;
    charset off;

    client_header_timeout {HEADER_TIMEOUT_S}s;
    client_body_timeout {BODY_TIMEOUT_S}s;
    send_timeout {SEND_TIMEOUT_S}s;
    keepalive_timeout {KEEPALIVE_S}s;
    keepalive_requests 10000;
    client_max_body_size {settings.max_payload_mb}m;
    client_body_buffer_size 1m;
    client_header_buffer_size 4k;
    large_client_header_buffers 4 16k;
    reset_timedout_connection on;

    limit_conn_zone $server_name zone=invocations:1m;
    limit_conn_status 429;

    map $uri $smneuron_allow {{
        /invocations POST;
        default GET;
    }}

    upstream model_server {{
        server {upstream.address} max_fails=0;
{keepalive}    }}

    server {{
        listen 0.0.0.0:{settings.port} backlog=4096 default_server;
        server_name _;

{error_pages}
        error_page 413 {ERROR_PATH}413;
        error_page 429 =503 {ERROR_PATH}busy;
        error_page 504 {ERROR_PATH}504;

        location = /ping {{
            access_log off;
            if ($request_method != GET) {{ return 405; }}
            root {state};
            etag off;
            if_modified_since off;
            add_header Cache-Control no-store;
            try_files /{READY_FILE} @ping_not_ready;
        }}

        location @ping_not_ready {{
            access_log off;
            error_page 503 /_smneuron/{NOT_READY_FILE};
            return 503;
        }}

        location = /_smneuron/{NOT_READY_FILE} {{
            internal;
            access_log off;
            alias {state / NOT_READY_FILE};
            etag off;
            add_header Cache-Control no-store always;
        }}

        location = /execution-parameters {{
            if ($request_method != GET) {{ return 405; }}
            alias {base / "execution-parameters.json"};
            etag off;
        }}

        location = /invocations {{
            if ($request_method != POST) {{ return 405; }}
            if (!-f {state / READY_FILE}) {{ return 503; }}
            limit_conn invocations {MAX_INVOCATIONS};
            proxy_pass http://model_server{upstream.path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_max_temp_file_size 0;
            proxy_buffer_size 64k;
            proxy_buffers 64 64k;
            proxy_busy_buffers_size 128k;
            proxy_connect_timeout 5s;
            proxy_send_timeout {timeout}s;
            proxy_read_timeout {timeout}s;
            proxy_next_upstream off;
        }}

        location / {{
            return 404;
        }}

{error_locations}
{_error_location(f"{ERROR_PATH}413", 413, "PayloadTooLarge", too_large)}
{_error_location(f"{ERROR_PATH}504", 504, "Timeout", upstream_timeout)}
{busy_location}
    }}
}}
"""


class PingState:
    """The two files nginx serves ``/ping`` from; whichever exists decides the answer.

    ``ready.json`` present: 200 with its body. Absent: 503 with ``not-ready.json`` (the reason).
    Both are replaced by rename, so nginx never reads half a file; ``not-ready.json`` is
    written before ``ready.json`` goes, so a 503 always has its reason.
    """

    def __init__(self, runtime_dir: Path) -> None:
        self.dir = state_dir(runtime_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.current: tuple[bool, str] | None = None

    def _write(self, name: str, data: dict) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, self.dir / name)

    def set(self, ready: bool, reason: str) -> bool:
        """Publish the state; True when it changed."""
        if self.current == (ready, reason):
            return False
        if ready:
            self._write(READY_FILE, {"status": "ready", "workers": reason})
        else:
            self._write(NOT_READY_FILE, {"error": reason, "type": "NotReady", "code": 503})
            (self.dir / READY_FILE).unlink(missing_ok=True)
        self.current = (ready, reason)
        return True


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise ConfigurationError(
            "serve needs nginx (the front of both stacks): install the OS package "
            "(apt-get install nginx) or use the inference image"
        )
    return found


def prepare(
    settings: ServingSettings,
    runtime_dir: Path,
    upstream: Upstream,
    execution_parameters: dict,
    workers: int,
) -> tuple[list[str], PingState]:
    """Write nginx.conf, /execution-parameters and the initial /ping state; the command."""
    base = nginx_dir(runtime_dir)
    base.mkdir(parents=True, exist_ok=True)
    # nginx workers run as nobody when serve is root: they must reach these files.
    runtime_dir.chmod(0o711)
    base.chmod(0o755)
    ping = PingState(runtime_dir)
    ping.set(False, "the model server is starting")
    parameters = base / "execution-parameters.json"
    parameters.write_text(json.dumps(execution_parameters), encoding="utf-8")
    parameters.chmod(0o644)
    conf = base / CONF_FILE
    conf.write_text(render_config(settings, runtime_dir, upstream, workers), encoding="utf-8")
    return [nginx_binary(), "-p", str(base), "-c", str(conf)], ping
