"""Unpacking a model.tar.gz: a good one unpacks, a malicious one writes nothing anywhere."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from smneuron.artifact import archive
from smneuron.errors import ConfigurationError


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


@pytest.fixture(params=[True, False], ids=["data-filter", "python-3.10-fallback"])
def with_and_without_filter(request, monkeypatch):
    monkeypatch.setattr(archive, "HAS_DATA_FILTER", request.param)


def test_a_model_tar_unpacks_with_its_folders_and_inside_links(tmp_path, with_and_without_filter):
    tar = make_tar(
        tmp_path / "model.tar.gz",
        [
            ("manifest.json", b"{}"),
            ("compiled/b1_s16.pt", b"graph"),
            link("compiled/latest.pt", "b1_s16.pt"),
            link("config-link.json", "manifest.json", tarfile.LNKTYPE),
        ],
    )
    archive.extract(tar, tmp_path / "out")
    assert (tmp_path / "out" / "compiled" / "b1_s16.pt").read_bytes() == b"graph"
    assert (tmp_path / "out" / "compiled" / "latest.pt").read_bytes() == b"graph"
    assert (tmp_path / "out" / "config-link.json").read_bytes() == b"{}"


MALICIOUS = {
    "absolute path": [("/tmp/smneuron-evil.txt", b"x")],
    "dot-dot": [("ok.txt", b"x"), ("../evil.txt", b"x")],
    "nested dot-dot": [("code/../../evil.txt", b"x")],
    "symlink outside": [link("code", "../../..")],
    "absolute symlink": [link("code", "/etc")],
    "hard link outside": [link("passwd", "../../etc/passwd", tarfile.LNKTYPE)],
    "device": [special("dev-null", tarfile.CHRTYPE)],
    "fifo": [special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_a_malicious_tar_is_refused_and_nothing_is_written(tmp_path, case, with_and_without_filter):
    tar = make_tar(tmp_path / "evil.tar.gz", MALICIOUS[case])
    target = tmp_path / "deep" / "down" / "out"
    with pytest.raises(ConfigurationError, match="refusing to unpack"):
        archive.extract(tar, target)
    assert list(target.iterdir()) == []
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert written == {Path("evil.tar.gz"), Path("deep"), Path("deep/down"), Path("deep/down/out")}


def test_not_a_tarball_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.tar.gz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(ConfigurationError, match="cannot unpack"):
        archive.extract(bogus, tmp_path / "out")
