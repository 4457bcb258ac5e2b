"""Unpacking a model.tar.gz (or a checkpoint tarball) safely: nothing lands outside the target.

Every member is checked before anything is written: no absolute name, no ``..`` step, no
link that points outside the target, no device, FIFO or other special file. Where Python has
extraction filters (3.12, and the 3.10/3.11 security releases) the ``data`` filter runs too.
"""

from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from smneuron.errors import ConfigurationError

HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could write outside the target, or None when it is safe."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a '..' step"
    if member.issym() or member.islnk():
        link = member.linkname
        if not link or link.startswith(("/", "\\")):
            return f"a link to the absolute path {link!r}"
        # a symlink resolves from its own folder, a hard link from the archive root
        start = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(start, link))
        if resolved == ".." or resolved.startswith("../"):
            return f"a link to {link!r}, outside the archive"
        return None
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    return None


def extract(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into the folder ``target`` (created when missing).

    Raises:
        ConfigurationError: ``archive`` is not a readable tarball, or holds an unsafe member
            (nothing is written then).
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                reason = unsafe_reason(member)
                if reason is not None:
                    raise ConfigurationError(
                        f"{archive}: refusing to unpack {member.name!r}: {reason}"
                    )
            if HAS_DATA_FILTER:
                tar.extractall(target, members=members, filter="data")
            else:  # Python 3.10 before its filter backport: every member was checked above
                tar.extractall(target, members=members)
    except (tarfile.TarError, OSError) as err:
        raise ConfigurationError(f"cannot unpack {archive}: {err}") from err
