"""dhtscope's version, as installed: one place for manifests, the control hello and `--version`."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def dhtscope_version() -> str:
    try:
        return metadata.version("dhtscope")
    except metadata.PackageNotFoundError:
        return "unknown"
