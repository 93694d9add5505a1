"""The values every trace reader produces and every analysis consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One qlog event, normalised: absolute time in ms since the epoch and a canonical name.

    `name` is canonical (`quic:packet_sent`, `quic:stream_data_moved`, `dht:rpc_sent`);
    `raw_name` is what the file said (`transport:packet_sent`, `quic-10:packet_sent`).
    `record` is the event's position in its trace (0-based), the evidence address.
    """

    time_ms: float
    name: str
    data: dict[str, Any]
    raw_name: str
    record: int


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What a trace says about itself: whose end of which connection it is."""

    path: str                 # file the trace came from
    index: int                # trace number within that file (0 for .sqlog)
    vantage: str              # "client", "server", "network", "unknown" ...
    odcid: str | None         # original destination connection id, lowercase hex
    node: str | None          # node name (dhtscope manifest) or vantage point name
    format: str               # "qlog-0.3-json", "json-seq", "ndjson", "draft-01-json", ...
    qlog_version: str | None
    reference_time_ms: float | None
    title: str | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
