"""Packet captures (pcap, pcapng) with TLS secrets, read into network-vantage qlog traces.

`read_capture` decrypts with aioquic's packet protection, imported only when a capture is
actually decoded: importing this package (or any of dhtscope.tracing) never loads aioquic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CaptureError
from .files import sniff_capture
from .keylog import KeyLog, read_keylog

if TYPE_CHECKING:
    from ..model import Recording
    from .decoder import CaptureSummary


def read_capture(
    path: str | Path,
    keylog: str | Path | KeyLog | None = None,
    names: Mapping[str, str] | None = None,
) -> Recording:
    """A capture as a Recording: one network-vantage trace per QUIC connection.

    `keylog` is an NSS key log (path or KeyLog) added to any the capture's DSBs carry;
    `names` maps "ip:port" or "ip" to node names for the traces' labels.
    """
    return read_capture_with_summary(path, keylog, names)[0]


def read_capture_with_summary(
    path: str | Path,
    keylog: str | Path | KeyLog | None = None,
    names: Mapping[str, str] | None = None,
) -> tuple[Recording, CaptureSummary]:
    """`read_capture` and the counts behind it (frames, datagrams, packets, decrypted)."""
    from .decoder import decode_capture

    keys = keylog if isinstance(keylog, KeyLog) or keylog is None else read_keylog(keylog)
    return decode_capture(str(path), keys, names)


def is_capture(path: str | Path) -> bool:
    """Whether `path` is a regular file that starts like a pcap or pcapng capture."""
    return sniff_capture(path) is not None


__all__ = ["CaptureError", "KeyLog", "is_capture", "read_capture", "read_capture_with_summary", "read_keylog"]
