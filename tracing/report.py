"""Render an Analysis for people (rich text that reads at 80 columns) or machines (JSON).

Root causes come first with their consequences folded under them, and the text ends with
one line a person can act on. `exit_code` turns the worst finding into a CI verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from .analysis import DONE, ERROR, INFO, MISSING, NOT_VISIBLE, UNKNOWN, WARNING, Analysis, Evidence, Finding, StreamView
from .analysis.values import SEVERITY_RANK, evidence_address

MAX_STREAM_TABLES = 5
MAX_EVIDENCE_SHOWN = 5
MAX_CONSEQUENCES_SHOWN = 8  # folded under their root; --verbose shows every one in full
FAIL_ON = (ERROR, WARNING)  # the severities --fail-on accepts

SEVERITY_STYLE = {ERROR: "bold red", WARNING: "bold yellow", INFO: "bold cyan"}
STEP_LABEL = {
    "sent": "sent",
    "acked": "acked",
    "received": "received",
    "delivered": "delivered",
    "answered": "answered",
}


def _file(analysis: Analysis, path: str) -> str:
    """A trace file's name as short as it can be: relative to the recording when inside it."""
    root = Path(analysis.recording_path)
    p = Path(path)
    try:
        if root.is_dir():
            return str(p.resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        pass
    return p.name


def _address(analysis: Analysis, ev: Evidence) -> str:
    return evidence_address(_file(analysis, ev.path), ev.record, ev.trace, ev.frame)


def _rel(t: float | None, base: float | None) -> str:
    if t is None or base is None:
        return "–"
    return f"+{t - base:,.1f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _summary_table(analysis: Analysis) -> Table:
    s = analysis.summary()
    table = Table(box=box.SIMPLE, show_header=False, padding=(0, 1), expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    names = s["node_names"]
    shown = ", ".join(names[:6]) + (f", … (+{len(names) - 6})" if len(names) > 6 else "")
    table.add_row("Recording", Text(str(s["recording"])))
    table.add_row("Nodes", Text(f"{s['nodes']}" + (f" ({shown})" if names else "")))
    table.add_row("Traces", f"{s['traces']} ({s['events']:,} events)")
    closed = sum(1 for c in analysis.connections if c.state == "closed")
    table.add_row("Connections", f"{s['connections']} ({closed} closed, {s['one_ended_connections']} one-ended)")
    table.add_row(
        "Streams",
        f"{s['streams']} on {s['connections']} connections, each (connection, stream id) once "
        f"({s['streams_with_missing_step']} with a missing step)",
    )
    if s["duration_ms"] is not None:
        table.add_row("Time span", f"{s['duration_ms'] / 1000:,.3f} s")
    f = s["findings"]
    counts = Text()
    for sev, word in ((ERROR, "error"), (WARNING, "warning"), (INFO, "info")):
        if counts:
            counts.append(", ")
        counts.append(
            f"{f[sev]} {word}{'' if f[sev] == 1 or sev == INFO else 's'}",
            style=SEVERITY_STYLE[sev] if f[sev] else "dim",
        )
    roots = s["root_causes"]
    if roots:
        counts.append(f"; {_plural(len(roots), 'root cause')}", style="bold")
    table.add_row("Findings", counts)
    return table


def _finding_block(analysis: Analysis, finding: Finding, verbose: bool) -> Group:
    head = Text()
    head.append(f" {finding.severity.upper()} ", style=f"reverse {SEVERITY_STYLE.get(finding.severity, '')}")
    head.append(f" {finding.kind}", style="bold")
    if finding.node:
        head.append(f"  {finding.node}")
    where: list[str] = []
    if finding.connection:
        where.append(f"conn {finding.connection}")
    elif len(finding.connections) > 1:
        where.append(f"{len(finding.connections)} connections")
    n = finding.stream_count
    if n and len(finding.connections) <= 1 and n <= 4:
        where.append(f"stream{'s' if n > 1 else ''} " + ", ".join(str(s) for s in finding.streams))
    elif n:
        where.append(_plural(n, "stream"))
    body: list[Text] = []
    if where:
        body.append(Text(" · ".join(where), style="dim"))
    body.append(Text(finding.summary))
    cause = Text("Cause: ", style="bold")
    cause.append(finding.cause, style="italic")
    body.append(cause)
    if finding.fix:
        fix = Text("Fix: ", style="bold")
        fix.append(finding.fix)
        body.append(fix)
    evidence = finding.evidence if verbose else finding.evidence[:MAX_EVIDENCE_SHOWN]
    parts: list[RenderableType] = list(body)
    if evidence:
        parts.append(Text("Evidence (ms from the recording's start, event, file#record):", style="bold"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", no_wrap=True, style="dim")
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold", style="cyan")
        for ev in evidence:
            grid.add_row(_rel(ev.time_ms, analysis.first_ms), ev.name, _address(analysis, ev))
        parts.append(Padding(grid, (0, 0, 0, 2)))
        if len(finding.evidence) > len(evidence):
            parts.append(Text(f"  … and {len(finding.evidence) - len(evidence)} more", style="dim"))
    consequences = analysis.consequences(finding)
    if consequences and not verbose:
        parts.append(_folded(consequences))
    return Group(head, Padding(Group(*parts), (0, 0, 1, 3)))


def _folded(consequences: list[Finding]) -> Group:
    """A root's consequences, one entry each, folded under it."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for c in consequences[:MAX_CONSEQUENCES_SHOWN]:
        line = Text()
        line.append(f"{c.severity} ", style=SEVERITY_STYLE.get(c.severity, ""))
        line.append(c.kind, style="bold")
        line.append(f" {c.node or '-'}: ")
        line.append(c.summary, style="dim")
        grid.add_row("↳", line)
    parts: list[Text | Padding] = [Text(f"Consequences ({len(consequences)}), caused by this:", style="bold")]
    parts.append(Padding(grid, (0, 0, 0, 2)))
    if len(consequences) > MAX_CONSEQUENCES_SHOWN:
        parts.append(Text(f"  … and {len(consequences) - MAX_CONSEQUENCES_SHOWN} more (--verbose)", style="dim"))
    return Group(*parts)


def _status_cell(status: str, first_missing: bool) -> Text:
    if status == DONE:
        return Text("✓ done", style="green")
    if status == MISSING:
        return Text(" MISSING ", style="bold white on red") if first_missing else Text("missing", style="red")
    if status == NOT_VISIBLE:
        return Text("not visible", style="yellow")
    if status == UNKNOWN:
        return Text("unknown", style="dim")
    return Text(status)


def _stream_block(analysis: Analysis, stream: StreamView) -> Group:
    title = Text()
    title.append(f"Stream {stream.stream_id}", style="bold")
    title.append(f"  {stream.opener or '?'} → {stream.peer or '?'}")
    if stream.request_type:
        title.append(
            f"  {stream.request_type}" + (f" #{stream.request_id}" if stream.request_id is not None else ""),
            style="magenta",
        )
    title.append(f"  conn {stream.connection[:16]}", style="dim")

    # The Node column names the trace's owner, so the evidence column shows only the file
    # name and record: full addresses are in the findings and the JSON.
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), expand=False, show_edge=False, pad_edge=False)
    table.add_column("Step", no_wrap=True)
    table.add_column("Node", no_wrap=True, max_width=12, overflow="ellipsis")
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Evidence / note", overflow="fold", ratio=1)
    base = stream.first_ms
    for st in stream.steps:
        first_missing = st.name == stream.missing
        if st.evidence is not None:
            e = st.evidence
            where = Text(evidence_address(Path(e.path).name, e.record, 0, e.frame), style="cyan")
            if st.note:
                where.append(f" ({st.note})", style="dim")
        else:
            where = Text(st.note, style="dim")
        label = Text(STEP_LABEL.get(st.name, st.name), style="bold" if first_missing else "")
        table.add_row(label, st.node or "?", _rel(st.time_ms, base), _status_cell(st.status, first_missing), where)
    fins = Text("FIN: ", style="bold")
    for i, (who, st) in enumerate(((stream.opener, stream.fin_opener), (stream.peer, stream.fin_peer))):
        if i:
            fins.append("  ")
        fins.append(f"{who or '?'} ")
        fins.append_text(_status_cell(st.status, st.name == stream.missing))
    parts: list[Text | Table] = [title, table, fins]
    if stream.missing == "fin_peer":
        parts.append(Text(stream.fin_peer.note, style="red"))
    if stream.resets:
        r = Text("Reset: ", style="bold")
        r.append(", ".join(_address(analysis, e) for e in stream.resets[:4]), style="cyan")
        parts.append(r)
    if stream.timed_out is not None:
        t = Text("Requester timed out: ", style="bold")
        t.append(_address(analysis, stream.timed_out), style="cyan")
        parts.append(t)
    if stream.note:
        parts.append(Text(stream.note, style="dim italic"))
    return Group(*parts, Text(""))


def _connections_table(analysis: Analysis) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("Connection", no_wrap=True, max_width=14, overflow="ellipsis")
    table.add_column("Client → server", overflow="fold")
    table.add_column("State", no_wrap=True)
    table.add_column("RTT", justify="right", no_wrap=True)
    table.add_column("Str", justify="right", no_wrap=True)
    for c in analysis.connections:
        state = c.state if c.close_trigger is None else f"{c.state} ({c.close_trigger})"
        if c.close_name:
            state += f" {c.close_name}"
        rtt = f"{c.rtt_ms:.1f}" if c.rtt_ms is not None else "–"
        table.add_row(c.id, c.label, state, rtt, str(c.streams))
    return table


def render_text(analysis: Analysis, console: Console, verbose: bool = False) -> None:
    """Print the diagnosis: summary, findings, the affected streams step by step, blind spots."""
    console.print(Rule("dhtscope diagnosis"))
    console.print(_summary_table(analysis))

    console.print(Rule("Findings: root causes first", style="dim"))
    if not analysis.findings:
        console.print(Text("No findings: nothing went wrong that these traces can show.", style="green"))
        console.print()
    for finding in analysis.findings:
        if finding.caused_by is None or verbose:
            console.print(_finding_block(analysis, finding, verbose))

    affected = analysis.affected_streams(ERROR)
    if affected:
        console.print(Rule("Affected streams: sent → acked → received → delivered → answered", style="dim"))
        for stream in affected[:MAX_STREAM_TABLES]:
            console.print(_stream_block(analysis, stream))
        if len(affected) > MAX_STREAM_TABLES:
            console.print(
                Text(
                    f"... and {len(affected) - MAX_STREAM_TABLES} more "
                    f"{'stream' if len(affected) - MAX_STREAM_TABLES == 1 else 'streams'}",
                    style="dim",
                )
            )
            console.print()

    if verbose and analysis.connections:
        console.print(Rule("Connections", style="dim"))
        console.print(_connections_table(analysis))

    if analysis.blind_spots:
        console.print(Rule("What the traces could not show", style="dim"))
        shown = analysis.blind_spots if verbose else analysis.blind_spots[:10]
        for line in shown:
            console.print(Padding(Text(f"• {line}"), (0, 0, 0, 1)))
        if len(analysis.blind_spots) > len(shown):
            console.print(Text(f"  … and {len(analysis.blind_spots) - len(shown)} more (--verbose)", style="dim"))

    console.print(Rule(style="dim"))
    worst = _worst_root(analysis)
    console.print(Text(verdict_line(analysis), style=SEVERITY_STYLE.get(worst.severity, "") if worst else "green"))


def _worst_root(analysis: Analysis) -> Finding | None:
    return next((f for f in analysis.findings if f.caused_by is None and f.severity != INFO), None)


def verdict_line(analysis: Analysis) -> str:
    """The one line to act on: the first root cause's fix, or that nothing is wrong."""
    root = _worst_root(analysis)
    if root is None:
        return "No problems found: no finding above info."
    more = len([f for f in analysis.findings if f.caused_by is None and f.severity != INFO]) - 1
    fix = (root.fix or root.cause).rstrip(".")
    others = f" (then {_plural(more, 'more root cause')})" if more > 0 else ""
    return f"Fix first: {root.kind} on {root.node or '?'}: {fix}{others}."


def exit_code(analysis: Analysis, fail_on: str | None) -> int:
    """1 when a finding of `fail_on` severity or worse exists, else 0 (None: always 0)."""
    if fail_on is None:
        return 0
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on takes {' or '.join(FAIL_ON)}, not {fail_on!r}")
    limit = SEVERITY_RANK[fail_on]
    return int(any(SEVERITY_RANK.get(f.severity, 9) <= limit for f in analysis.findings))


def render_json(analysis: Analysis) -> str:
    """The analysis as JSON text (see Analysis.to_json for the layout)."""
    return json.dumps(analysis.to_json(), indent=2, ensure_ascii=False, default=str)


__all__ = ["FAIL_ON", "exit_code", "render_json", "render_text", "verdict_line"]
