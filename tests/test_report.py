"""tracing.report: the text diagnosis reads at 80 columns and names the missing step; JSON round-trips."""

from __future__ import annotations

import json

from helpers.traces import End, healthy_cluster, no_accept_cluster, recording, rpc, start
from rich.console import Console

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


def test_consequences_are_folded_under_their_root_and_the_report_ends_with_the_fix() -> None:
    from helpers.traces import MANIFEST, seed_bug_with_node_logs

    a = analyse(recording(*seed_bug_with_node_logs(), nodes=MANIFEST))
    text = render(a)
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    assert "Consequences (3), caused by this:" in text
    assert "↳ warning rpc_timeout provider1" in text
    assert " WARNING  rpc_timeout" not in text  # folded, not a block of its own
    assert "WARNING  rpc_timeout" in render(a, verbose=True)
    last = text.strip().splitlines()
    assert "Fix first: stream_not_delivered on registry" in " ".join(last[-3:])
    assert "1 root cause" in text


def test_a_healthy_report_ends_saying_no_problems() -> None:
    assert render(analyse(recording(*healthy_cluster()))).strip().splitlines()[-1] == (
        "No problems found: no finding above info."
    )


def test_finding_headers_count_streams_per_connection() -> None:
    ends = []
    for n, name in enumerate(("provider1", "provider2")):
        reg, p = End("registry", "server", f"cc0{n}"), End(name, "client", f"cc0{n}")
        start(p, reg)
        for i in range(3):
            rpc(p, reg, 10 + 10 * i, 4 * i, take=False, rid=i)
        rpc(reg, p, 100, 1, kind="PING")
        ends += [reg, p]
    text = render(analyse(recording(*ends)))
    assert "2 connections · 6 streams" in text  # ids 0, 4, 8 on each connection


def test_exit_code_follows_the_worst_finding() -> None:
    import pytest

    from dhtscope.tracing.report import exit_code

    healthy = analyse(recording(*healthy_cluster()))
    ends, _ = no_accept_cluster()
    broken = analyse(recording(*ends))
    assert exit_code(healthy, "warning") == 0 and exit_code(healthy, "error") == 0
    assert exit_code(broken, "error") == 1 and exit_code(broken, "warning") == 1
    assert exit_code(broken, None) == 0
    with pytest.raises(ValueError, match="error or warning"):
        exit_code(broken, "info")
