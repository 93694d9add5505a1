"""tracing.report: the text diagnosis reads at 80 columns and names the missing step; JSON round-trips."""

from __future__ import annotations

import json

from rich.console import Console
from test_analysis import End, healthy_cluster, no_accept_cluster, recording, rpc, start

from dhtscope.tracing.analysis import analyse
from dhtscope.tracing.report import render_json, render_text


def render(analysis, verbose: bool = False, width: int = 80) -> str:  # type: ignore[no-untyped-def]
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    render_text(analysis, console, verbose=verbose)
    return console.export_text()


def test_seed_bug_report_marks_the_missing_step_at_80_columns() -> None:
    ends, _ = no_accept_cluster()
    text = render(analyse(recording(*ends)))
    assert "MISSING" in text
    assert "stream_not_delivered" in text
    assert "Stream 0" in text and "Stream 4" in text
    assert "registry" in text
    assert "StreamDataReceived" in text  # the cause is printed
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    # the step table shows the row order and marks delivered (the first missing step), not answered
    lines = text.splitlines()
    row = next(line for line in lines if "MISSING" in line)
    assert "delivered" in row
    order = [
        next(i for i, line in enumerate(lines) if line.strip().startswith(step))
        for step in ("sent", "acked", "received", "delivered", "answered")
    ]
    assert order == sorted(order)
    # evidence addresses are file#record
    assert ".sqlog#" in text


def test_not_visible_and_unknown_are_not_called_missing() -> None:
    c = End("dht", "client", "ee01")
    s = End(None, "server", "ee01", dhtscope=False, path="/x/quicgo_server.qlog")
    rpc(c, s, 10, 0, take=False)
    a = analyse(recording(c, s))
    view = a.stream("ee01", 0)
    assert view is not None
    text = render(a, verbose=True)
    assert "application_not_visible" in text
    assert "MISSING" not in text  # no error finding, so no step table with a marker
    assert "logs no application events" in text


def test_healthy_report_says_no_findings() -> None:
    text = render(analyse(recording(*healthy_cluster())))
    assert "No findings" in text
    assert "MISSING" not in text
    assert "0 errors" in text


def test_affected_streams_are_capped_with_a_count_of_the_rest() -> None:
    reg, p1 = End("registry", "server", "bb09"), End("provider1", "client", "bb09")
    start(p1, reg)
    for i in range(8):
        rpc(p1, reg, 10 + 10 * i, 4 * i, take=False, rid=i)
    rpc(reg, p1, 200, 1, kind="PING")
    text = render(analyse(recording(reg, p1)))
    assert "... and 3 more streams" in text
    assert text.count("MISSING") == 5


def test_verbose_lists_connections_and_all_evidence() -> None:
    ends, _ = no_accept_cluster()
    a = analyse(recording(*ends))
    short, full = render(a), render(a, verbose=True)
    assert "Connections" in full and "provider1 → registry" in full
    assert len(full) > len(short)


def test_render_json_round_trips_the_findings() -> None:
    ends, _ = no_accept_cluster()
    a = analyse(recording(*ends))
    doc = json.loads(render_json(a))
    assert [f["kind"] for f in doc["findings"]][0] == "stream_not_delivered"
    assert doc["findings"][0]["evidence"][0]["file"].endswith(".sqlog")
    assert doc["summary"]["streams"] == 3
