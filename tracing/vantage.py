"""One network-vantage trace (a capture, or a qlog written by an on-path observer) as two ends.

The analysis follows each stream through the opener's trace and the peer's. A trace from the
network holds both: what the client sent (`quic:packet_sent` with flow "client") and what the
server sent (`quic:packet_received`). `split_network_traces` gives each endpoint its own trace
as if it had logged the packets itself, marked as seen on the wire: what an application took
from its transport is never visible there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from .model import Event, Recording, Trace, TraceInfo
from .reader import ReaderTrace

SENT = "quic:packet_sent"
RECEIVED = "quic:packet_received"
DROPPED = "quic:packet_dropped"
PARAMETERS = "quic:parameters_set"

# How each end sees an event of the network trace: 0 = as is, 1 = sent/received swapped,
# 2 = parameters with their owner made local/remote.
_SAME, _SWAP, _OWNER = 0, 1, 2


class EndTrace(ReaderTrace):
    """One endpoint's view of a network-vantage trace; events are built on demand."""

    def __init__(self, source: Trace, info: TraceInfo, records: list[int], role: str, swap: bool) -> None:
        self.info = info
        self._source = source
        self._records = records  # source record of each of this trace's events
        self._role = role
        self._swap = swap

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, record: int) -> Event:
        if record < 0:
            record += len(self._records)
        return self._event(record, self._source[self._records[record]])

    def iter_range(self, start: int = 0, stop: int | None = None) -> Iterator[Event]:
        records = self._records
        stop = len(records) if stop is None else min(stop, len(records))
        source = self._source
        for i in range(max(start, 0), stop):
            yield self._event(i, source[records[i]])

    def _event(self, record: int, ev: Event) -> Event:
        name = ev.name
        data = ev.data
        if self._swap and name == SENT:
            name = RECEIVED
        elif self._swap and name == RECEIVED:
            name = SENT
        elif name == PARAMETERS and data.get("owner") in ("client", "server"):
            data = {**data, "owner": "local" if data["owner"] == self._role else "remote"}
        return Event(time_ms=ev.time_ms, name=name, data=data, raw_name=ev.raw_name, record=record)


def _flow(info: TraceInfo) -> str:
    flow = info.extra.get("vantage_flow")
    return flow if flow in ("client", "server") else "client"


def _receiver_of_drop(data: dict[str, Any]) -> str | None:
    details = data.get("details")
    sender = details.get("sender") if isinstance(details, dict) else None
    if sender == "client":
        return "server"
    if sender == "server":
        return "client"
    return None


def split_trace(trace: Trace) -> tuple[EndTrace, EndTrace]:
    """(client end, server end) of one network-vantage trace."""
    info = trace.info
    flow = _flow(info)
    client_records: list[int] = []
    server_records: list[int] = []
    for ev in trace:
        if ev.name == DROPPED:
            # A packet that could not be opened counts where it arrived: at the sender's peer.
            receiver = _receiver_of_drop(ev.data)
            if receiver != "server":
                client_records.append(ev.record)
            if receiver != "client":
                server_records.append(ev.record)
            continue
        client_records.append(ev.record)
        server_records.append(ev.record)
    frames = info.extra.get("frames")
    ends = []
    for role, records in (("client", client_records), ("server", server_records)):
        extra = {k: v for k, v in info.extra.items() if k != "frames"}
        if isinstance(frames, list):
            extra["frames"] = [frames[r] if r < len(frames) else None for r in records]
        extra.update(
            {
                "seen_on_wire": True,
                "application_visible": False,
                "end": role,
                "network_index": info.index,
                "network_node": info.node,
            }
        )
        name_key = f"{role}_name"
        node = extra.get(name_key) if isinstance(extra.get(name_key), str) else None
        if node is None:
            node = f"{info.node or 'network'} ({role})"
        title = f"{info.title or 'network trace'} ({role} end, as seen on the wire)"
        if title.startswith("dhtscope"):
            title = "wire: " + title  # a dhtscope title would claim the application is logged
        end_info = dataclasses.replace(
            info,
            index=info.index * 2 + (0 if role == "client" else 1),
            vantage=role,
            node=node,
            title=title,
            extra=extra,
        )
        # The network trace's flow names whose packets it calls "sent".
        ends.append(EndTrace(trace, end_info, records, role, swap=role != flow))
    return ends[0], ends[1]


def split_network_traces(recording: Recording) -> Recording:
    """The recording with each network-vantage trace replaced by its client and server ends.

    The ends keep the network trace's path; their `index` is 2*i (client) and 2*i + 1 (server)
    for network trace i of that file, `info.extra["frames"]` (captures) gives each event's
    frame number, and `info.extra["seen_on_wire"]` marks them. Other traces pass unchanged.
    """
    if not any(t.info.vantage == "network" for t in recording.traces):
        return recording
    traces: list[Trace] = []
    for trace in recording.traces:
        if trace.info.vantage == "network":
            traces.extend(split_trace(trace))
        else:
            traces.append(trace)
    return dataclasses.replace(recording, traces=traces)


__all__ = ["EndTrace", "split_network_traces", "split_trace"]
