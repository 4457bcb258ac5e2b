"""The user's source folder for script mode: fetched into /opt/ml/code and unpacked safely.

``sagemaker_submit_directory`` is what the SageMaker Python SDK sends: on SageMaker an
``s3://…/sourcedir.tar.gz`` (downloaded with boto3), in local mode the folder it mounted at
/opt/ml/code, elsewhere a local folder or a ``.tar.gz``. As in the SageMaker training
toolkit, a /opt/ml/code that already holds files is used as it is.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from smneuron.artifact.archive import extract
from smneuron.env import ENV
from smneuron.errors import ConfigurationError

log = logging.getLogger(__name__)


def fetch(uri: str, target: Path, *, region: str | None, environ: Mapping[str, str]) -> Path:
    """Put the source named by ``uri`` into ``target`` (/opt/ml/code); return ``target``."""
    uri = uri.strip()
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if not uri or _same(Path(uri), target):
        if not target.is_dir():
            raise ConfigurationError(f"script mode: the source folder {target} does not exist")
        return target
    if target.is_dir() and any(target.iterdir()):
        log.info("%s already holds files: using them, not %s", target, uri)
        return target
    target.mkdir(parents=True, exist_ok=True)
    if uri.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="smneuron-sourcedir-") as tmp:
            archive = Path(tmp) / "sourcedir.tar.gz"
            download_s3(uri, archive, region=region, environ=environ)
            extract(archive, target)  # the one safe unpack (smneuron.artifact.archive)
    elif Path(uri).is_dir():
        shutil.copytree(uri, target, dirs_exist_ok=True)
    elif Path(uri).is_file() and tarfile.is_tarfile(uri):
        extract(Path(uri), target)
    else:
        raise ConfigurationError(
            f"sagemaker_submit_directory: {uri!r} is not an s3:// URI, a folder or a tar.gz file"
        )
    log.info("source from %s unpacked into %s", uri, target)
    return target


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def download_s3(uri: str, destination: Path, *, region: str | None, environ: Mapping[str, str]):
    """Download one S3 object (``S3_ENDPOINT_URL``, the toolkit's name, overrides the endpoint)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ConfigurationError(f"sagemaker_submit_directory: {uri!r} names no S3 object")
    endpoint = environ.get(ENV.S3_ENDPOINT_URL) or None
    client = boto3.session.Session().client("s3", region_name=region or None, endpoint_url=endpoint)
    try:
        client.download_file(bucket, key, str(destination))
    except (BotoCoreError, ClientError) as err:
        raise ConfigurationError(f"cannot download the source {uri}: {err}") from err
