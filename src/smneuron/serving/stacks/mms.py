"""The MMS stack: MMS's config, its JVM as the supervisor's child, the model registration.

MMS (multi-model-server, the engine under ``sagemaker-inference``) is started directly with
our own ``config.properties`` so that every limit comes from ``ServingSettings``: request and
response sizes, workers per model, response timeout, JVM arguments. Its backend workers
run ``smneuron.serving.stacks.mms_service:handle``. MMS listens on loopback ports only; nginx
owns the public port (see ``smneuron.serving.stacks.nginx``).
"""

from __future__ import annotations

import json
import logging
import shlex
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from smneuron.accelerator import worker_env
from smneuron.env import ENV
from smneuron.errors import ConfigurationError, ServerError
from smneuron.serving.runtime import Layout, record_failure
from smneuron.serving.settings import ServingSettings
from smneuron.serving.stacks.mms_decoder import classes_dir, java_tool
from smneuron.serving.stacks.nginx import Upstream
from smneuron.serving.stacks.supervisor import ModelServer

log = logging.getLogger(__name__)

MODEL_NAME = "model"
STUB_DIR = "mms-model"
HANDLER = "smneuron.serving.stacks.mms_service:handle"
# Responses are not bounded by the request limit: batch transform answers up to 100 MB.
MAX_RESPONSE_BYTES = 100 * 1024 * 1024
# MMS's own request limit sits above ours, so that nginx's JSON 413 is the one users see.
REQUEST_HEADROOM_BYTES = 1024 * 1024
STARTUP_TIMEOUT_S = 120.0

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="{&quot;time&quot;: &quot;%d{yyyy-MM-dd'T'HH:mm:ss.SSS}&quot;, \
&quot;level&quot;: &quot;%p&quot;, &quot;logger&quot;: &quot;mms.%c{1}&quot;, \
&quot;message&quot;: &quot;%enc{%m}{JSON}&quot;}%n"/>
    </Console>
    <Console name="RAW" target="SYSTEM_OUT">
      <PatternLayout pattern="%m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="info" additivity="false"><AppenderRef ref="RAW"/></Logger>
    <!-- Backend workers' stdout (already our JSON lines) is relayed by this logger. -->
    <Logger name="com.amazonaws.ml.mms.wlm.WorkerLifeCycle" level="info" additivity="false">
      <AppenderRef ref="RAW"/>
    </Logger>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="MMS_METRICS" level="off"/>
    <Logger name="com.amazonaws.ml.mms" level="{level}" additivity="false">
      <AppenderRef ref="STDOUT"/>
    </Logger>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def free_port() -> int:
    """A free loopback port below 32767 (MMS refuses higher port numbers)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32766)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ConfigurationError("no free loopback port below 32767 for MMS")


def mms_properties(
    settings: ServingSettings,
    layout: Layout,
    inference_port: int,
    management_port: int,
    model_store: Path,
) -> dict[str, str]:
    """MMS ``config.properties`` entries, all derived from settings."""
    return {
        "inference_address": f"http://127.0.0.1:{inference_port}",
        "management_address": f"http://127.0.0.1:{management_port}",
        "model_store": str(model_store),
        "default_workers_per_model": str(layout.workers),
        "max_request_size": str(settings.max_payload_bytes + REQUEST_HEADROOM_BYTES),
        "max_response_size": str(max(MAX_RESPONSE_BYTES, settings.max_payload_bytes)),
        "default_response_timeout": str(settings.upstream_timeout_s),
        "decode_input_request": "false",
        "enable_envvars_config": "false",
        "async_logging": "true",
        "job_queue_size": "1000",
    }


def jvm_command(settings: ServingSettings, runtime_dir: Path, config: Path, log4j: Path) -> list:
    import mms

    home = Path(mms.__file__).resolve().parent.parent
    java = java_tool("java") or "java"
    class_path = f".:{home / 'mms' / 'frontend'}/*"
    decoder = classes_dir()  # our reply decoder first: the JVM loads it instead of the jar's
    if decoder is not None:
        class_path = f"{decoder}:{class_path}"
        log.info("MMS runs with smneuron's reply decoder from %s", decoder)
    return [
        java,
        f"-Dmodel_server_home={home}",
        f"-Dlog4j.configurationFile=file://{log4j}",
        # MMS puts its worker sockets in java.io.tmpdir: one directory per server.
        f"-Djava.io.tmpdir={runtime_dir}",
        *shlex.split(settings.vmargs or ""),
        "-cp",
        class_path,
        "com.amazonaws.ml.mms.ModelServer",
        "--python",
        sys.executable,
        "-f",
        str(config),
        "-s",
        str(runtime_dir),
    ]


def write_stub_model(runtime_dir: Path) -> Path:
    """The directory MMS is told to load: a MAR manifest naming our handler, nothing else.

    MMS must not be pointed at the artifact itself: without ``MAR-INF/MANIFEST.json`` it
    searches the folder for a file named ``MANIFEST.json`` case-insensitively, finds our
    ``manifest.json``, fails to read it as its legacy format, and may move files around.
    The handler reads the artifact from ``SAGEMAKER_BASE_DIR``/model itself.
    """
    stub = runtime_dir / STUB_DIR
    (stub / "MAR-INF").mkdir(parents=True, exist_ok=True)
    manifest = {
        "specificationVersion": "1.0",
        "implementationVersion": "1.0",
        "runtime": "python",
        "model": {"modelName": MODEL_NAME, "handler": HANDLER},
    }
    (stub / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")
    return stub


def register_model(settings: ServingSettings, layout: Layout, management_port: int) -> None:
    """Register the model with MMS's batching set to the compiled batch size."""
    from smneuron.artifact.manifest import read_manifest
    from smneuron.errors import ArtifactError

    try:
        batch = read_manifest(settings.paths.model).batch_size
    except ArtifactError:
        batch = 1  # the worker will fail to load and say why
    query = urllib.parse.urlencode(
        {
            "url": STUB_DIR,
            "model_name": MODEL_NAME,
            "handler": HANDLER,
            "runtime": "python",
            "batch_size": batch,
            "max_batch_delay": max(1, int(round(settings.max_batch_delay_ms))),
            "initial_workers": layout.workers,
            "synchronous": "false",
            "response_timeout": settings.upstream_timeout_s,
        }
    )
    url = f"http://127.0.0.1:{management_port}/models?{query}"
    request = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        log.info("registered the model with MMS: %s", reply.read().decode("utf-8", "replace"))


def _management_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=1) as reply:
            return reply.status == 200
    except (OSError, urllib.error.URLError):
        return False


def mms_server(settings: ServingSettings, runtime_dir: Path, layout: Layout) -> ModelServer:
    """Write MMS's config and stub model; the child ``serve`` supervises for this stack."""

    if java_tool("java") is None:
        raise ConfigurationError(
            "MMS needs Java 17 (java on PATH or JAVA_HOME); install it or serve with "
            "SMNEURON_SERVER=gunicorn"
        )
    inference_port, management_port = free_port(), free_port()
    config = runtime_dir / "config.properties"
    config.write_text(
        "".join(
            f"{key}={value}\n"
            for key, value in mms_properties(
                settings, layout, inference_port, management_port, runtime_dir
            ).items()
        ),
        encoding="utf-8",
    )
    write_stub_model(runtime_dir)
    log4j = runtime_dir / "log4j2.xml"
    level = "debug" if settings.log_level == "DEBUG" else "info"
    log4j.write_text(LOG4J2.replace("{level}", level), encoding="utf-8")
    from smneuron.serving.safety import offline_environ

    env = worker_env(offline_environ(), None, layout.torch_threads)
    env[ENV.RUNTIME_DIR] = str(runtime_dir)

    def register(stop: threading.Event) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _management_up(management_port):
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"MMS did not open its management port within {STARTUP_TIMEOUT_S:.0f}s"
                )
            stop.wait(0.5)
        try:
            register_model(settings, layout, management_port)
        except (OSError, urllib.error.URLError) as err:
            body = err.read().decode("utf-8", "replace") if hasattr(err, "read") else ""
            record_failure(runtime_dir, f"MMS refused the model: {err} {body}".strip())
            raise ServerError(f"MMS refused the model: {err} {body}") from err

    return ModelServer(
        name="mms",
        command=jvm_command(settings, runtime_dir, config, log4j),
        env=env,
        upstream=Upstream(f"127.0.0.1:{inference_port}", f"/predictions/{MODEL_NAME}", 32),
        after_start=register,
    )


