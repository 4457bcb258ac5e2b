"""Script mode's source folder: an S3 sourcedir.tar.gz (moto), a local folder, a safe unpack."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from smneuron.errors import ConfigurationError
from smneuron.training import sourcedir


def make_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


SOURCE = {"train.py": b"print('hi')\n", "lib/util.py": b"X = 1\n", "requirements.txt": b""}


def test_an_s3_sourcedir_is_downloaded_and_unpacked(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    archive = make_tar(tmp_path / "sourcedir.tar.gz", SOURCE)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(
            Bucket="jobs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        s3.upload_file(str(archive), "jobs", "job-1/source/sourcedir.tar.gz")
        code = sourcedir.fetch(
            "s3://jobs/job-1/source/sourcedir.tar.gz",
            tmp_path / "code",
            region="eu-west-1",
            environ={},
        )
        with pytest.raises(ConfigurationError, match="cannot download the source s3://jobs/nope"):
            sourcedir.fetch(
                "s3://jobs/nope.tar.gz", tmp_path / "other", region="eu-west-1", environ={}
            )
    assert (code / "train.py").read_bytes() == SOURCE["train.py"]
    assert (code / "lib" / "util.py").read_bytes() == SOURCE["lib/util.py"]


def test_a_local_folder_is_copied_and_the_mounted_code_folder_used_as_it_is(tmp_path):
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    for name, data in SOURCE.items():
        (src / name).write_bytes(data)
    code = sourcedir.fetch(f"file://{src}", tmp_path / "code", region=None, environ={})
    assert sorted(p.name for p in code.iterdir()) == ["lib", "requirements.txt", "train.py"]
    # Local mode: the SDK mounts source_dir at /opt/ml/code and names that folder.
    assert sourcedir.fetch(str(code), code, region=None, environ={}) == code
    with pytest.raises(ConfigurationError, match="does not exist"):
        sourcedir.fetch("", tmp_path / "missing", region=None, environ={})


def test_a_local_tarball_is_unpacked(tmp_path):
    archive = make_tar(tmp_path / "src.tar.gz", SOURCE)
    code = sourcedir.fetch(str(archive), tmp_path / "code", region=None, environ={})
    assert (code / "train.py").is_file()


@pytest.mark.parametrize(
    ("member", "link"),
    [("../evil.py", None), (None, "../../evil.py")],
    ids=["dotdot", "symlink-out"],
)
@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "by-hand"])
def test_an_archive_that_escapes_the_target_is_refused(
    tmp_path, monkeypatch, member, link, data_filter
):
    from smneuron.artifact import archive as unpack

    monkeypatch.setattr(unpack, "HAS_DATA_FILTER", data_filter)  # False: the 3.10s without it
    files = {"ok.py": b"x", **({member: b"x"} if member else {})}
    archive = make_tar(tmp_path / "bad.tar.gz", files, {"escape": link} if link else None)
    target = tmp_path / "deep" / "code"
    with pytest.raises(ConfigurationError, match="bad.tar.gz: refusing to unpack"):
        sourcedir.fetch(str(archive), target, region=None, environ={})
    assert not (tmp_path / "deep" / "evil.py").exists()
    assert not (target / "ok.py").exists()  # nothing is written


def test_an_absolute_member_name_is_refused(tmp_path):
    outside = tmp_path / "evil.py"
    archive = make_tar(tmp_path / "abs.tar.gz", {str(outside): b"x"})
    with pytest.raises(ConfigurationError, match="an absolute path"):
        sourcedir.fetch(str(archive), tmp_path / "code", region=None, environ={})
    assert not outside.exists()


def test_something_that_is_no_source_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigurationError, match="not an s3:// URI, a folder or a tar.gz"):
        sourcedir.fetch(str(tmp_path / "notes.txt"), tmp_path / "code", region=None, environ={})
