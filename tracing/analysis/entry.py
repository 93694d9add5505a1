"""`analyse()`: one pass per trace, then joins, stream chains and findings over the facts."""

from __future__ import annotations

from ..model import Recording
from ..vantage import split_network_traces
from .blind import blind_spots
from .causes import assign_ids, link, root_first
from .context import Context
from .credit import find_flow_control, find_stream_credit_low, find_stream_limit
from .delivery import find_no_response, find_not_delivered, find_rpc_timeouts
from .dht import find_dht
from .facts import TraceFacts
from .join import connection_view, join_ends
from .lifecycle import find_alpn, find_connection_failures, find_zero_rtt_rejected
from .stalls import find_stalls
from .streams import stream_view
from .transport import find_loss, find_not_visible
from .values import SEVERITY_RANK, Analysis, ConnectionView, StreamView
from .wire import find_not_answered


def analyse(recording: Recording) -> Analysis:
    """Analyse a recording: one pass per trace, then joins and findings over the facts.

    A network-vantage trace (a capture) is first split into its client and server ends.
    """
    recording = split_network_traces(recording)
    facts: list[TraceFacts] = []
    for i, trace in enumerate(recording.traces):
        f = TraceFacts(trace, i)
        f.collect(trace)
        facts.append(f)

    conns = join_ends([f for f in facts if f.is_connection])
    for conn in conns:
        # Two ends with one name (foreign stacks name the stack, not the host) must stay
        # distinguishable in every view and finding.
        if conn.client is not None and conn.server is not None and conn.client.node == conn.server.node:
            conn.client.node += " (client)"
            conn.server.node += " (server)"
    streams: dict[tuple[str, int], StreamView] = {}
    ends: dict[tuple[str, int], tuple[TraceFacts | None, TraceFacts | None]] = {}
    views: list[ConnectionView] = []
    for conn in conns:
        sids: set[int] = set()
        for end in (conn.client, conn.server):
            if end is not None:
                sids.update(sid for sid, side in end.streams.items() if sid & 2 == 0 and side.has_data)
        for sid in sorted(sids):
            v = stream_view(conn, sid)
            streams[(conn.id, sid)] = v
            opener = conn.end(v.opener_role)
            ends[(conn.id, sid)] = (
                opener,
                conn.other(opener)
                if opener is not None
                else conn.end("client" if v.opener_role == "server" else "server"),
            )
        conn.view = connection_view(conn, len(sids))
        views.append(conn.view)

    ctx = Context(recording, facts, conns, streams)
    find_not_delivered(ctx)
    find_not_answered(ctx)
    find_no_response(ctx)
    find_stream_limit(ctx)
    find_stream_credit_low(ctx)
    find_flow_control(ctx)
    find_alpn(ctx)
    find_loss(ctx)  # before the stalls: loss elsewhere on a node explains a one-ended silence
    find_stalls(ctx)  # before the closes: a connection a silence ended is named by the silence
    find_connection_failures(ctx)
    find_zero_rtt_rejected(ctx)
    find_rpc_timeouts(ctx)
    find_dht(ctx)
    find_not_visible(ctx)
    ctx.findings.sort(
        key=lambda f: (
            SEVERITY_RANK.get(f.severity, 9),
            f.first_ms if f.first_ms is not None else float("inf"),
            f.kind,
            f.node or "",
        )
    )
    findings = root_first(link(assign_ids(ctx.findings)))
    blind = blind_spots(ctx, conns)

    for f in facts:
        f.drop_working_state()
    names = list(dict.fromkeys([n.name for n in recording.nodes] + [f.node for f in facts]))
    return Analysis(
        recording_path=recording.path,
        connections=views,
        streams=list(streams.values()),
        findings=findings,
        blind_spots=blind,
        nodes=names,
        trace_count=len(recording.traces),
        event_count=sum(f.events for f in facts),
        first_ms=ctx.first_ms,
        last_ms=ctx.last_ms,
        _ends=ends,
        _conns={c.id: c for c in views},
    )
