"""The MMS stack: write MMS's config, start its JVM, register the model, run the front.

MMS (multi-model-server, the engine under ``sagemaker-inference``) is started directly with
our own ``config.properties`` so that every limit comes from ``ServingSettings``: request and
response sizes, workers per model, response timeout, JVM arguments. Its backend workers
run ``smneuron.serving.stacks.mms_service:handle``. MMS listens on loopback ports; the public
port is the front's (see ``smneuron.serving.stacks.front``).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from smneuron.accelerator import worker_env
from smneuron.env import ENV
from smneuron.errors import ConfigurationError
from smneuron.serving.runtime import Layout, Readiness, execution_parameters
from smneuron.serving.settings import ServingSettings
from smneuron.serving.stacks.front import FrontConfig, make_server, serve_in_thread, wait_until
from smneuron.serving.stacks.mms_service import FAILURE_FILE

log = logging.getLogger(__name__)

MODEL_NAME = "model"
STUB_DIR = "mms-model"
HANDLER = "smneuron.serving.stacks.mms_service:handle"
# Responses are not bounded by the request limit: batch transform answers up to 100 MB.
MAX_RESPONSE_BYTES = 100 * 1024 * 1024
# MMS's own request limit sits above ours, so that the front's JSON 413 is the one users see.
REQUEST_HEADROOM_BYTES = 1024 * 1024
STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0

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
        "default_response_timeout": str(settings.model_server_timeout),
        "decode_input_request": "false",
        "enable_envvars_config": "false",
        "async_logging": "true",
        "job_queue_size": "1000",
    }


def jvm_command(settings: ServingSettings, runtime_dir: Path, config: Path, log4j: Path) -> list:
    import mms

    home = Path(mms.__file__).resolve().parent.parent
    java_home = os.environ.get(ENV.JAVA_HOME)
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    return [
        java,
        f"-Dmodel_server_home={home}",
        f"-Dlog4j.configurationFile=file://{log4j}",
        # MMS puts its worker sockets in java.io.tmpdir: one directory per server.
        f"-Djava.io.tmpdir={runtime_dir}",
        *shlex.split(settings.vmargs or ""),
        "-cp",
        f".:{home / 'mms' / 'frontend'}/*",
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
            "response_timeout": settings.model_server_timeout,
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


def run_mms(settings: ServingSettings, runtime_dir: Path, layout: Layout) -> int:
    """Start MMS and the front; forward SIGTERM/SIGINT; reap MMS and its workers."""
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
    # Bind the public port first: SageMaker expects it to accept within moments of start.
    front = make_server(
        FrontConfig(
            port=settings.port,
            backend_port=inference_port,
            readiness=Readiness(runtime_dir, layout.workers),
            predict_path=f"/predictions/{MODEL_NAME}",
            max_payload_bytes=settings.max_payload_bytes,
            max_payload_mb=settings.max_payload_mb,
            execution_parameters=execution_parameters(settings, layout.workers),
            failure_file=runtime_dir / FAILURE_FILE,
            timeout_s=settings.model_server_timeout + 5,
        )
    )
    serve_in_thread(front)
    env = worker_env(os.environ, None, layout.torch_threads)
    env[ENV.RUNTIME_DIR] = str(runtime_dir)
    command = jvm_command(settings, runtime_dir, config, log4j)
    log.info("starting MMS: %s", " ".join(command))
    try:
        process = subprocess.Popen(command, env=env, start_new_session=True)
    except FileNotFoundError as err:
        front.shutdown()
        front.server_close()
        raise ConfigurationError(
            "MMS needs Java 17 (java on PATH or JAVA_HOME); install it or serve with "
            "SMNEURON_SERVER=gunicorn"
        ) from err

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def register() -> None:
        if not wait_until(
            lambda: stop.is_set() or _management_up(management_port), STARTUP_TIMEOUT_S
        ):
            log.error("MMS did not open its management port within %.0fs", STARTUP_TIMEOUT_S)
            stop.set()
            return
        if stop.is_set():
            return
        try:
            register_model(settings, layout, management_port)
        except (OSError, urllib.error.URLError) as err:
            body = err.read().decode("utf-8", "replace") if hasattr(err, "read") else ""
            log.error("MMS refused the model: %s %s", err, body)
            (runtime_dir / FAILURE_FILE).write_text(f"MMS refused the model: {err} {body}")

    threading.Thread(target=register, name="smneuron-register", daemon=True).start()
    try:
        while not stop.is_set():
            if process.poll() is not None:
                log.error("MMS exited with status %s", process.returncode)
                break
            stop.wait(0.5)
    finally:
        front.shutdown()
        front.server_close()
        code = _stop_group(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stop.is_set() else (code or 1)


def _stop_group(process: subprocess.Popen) -> int:
    """SIGTERM MMS and its workers (one process group), SIGKILL after a grace period."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("MMS did not stop in %.0fs: killing it", STOP_GRACE_S)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # leftover backend workers
    except (ProcessLookupError, PermissionError):
        pass
    return process.wait()
