"""`smneuron local`: SageMaker Python SDK (2.x) local mode with our images, fully offline.

Local mode needs no AWS account when three things hold, all arranged by ``session``: dummy
credentials and a region (an explicit boto3 session, unless the environment has its own),
telemetry opted out in the SDK config it is given (otherwise the SDK calls STS), and
``file://`` inputs and outputs. This process's ``os.environ`` is never edited. ``deploy`` and
``transform`` never use the SDK's own waits (a fixed 30 s sleep, a 120 s health limit,
CloudWatch): they return at once and this module polls the container itself, with a limit the
caller sets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from smneuron.errors import ConfigurationError, SmneuronError
from smneuron.tools.http import NotReadyError, wait_for_ping

log = logging.getLogger(__name__)

DUMMY_ROLE = "arn:aws:iam::111111111111:role/SmneuronLocalMode"
OFFLINE_DEFAULTS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
SDK_DEFAULTS = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


class LocalModeError(SmneuronError):
    """A local-mode job or endpoint failed; the message carries the container's log tail."""


def offline_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Credentials and region: the environment's own where set, else dummy ones."""
    environ = os.environ if environ is None else environ
    return {key: environ.get(key) or value for key, value in OFFLINE_DEFAULTS.items()}


def offline_env(workdir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The same as environment variables, for a child process's environment (the SDK in
    another process reads its telemetry opt-out from the config file written here)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "sagemaker-config.yaml"
    config.write_text(json.dumps(SDK_DEFAULTS), encoding="utf-8")  # JSON is YAML too
    return {**offline_values(environ), "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config)}


def session(
    port: int = 8080,
    container_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
):
    """A LocalSession that stays on this machine, whatever ``os.environ`` holds."""
    import boto3
    from sagemaker.local import LocalSession

    values = offline_values(environ)
    boto = boto3.Session(
        aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=_own_session_token(os.environ if environ is None else environ),
        region_name=values["AWS_DEFAULT_REGION"],
    )
    local = LocalSession(boto_session=boto, sagemaker_config=SDK_DEFAULTS)
    config: dict[str, object] = {"local_code": True, "serving_port": port}
    if container_root is not None:
        container_root.mkdir(parents=True, exist_ok=True)
        config["container_root"] = str(container_root)
    local.config = {"local": config}
    return local


def _own_session_token(environ: Mapping[str, str]) -> str | None:
    """The environment's session token, only with the environment's own access key."""
    return environ.get("AWS_SESSION_TOKEN") if environ.get("AWS_ACCESS_KEY_ID") else None


def file_uri(path: str | Path) -> str:
    text = str(path)
    return text if "://" in text else "file://" + str(Path(text).resolve())


def train(
    image: str,
    channels: Mapping[str, str | Path],
    output: Path,
    *,
    hyperparameters: Mapping[str, object] | None = None,
    instance_count: int = 1,
    environment: Mapping[str, str] | None = None,
    sagemaker_session=None,
    entry_point: str | None = None,
    source_dir: str | Path | None = None,
) -> str:
    """Run a local training job; return the model.tar.gz URI (``file://``).

    With ``entry_point`` (and ``source_dir``, the folder holding it) the job is in script
    mode: the SDK mounts the folder at /opt/ml/code and names the script in the
    ``sagemaker_program`` hyperparameter.
    """
    from sagemaker.estimator import Estimator

    output.mkdir(parents=True, exist_ok=True)
    source = str(Path(source_dir or ".").resolve()) if entry_point else None
    # Script mode: the SDK JSON-encodes each value itself (SM_HPS keeps numbers numbers).
    values: dict[str, Any] = {
        k: v if entry_point else str(v) for k, v in (hyperparameters or {}).items()
    }
    estimator = Estimator(
        entry_point=entry_point,
        source_dir=source,
        image_uri=image,
        role=DUMMY_ROLE,
        instance_count=instance_count,
        instance_type="local",
        output_path=file_uri(output),
        hyperparameters=values,
        environment=dict(environment or {}),
        sagemaker_session=sagemaker_session or session(),
    )
    try:
        estimator.fit({name: file_uri(path) for name, path in channels.items()}, logs=True)
    except Exception as err:  # the SDK raises RuntimeError/ValueError with little detail
        failure = _failure_reason(output)
        raise LocalModeError(f"local training failed: {err}{failure}") from err
    return estimator.model_data


def _failure_reason(output: Path) -> str:
    for path in output.rglob("failure"):
        return f"\n{path.read_text(encoding='utf-8', errors='replace')[-2000:]}"
    return ""


def _model(image: str, model_data: str, environment: Mapping[str, str] | None, local):
    """A SageMaker ``Model`` of our serving image, bound to the local session."""
    from sagemaker.model import Model

    return Model(
        image_uri=image,
        model_data=model_data,
        role=DUMMY_ROLE,
        env=dict(environment or {}),
        sagemaker_session=local,
    )


def deploy(
    image: str,
    model_data: str,
    *,
    port: int = 8080,
    environment: Mapping[str, str] | None = None,
    health_limit_s: float = 300,
    sagemaker_session=None,
):
    """Deploy ``model_data`` to a local endpoint; return a JSON predictor once /ping is 200."""
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    local = sagemaker_session or session(port)
    model = _model(image, model_data, environment, local)
    model.deploy(initial_instance_count=1, instance_type="local", wait=False)
    predictor = Predictor(
        model.endpoint_name,
        sagemaker_session=local,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    try:
        seconds = wait_for_ping(f"http://localhost:{port}", health_limit_s)
    except NotReadyError as err:
        delete(predictor)
        raise LocalModeError(
            f"the endpoint on port {port} was not healthy in {health_limit_s:.0f}s ({err.last})"
        ) from err
    log.info("endpoint %s healthy after %.1fs on port %d", model.endpoint_name, seconds, port)
    predictor.model_name = model.name  # type: ignore[attr-defined]  # read by delete()
    return predictor


def delete(predictor) -> None:
    """Stop the endpoint container and forget the endpoint, config and model."""
    model_name = getattr(predictor, "model_name", None)
    predictor.delete_endpoint(delete_endpoint_config=True)
    if model_name:
        predictor.sagemaker_session.sagemaker_client.delete_model(model_name)


def invoke_local(
    local_session,
    endpoint_name: str,
    body: bytes,
    content_type: str = "application/json",
    accept: str = "application/json",
) -> bytes:
    """InvokeEndpoint through the SDK's local sagemaker-runtime client."""
    answer = local_session.sagemaker_runtime_client.invoke_endpoint(
        EndpointName=endpoint_name, Body=body, ContentType=content_type, Accept=accept
    )
    return answer["Body"].read()


def transform(
    image: str,
    model_data: str,
    data: Path,
    output: Path,
    *,
    content_type: str = "text/csv",
    accept: str = "text/csv",
    port: int = 8080,
    environment: Mapping[str, str] | None = None,
    limit_s: float = 600,
    sagemaker_session=None,
) -> list[Path]:
    """Batch transform ``data`` line by line; return the output files once they exist."""
    local = sagemaker_session or session(port)
    model = _model(image, model_data, environment, local)
    model._create_sagemaker_model(instance_type="local")
    transformer = model.transformer(
        instance_count=1,
        instance_type="local",
        output_path=file_uri(output),
        accept=accept,
        strategy="MultiRecord",
        assemble_with="Line",
    )
    output.mkdir(parents=True, exist_ok=True)
    # wait=True would call CloudWatch; the local job runs in a thread of this process.
    transformer.transform(
        file_uri(data), content_type=content_type, split_type="Line", wait=False, logs=False
    )
    inputs = [data] if data.is_file() else sorted(p for p in data.iterdir() if p.is_file())
    expected = [output / (path.name + ".out") for path in inputs]
    deadline = time.monotonic() + limit_s
    job = transformer.latest_transform_job
    while time.monotonic() < deadline:
        status = local.sagemaker_client.describe_transform_job(job.name)["TransformJobStatus"]
        if status == "Completed" and all(path.is_file() for path in expected):
            local.sagemaker_client.delete_model(model.name)
            return expected
        if status == "Failed":
            raise LocalModeError(f"batch transform {job.name} failed")
        time.sleep(1)
    raise LocalModeError(f"batch transform did not finish in {limit_s:.0f}s")


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from smneuron.tools.build.images import image_tag
    from smneuron.tools.local.devices import add_neuron_devices_argument

    sub = parser.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workdir", type=Path, default=Path("build/localmode"))
    common.add_argument("--port", type=int, default=8080, help="host port of the endpoint")
    common.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="container variable"
    )

    t = sub.add_parser("train", parents=[common], help="run a training job")
    t.add_argument("--image", default=image_tag("training", "cpu"))
    t.add_argument("--channel", action="append", required=True, metavar="NAME=PATH")
    t.add_argument("--hyperparameters", default="{}", help="JSON object")
    t.add_argument("--instance-count", type=int, default=1)
    t.add_argument("--entry-point", help="script mode: the training script (in --source-dir)")
    t.add_argument("--source-dir", type=Path, help="script mode: the folder of the script")
    t.add_argument("--output", type=Path, default=Path("build/localmode/output"))
    add_neuron_devices_argument(t)

    d = sub.add_parser("deploy", parents=[common], help="serve a model.tar.gz until Ctrl-C")
    d.add_argument("--image", default=image_tag("inference", "cpu"))
    d.add_argument("--model-data", required=True)
    d.add_argument("--health-timeout", type=float, default=300)
    add_neuron_devices_argument(d)

    i = sub.add_parser("invoke", parents=[common], help="POST a body to the local endpoint")
    i.add_argument("--body", required=True, help="request body text")
    i.add_argument("--content-type", default="application/json")
    i.add_argument("--accept", default="application/json")

    x = sub.add_parser("transform", parents=[common], help="batch transform, one record a line")
    x.add_argument("--image", default=image_tag("inference", "cpu"))
    x.add_argument("--model-data", required=True)
    x.add_argument("--data", type=Path, required=True)
    x.add_argument("--output", type=Path, default=Path("build/localmode/transform"))
    x.add_argument("--content-type", default="text/csv")
    x.add_argument("--accept", default="text/csv")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"{what}: expected NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def _wait_for_ctrl_c(cleanup: Callable[[], object]) -> None:
    """Keep a local endpoint up until Ctrl-C, then tear it down (also on any other exit)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cleanup()


def run(args: argparse.Namespace) -> int:
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # it logs to stdout
    env = _pairs(args.env, "--env")
    if getattr(args, "neuron_devices", None):
        # The SDK cannot pass devices: run the container directly, same /opt/ml layout.
        return _run_with_devices(args, env)
    actions = {"train": _sdk_train, "deploy": _sdk_deploy, "transform": _sdk_transform}
    if args.action == "invoke":
        _invoke(args)
    else:
        actions[args.action](args, env)  # each makes its offline session()
    return 0


def _run_with_devices(args: argparse.Namespace, env: dict[str, str]) -> int:
    """``train`` or ``deploy`` with Neuron devices passed through: docker directly."""
    from smneuron.tools.local import devices as neuron_local
    from smneuron.tools.local import docker as localrun

    devices = neuron_local.docker_device_args(args.neuron_devices)
    if args.action == "train":
        if args.instance_count != 1:
            raise ConfigurationError("--neuron-devices runs one host: --instance-count 1")
        if args.entry_point:
            raise ConfigurationError("--entry-point runs through the SDK: no --neuron-devices")
        job = args.output.resolve() / time.strftime("smneuron-local-%Y%m%d-%H%M%S")
        spec = localrun.training_run_spec(
            args.image,
            _pairs(args.channel, "--channel"),
            json.loads(args.hyperparameters),
            job,
            devices,
            env,
        )
        print(localrun.run_training(spec))
        return 0
    spec = localrun.serving_run_spec(
        args.image, args.model_data, args.port, args.workdir.resolve() / "serve", devices, env
    )
    container = localrun.run_serving(spec, args.health_timeout)
    print(f"{args.image} with {', '.join(devices.devices)} on http://localhost:{args.port}")
    _wait_for_ctrl_c(lambda: container.remove(force=True))
    return 0


def _sdk_train(args: argparse.Namespace, env: dict[str, str]) -> None:
    uri = train(
        args.image,
        _pairs(args.channel, "--channel"),
        args.output.resolve(),
        hyperparameters=json.loads(args.hyperparameters),
        instance_count=args.instance_count,
        environment=env,
        entry_point=args.entry_point,
        source_dir=args.source_dir,
    )
    print(uri)


def _sdk_deploy(args: argparse.Namespace, env: dict[str, str]) -> None:
    predictor = deploy(
        args.image,
        file_uri(args.model_data),
        port=args.port,
        environment=env,
        health_limit_s=args.health_timeout,
    )
    print(f"endpoint {predictor.endpoint_name} on http://localhost:{args.port} (Ctrl-C stops)")
    _wait_for_ctrl_c(lambda: delete(predictor))


def _sdk_transform(args: argparse.Namespace, env: dict[str, str]) -> None:
    for path in transform(
        args.image,
        file_uri(args.model_data),
        args.data.resolve(),
        args.output.resolve(),
        content_type=args.content_type,
        accept=args.accept,
        port=args.port,
        environment=env,
    ):
        print(path)


def _invoke(args: argparse.Namespace) -> None:
    """POST the body to the endpoint's /invocations and print the answer."""
    request = urllib.request.Request(
        f"http://localhost:{args.port}/invocations",
        data=args.body.encode(),
        headers={"Content-Type": args.content_type, "Accept": args.accept},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            print(answer.read().decode())
    except urllib.error.HTTPError as err:
        raise LocalModeError(f"HTTP {err.code}: {err.read().decode()}") from err
