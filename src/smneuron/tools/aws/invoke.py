"""`smneuron invoke`: sagemaker-runtime InvokeEndpoint with a body from a file or stdin.

With ``--stream``: InvokeEndpointWithResponseStream, tokens printed as they arrive
(``smneuron.tools.aws.stream``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from smneuron.env import ENV
from smneuron.errors import ClientError, SmneuronError

log = logging.getLogger(__name__)


class InvokeError(SmneuronError):
    """The endpoint or the runtime API refused the call."""


def invoke(
    endpoint_name: str,
    body: bytes,
    *,
    content_type: str = "application/json",
    accept: str | None = None,
    custom_attributes: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    client=None,
) -> tuple[bytes, str]:
    """Call InvokeEndpoint; return (body, content type) of the answer."""
    import boto3
    from botocore.exceptions import BotoCoreError, NoCredentialsError
    from botocore.exceptions import ClientError as AwsClientError

    if client is None:
        client = boto3.session.Session().client(
            "sagemaker-runtime", region_name=region, endpoint_url=endpoint_url
        )
    kwargs: dict[str, object] = {
        "EndpointName": endpoint_name,
        "Body": body,
        "ContentType": content_type,
    }
    if accept:
        kwargs["Accept"] = accept
    if custom_attributes:
        kwargs["CustomAttributes"] = custom_attributes
    try:
        response = client.invoke_endpoint(**kwargs)
    except NoCredentialsError as err:
        raise InvokeError("no AWS credentials found; set AWS_PROFILE or AWS keys") from err
    except AwsClientError as err:
        error = err.response.get("Error", {})
        status = err.response.get("OriginalStatusCode") or err.response.get(
            "ResponseMetadata", {}
        ).get("HTTPStatusCode")
        message = f"{endpoint_name}: {error.get('Code', 'error')}: {error.get('Message', err)}"
        if status and 400 <= int(status) < 500:
            raise ClientError(message, status_code=int(status)) from err
        raise InvokeError(message) from err
    except BotoCoreError as err:
        raise InvokeError(f"{endpoint_name}: {err}") from err
    return response["Body"].read(), response.get("ContentType", "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--accept")
    parser.add_argument("--custom-attributes")
    parser.add_argument(
        "--body", help="the request body: a file path, '-' for stdin (default), or @TEXT"
    )
    parser.add_argument("--region", default=os.environ.get(ENV.AWS_DEFAULT_REGION))
    parser.add_argument("--endpoint-url", help="sagemaker-runtime API endpoint override")
    parser.add_argument(
        "--local-port",
        type=int,
        help="call a SageMaker local-mode endpoint on this port (the SDK's local runtime client)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="InvokeEndpointWithResponseStream: print generated tokens as they arrive "
        "(--accept text/event-stream, the default, or application/jsonlines)",
    )


def read_body(spec: str | None) -> bytes:
    if spec is None or spec == "-":
        return sys.stdin.buffer.read()
    if spec.startswith("@"):
        return spec[1:].encode()
    path = Path(spec)
    if not path.is_file():
        raise ClientError(f"--body {spec}: no such file (use @TEXT for literal text)")
    return path.read_bytes()


def local_client(port: int):
    """The SageMaker SDK's local-mode runtime client, talking to localhost:port."""
    # The SDK logs its config lookup to stdout at INFO; stdout here is the answer.
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    from sagemaker.local.local_session import LocalSagemakerRuntimeClient

    return LocalSagemakerRuntimeClient(config={"local": {"serving_port": port}})


def run_stream(args: argparse.Namespace) -> int:
    import boto3

    from smneuron.tools.aws import stream

    accept = args.accept or stream.SSE
    if accept not in stream.STREAM_TYPES:
        raise ClientError(f"--stream needs --accept {' or '.join(stream.STREAM_TYPES)}")
    body = read_body(args.body)
    if args.local_port:
        chunks = stream.local_chunks(
            args.local_port, body, content_type=args.content_type, accept=accept
        )
    else:
        client = boto3.session.Session().client(
            "sagemaker-runtime", region_name=args.region, endpoint_url=args.endpoint_url
        )
        chunks = stream.endpoint_chunks(
            client,
            args.endpoint_name,
            body,
            content_type=args.content_type,
            accept=accept,
            CustomAttributes=args.custom_attributes,
        )
    stream.print_tokens(chunks, accept, sys.stdout.buffer)
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "stream", False):
        return run_stream(args)
    answer, content_type = invoke(
        args.endpoint_name,
        read_body(args.body),
        content_type=args.content_type,
        accept=args.accept,
        custom_attributes=args.custom_attributes,
        region=args.region,
        endpoint_url=args.endpoint_url,
        client=local_client(args.local_port) if args.local_port else None,
    )
    log.debug("answer content type %s", content_type)
    sys.stdout.buffer.write(answer)
    if not answer.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    return 0
