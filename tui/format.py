"""Small text helpers shared by the views: no widgets, no clocks."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

EPOCH_MS_FLOOR = 1e11  # a millisecond count at least this large is a date (after 1973), not a duration


def short(hex_id: str | None, n: int = 8) -> str:
    return hex_id[:n] if hex_id else "-"


def ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def count(n: int) -> str:
    return f"{n:,}"


def ago(seconds: float | None) -> str:
    """`3 s ago`, `2 min ago`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def countdown(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "expired"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes else f"{secs} s"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 10_000:
        return f"{n} B"
    if n < 10_000_000:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1048576:.1f} MiB"


def data_text(data: dict[str, Any], limit: int = 400) -> str:
    """An event's data on one line: `key=value` pairs, long values cut."""
    parts = []
    for key, value in data.items():
        if isinstance(value, str) and len(value) == 64:
            value = value[:8]
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(",", ":"), default=str)
        text = f"{key}={value}"
        parts.append(text if len(text) < 80 else text[:77] + "…")
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def evidence_address(root: str | None, path: str, record: int, trace: int = 0, frame: int | None = None) -> str:
    """`node/file.sqlog#12` (`capture.pcapng#frame 7` from a capture): relative to the recording when inside it."""
    from pathlib import Path

    shown = path
    if root:
        try:
            shown = str(Path(path).resolve().relative_to(Path(root).resolve()))
        except (ValueError, OSError):
            shown = path
    if frame is not None:
        return f"{shown}#frame {frame}"
    return f"{shown}[{trace}]#{record}" if trace else f"{shown}#{record}"


def local_time(time_ms: float) -> str:
    """`2023-11-14 23:13:20.123 CET`: an epoch-ms time as local time with milliseconds and zone."""
    when = datetime.fromtimestamp(time_ms / 1000.0).astimezone()
    return f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} {when.tzname() or when.strftime('%z')}"


def readable_times(data: Any) -> Any:
    """A copy of event data in which `*_ms` fields holding dates read as local time (raw value kept)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            is_date = (
                isinstance(key, str)
                and key.endswith("_ms")
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
                and value >= EPOCH_MS_FLOOR
            )
            out[key] = f"{local_time(value)} ({value:g})" if is_date else readable_times(value)
        return out
    if isinstance(data, list):
        return [readable_times(v) for v in data]
    return data
