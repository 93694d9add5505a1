"""The values every trace reader produces and every analysis consumes."""

from __future__ import annotations

from collections.abc import Iterator
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

    path: str  # file the trace came from
    index: int  # trace number within that file (0 for .sqlog)
    vantage: str  # "client", "server", "network", "unknown" ...
    odcid: str | None  # original destination connection id, lowercase hex
    node: str | None  # node name (dhtscope manifest) or vantage point name
    format: str  # "qlog-0.3-json", "json-seq", "ndjson", "draft-01-json", ...
    qlog_version: str | None
    reference_time_ms: float | None
    title: str | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """A node named in a recording's manifest."""

    name: str
    node_id: str | None
    address: str | None
    role: str | None
    dir: str | None = None


class Trace:
    """One endpoint's trace: its header facts and its events, loaded lazily by the reader.

    Readers subclass this; analysis only uses `info`, `len()`, indexing and iteration.
    """

    info: TraceInfo

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, record: int) -> Event:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Event]:
        for i in range(len(self)):
            yield self[i]


@dataclass
class Recording:
    """Everything read from a path: a recording directory, or one or more trace files."""

    path: str
    traces: list[Trace]
    nodes: list[NodeEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dhtscope_version: str | None = None
