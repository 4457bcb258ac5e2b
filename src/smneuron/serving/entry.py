"""The ``serve`` entry point: settings, logging, worker layout, then the chosen server stack."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from smneuron.errors import SmneuronError
from smneuron.serving.runtime import Layout
from smneuron.serving.settings import ServingSettings

log = logging.getLogger("smneuron.serve")


def main(argv: list[str] | None = None) -> int:
    from smneuron.serving.safety import enforce_offline

    enforce_offline()  # before anything imports transformers or huggingface_hub
    try:
        settings = ServingSettings.from_env()
    except SmneuronError as err:
        print(f"serve: {err.message}", file=sys.stderr)
        return 1
    from smneuron.serving.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return serve(settings)
    except SmneuronError as err:
        log.error("serve cannot start: %s", err.message)
        return 1


def serve(settings: ServingSettings) -> int:
    from smneuron.accelerator import detect_backend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.errors import ArtifactError
    from smneuron.serving.layout import plan_layout

    backend = settings.accelerator or detect_backend()
    if backend == "neuron":  # refuse before binding: /ping must never say 200 on a bad driver
        from smneuron.neuron.driver import check_host_driver

        check_host_driver()
    try:
        manifest = read_manifest(settings.paths.model)
    except ArtifactError as err:
        # Keep serving: /ping stays 503 and names the problem; the worker logs it too.
        log.error("artifact problem: %s", err.message)
        manifest = None
    layout = plan_layout(settings, backend, manifest)
    log.info(
        "serve: stack=%s backend=%s workers=%d cores=%s threads=%d port=%d max_payload_mb=%d",
        settings.server,
        layout.backend,
        layout.workers,
        [list(cores) for cores in layout.core_ranges] or None,
        layout.http_threads,
        settings.port,
        settings.max_payload_mb,
    )
    runtime_dir = Path(tempfile.mkdtemp(prefix="smneuron-serve-"))
    log.info("runtime_dir=%s", runtime_dir)
    try:
        layout.write(runtime_dir)
        return run_stack(settings, runtime_dir, layout)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def run_stack(settings: ServingSettings, runtime_dir: Path, layout: Layout) -> int:
    """nginx + the chosen model server, supervised until SIGTERM; the exit status."""
    from smneuron.serving.runtime import execution_parameters
    from smneuron.serving.stacks.supervisor import Supervisor

    if settings.server == "gunicorn":
        from smneuron.serving.stacks.gunicorn import gunicorn_server

        server = gunicorn_server(settings, runtime_dir, layout)
    else:
        from smneuron.serving.stacks.mms import mms_server

        server = mms_server(settings, runtime_dir, layout)
    supervisor = Supervisor(
        settings,
        runtime_dir,
        layout.workers,
        server,
        execution_parameters(settings, layout.workers),
    )
    return supervisor.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
