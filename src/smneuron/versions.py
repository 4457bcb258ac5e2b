"""Installed package versions (the manifest records them; the server checks them)."""

from __future__ import annotations

import importlib.metadata


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
