"""What a view shows, taken away: Markdown to paste into a bug report, or JSON for a program.

A view describes itself as a `ViewExport` (columns and rows as shown, plus records with the
data behind them); this module writes it. No widgets here: the screens build the exports.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .format import local_time

FORMATS = {"markdown": ".md", "json": ".json"}
EXPORT_MAX_ROWS = 100_000  # rows written per export: a replay's Events view can hold millions


@dataclass(frozen=True)
class ViewExport:
    """One view's content: a title, where it came from, a table, and the data behind its rows."""

    view: str  # names the file: dhtscope-<view>-<time>.md
    title: str
    context: dict[str, str]  # source, node, filter, exported at...
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    records: Sequence[Any]  # one JSON value per row
    sections: Sequence[tuple[str, str]] = field(default=())  # (heading, text) after the table
    note: str = ""  # what was left out, if anything


def default_path(
    view: str, fmt: str, directory: str | os.PathLike[str] | None = None, now: float | None = None
) -> Path:
    """`./dhtscope-findings-20250101-120000.md`: the view, the local time, the format's suffix."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(directory or Path.cwd()) / f"dhtscope-{view}-{stamp}{FORMATS[fmt]}"


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def to_markdown(export: ViewExport) -> str:
    """A heading, the context as a list, the table, then any sections."""
    lines = [f"# {export.title}", ""]
    lines += [f"- {key}: {value}" for key, value in export.context.items()]
    if export.note:
        lines.append(f"- note: {export.note}")
    lines.append("")
    if export.columns:
        lines.append("| " + " | ".join(_cell(c) or " " for c in export.columns) + " |")
        lines.append("|" + "|".join("---" for _ in export.columns) + "|")
        for row in export.rows:
            cells = list(row) + [""] * (len(export.columns) - len(row))
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if not export.rows:
            lines.append("| " + " | ".join("" for _ in export.columns) + " |")
        lines.append("")
    for heading, text in export.sections:
        lines += [f"## {heading}", "", text.rstrip(), ""]
    return "\n".join(lines)


def to_json(export: ViewExport) -> str:
    """{"view", "title", "context", "note", "rows": [records]}."""
    body = {
        "view": export.view,
        "title": export.title,
        "context": export.context,
        "note": export.note or None,
        "rows": list(export.records),
    }
    return json.dumps(body, indent=2, ensure_ascii=False, default=str) + "\n"


def write_export(export: ViewExport, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write the export as `fmt` (markdown or json) to `path`, whole or not at all; the absolute path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise ValueError(f"{target} is a directory; give a file name")
    text = to_markdown(export) if fmt == "markdown" else to_json(export)
    temp = target.parent / f".{target.name}.{os.getpid()}.part"
    try:
        # 0o666 less the umask, as any file the user makes: an export is meant to be shared.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return target


def exported_at(now: float | None = None) -> str:
    return local_time((now if now is not None else time.time()) * 1000.0)


# -- what each kind of view exports (plain data in, a ViewExport out)


def table_export(
    view: str,
    title: str,
    context: dict[str, str],
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    records: Sequence[Any] | None = None,
) -> ViewExport:
    """A table as shown; `records` (the data behind each row) for JSON, else each row by column."""
    labels = [c or "mark" for c in columns]
    if records is None:
        records = [dict(zip(labels, row, strict=False)) for row in rows]
    return ViewExport(view, title, context, labels, rows, records)


def finding_text(finding: Any, root: str | None = None) -> str:
    """One finding as Markdown: what, where, why, and the evidence to look at."""
    from .format import evidence_address

    lines = [f"**{finding.kind}** ({finding.severity}) on {finding.node or '-'}"]
    if finding.peer:
        lines[0] += f", peer {finding.peer}"
    lines += ["", finding.summary, "", f"Cause: {finding.cause}"]
    if finding.evidence:
        lines += ["", "Evidence:"]
        lines += [f"- `{e.name}` at `{evidence_address(root, e.path, e.record, e.trace)}`" for e in finding.evidence]
    return "\n".join(lines)


def findings_export(findings: Sequence[Any], context: dict[str, str], root: str | None = None) -> ViewExport:
    rows = [
        [f.severity, f.kind, f.node or "-", str(len(f.stream_refs) or len(f.streams) or "-"), f.summary]
        for f in findings
    ]
    sections = [(f"{i}. {f.kind}", finding_text(f, root)) for i, f in enumerate(findings, 1)]
    return ViewExport(
        "findings",
        "dhtscope findings",
        context,
        ["severity", "finding", "node", "streams", "summary"],
        rows,
        [f.to_json() for f in findings],
        sections,
    )


def event_record(row: Any) -> dict[str, Any]:
    """An event as JSON: its local time beside the raw milliseconds."""
    return {
        "time": local_time(row.time_ms),
        "time_ms": row.time_ms,
        "node": row.node,
        "name": row.name,
        "conn": row.conn,
        "data": row.data,
    }


def events_export(events: Sequence[Any], total: int, context: dict[str, str]) -> ViewExport:
    """Events as the Events view lists them (under its filter), oldest first."""
    from .format import data_text

    rows = [[local_time(e.time_ms), e.node, e.name, e.conn or "-", data_text(e.data, limit=2000)] for e in events]
    note = f"the first {len(events):,} of {total:,} events" if total > len(events) else ""
    return ViewExport(
        "events",
        "dhtscope events",
        context,
        ["time", "node", "event", "conn", "data"],
        rows,
        [event_record(e) for e in events],
        note=note,
    )


def timeline_export(
    stream: Any, items: Sequence[Any], base_ms: float, context: dict[str, str], root: str | None = None
) -> ViewExport:
    """One stream's timeline: every event on both ends, and the missing step where it should be."""
    from .format import evidence_address

    rows: list[list[str]] = []
    records: list[dict[str, Any]] = []
    for item in items:
        if hasattr(item, "evidence"):
            where = evidence_address(root, item.evidence.path, item.evidence.record, item.evidence.trace)
            rows.append(
                [f"{item.time_ms - base_ms:,.3f}", item.node, item.end, item.step or "", item.name, item.detail]
            )
            records.append(
                {
                    "t_ms": round(item.time_ms - base_ms, 3),
                    "time": local_time(item.time_ms),
                    "node": item.node,
                    "end": item.end,
                    "step": item.step,
                    "event": item.name,
                    "detail": item.detail,
                    "evidence": where,
                }
            )
        else:  # the gap where the missing step should have happened
            rows.append(["", item.node or "?", "peer", f"MISSING {item.step}", "", item.explanation])
            records.append({"missing": item.step, "node": item.node, "explanation": item.explanation})
    title = f"dhtscope stream {stream.stream_id} of connection {stream.connection}"
    context = {
        **context,
        "stream": f"{stream.stream_id} ({stream.request_type or '?'}) {stream.opener or '?'} → {stream.peer or '?'}",
        "missing step": stream.missing or "none",
    }
    return ViewExport(
        f"stream-{stream.stream_id}", title, context, ["t+ms", "node", "end", "step", "event", "detail"], rows, records
    )
