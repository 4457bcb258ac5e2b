"""`smneuron push`: ECR repository, Docker login from ecr.get_authorization_token, tag, push.

``--ecr-endpoint-url`` points the ECR API elsewhere (moto_server in the tests) and
``--registry`` the Docker pushes (a local registry), so the whole path runs offline.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from smneuron import __version__
from smneuron.env import ENV
from smneuron.errors import ConfigurationError, SmneuronError

log = logging.getLogger(__name__)


class PushError(SmneuronError):
    """ECR or the registry refused, or credentials are missing."""


@dataclass(frozen=True)
class Pushed:
    local: str
    remote: str
    digest: str | None


def ecr_client(region: str | None, endpoint_url: str | None):
    import boto3

    # A fresh session: the default one caches the credentials it found first.
    return boto3.session.Session().client("ecr", region_name=region, endpoint_url=endpoint_url)


def _aws_error(err: Exception, action: str) -> PushError:
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(err, NoCredentialsError):
        return PushError(
            f"{action}: no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (or run in CodeBuild with a service role)"
        )
    if isinstance(err, NoRegionError):
        return PushError(f"{action}: no AWS region; pass --region or set AWS_DEFAULT_REGION")
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", str(err))
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            return PushError(
                f"{action}: access denied ({message}); the role needs ecr:CreateRepository, "
                "ecr:DescribeRepositories, ecr:GetAuthorizationToken, ecr:InitiateLayerUpload, "
                "ecr:UploadLayerPart, ecr:CompleteLayerUpload, ecr:BatchCheckLayerAvailability "
                "and ecr:PutImage"
            )
        return PushError(f"{action}: {code or 'error'}: {message}")
    return PushError(f"{action}: {err}")


def ensure_repository(client, name: str) -> str:
    """The repository URI, creating the repository when it does not exist."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = client.describe_repositories(repositoryNames=[name])["repositories"][0]
        return found["repositoryUri"]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise _aws_error(err, f"describing repository {name}") from err
    except BotoCoreError as err:
        raise _aws_error(err, f"describing repository {name}") from err
    try:
        created = client.create_repository(
            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
        )["repository"]
    except (ClientError, BotoCoreError) as err:
        raise _aws_error(err, f"creating repository {name}") from err
    log.info("created ECR repository %s", created["repositoryUri"])
    return created["repositoryUri"]


def login(client, docker_client, registry: str | None = None, account: str | None = None) -> str:
    """Docker login with an ECR token (for ``account``, default the caller's); return the
    registry host the token is for."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        kwargs = {"registryIds": [account]} if account else {}
        data = client.get_authorization_token(**kwargs)["authorizationData"][0]
    except (ClientError, BotoCoreError) as err:
        raise _aws_error(err, "getting an ECR authorization token") from err
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    host = registry or data["proxyEndpoint"].removeprefix("https://").removeprefix("http://")
    try:
        docker_client.login(username=user, password=password, registry=host, reauth=True)
    except Exception as err:  # docker.errors.APIError and connection errors
        raise PushError(f"docker login to {host} was refused: {err}") from err
    return host


def push_image(docker_client, local: str, remote: str) -> Pushed:
    """Tag ``local`` as ``remote`` and push it, streaming progress."""
    repository, _, tag = remote.rpartition(":")
    docker_client.images.get(local).tag(repository, tag)
    digest = None
    last_status: dict[str, str] = {}
    try:
        stream = docker_client.api.push(repository, tag=tag, stream=True, decode=True)
        for chunk in stream:
            if "error" in chunk:
                raise PushError(f"the registry refused {remote}: {chunk['error']}")
            status = chunk.get("status", "")
            layer = chunk.get("id", "")
            if status and last_status.get(layer) != status and "ing" not in status[-4:]:
                log.info("%s %s", layer, status)
                last_status[layer] = status
            digest = chunk.get("aux", {}).get("Digest", digest)
    except PushError:
        raise
    except Exception as err:
        raise PushError(f"pushing {remote} failed: {err}") from err
    return Pushed(local, remote, digest)


def push(
    images: list[str],
    *,
    region: str | None = None,
    registry: str | None = None,
    endpoint_url: str | None = None,
    tag: str | None = None,
) -> list[Pushed]:
    """Push local images (``name:tag``) to ECR repositories of the same name."""
    from smneuron.tools.build.images import docker_client as get_docker

    docker_client = get_docker()
    client = ecr_client(region, endpoint_url)
    host = login(client, docker_client, registry)
    pushed = []
    for local in images:
        name, _, local_tag = local.partition(":")
        uri = ensure_repository(client, name)
        repository = f"{host}/{name}" if registry else uri
        remote = f"{repository}:{tag or local_tag or 'latest'}"
        log.info("pushing %s as %s", local, remote)
        pushed.append(push_image(docker_client, local, remote))
    return pushed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="*",
        help="local images (name:tag); default: both images of --accelerator for this version",
    )
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "neuron"))
    parser.add_argument("--tag", help="remote tag (default: the local tag)")
    parser.add_argument("--region", default=os.environ.get(ENV.AWS_DEFAULT_REGION))
    parser.add_argument(
        "--registry",
        default=os.environ.get(ENV.REGISTRY) or None,
        help="push here instead of the ECR registry host (env SMNEURON_REGISTRY)",
    )
    parser.add_argument(
        "--ecr-endpoint-url",
        default=os.environ.get(ENV.ECR_ENDPOINT_URL) or None,
        help="ECR API endpoint, e.g. moto_server (env SMNEURON_ECR_ENDPOINT_URL)",
    )
    parser.add_argument(
        "--login-only", action="store_true", help="docker login to ECR, push nothing"
    )
    parser.add_argument(
        "--login-account",
        action="append",
        default=[],
        metavar="ACCOUNT",
        help="also log in to this account's registry (e.g. the Neuron DLC account)",
    )
    parser.add_argument("--output", type=Path, help="write the pushed image URIs as JSON here")


def run(args: argparse.Namespace) -> int:
    from smneuron.tools.build.images import image_tag

    images = args.images or [
        image_tag(image, args.accelerator, __version__) for image in ("training", "inference")
    ]
    if not args.region and not args.ecr_endpoint_url:
        raise ConfigurationError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    if args.login_only:
        from smneuron.tools.build.images import docker_client

        client = ecr_client(args.region, args.ecr_endpoint_url)
        engine = docker_client()
        for account in [None, *args.login_account]:
            print(f"logged in to {login(client, engine, args.registry, account)}")
        return 0
    pushed = push(
        images,
        region=args.region,
        registry=args.registry,
        endpoint_url=args.ecr_endpoint_url,
        tag=args.tag,
    )
    for item in pushed:
        print(f"{item.remote}  {item.digest or ''}".rstrip())
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        details = [{"local": p.local, "imageUri": p.remote, "digest": p.digest} for p in pushed]
        args.output.write_text(json.dumps(details, indent=2) + "\n", "utf-8")
    return 0
