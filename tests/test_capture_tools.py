"""Every tool takes a capture where it takes a recording: diagnose, convert, replay; and bad input is one line."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from conftest import ONE_QLOG_FILE
from helpers.tui import table_text, wait_until
from quicpair import V1, Plan, write_capture, write_datagrams

from dhtscope.node.cluster import ClusterPlan
from dhtscope.tracing.analysis import analyse
from dhtscope.tracing.capture import read_capture
from dhtscope.tracing.inputs import InputError, open_inputs, read_inputs
from dhtscope.tracing.reader import open_recording
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.cli import main
from dhtscope.tui.screens.timeline import StreamTimelineScreen
from dhtscope.tui.sources.replay import ReplaySource

UNANSWERED = Plan(streams=2, answer=False, linger_s=1.5)


@pytest.fixture
def unanswered(tmp_path: Path) -> tuple[Path, Path]:
    """A capture (keys beside it, not inside) where the server acknowledges and never answers."""
    cap, keys = tmp_path / "cap" / "server.pcapng", tmp_path / "cap" / "secrets.txt"
    cap.parent.mkdir()
    write_capture(cap, dsb=False, keylog_path=keys, plan=UNANSWERED)
    return cap, keys


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- diagnose


def test_diagnose_a_capture_with_its_keylog_names_the_unanswered_streams_by_frame(unanswered, capsys):
    cap, keys = unanswered
    code, out, err = run(capsys, "diagnose", str(cap), "--keylog", str(keys), "--json", "--fail-on", "error")
    assert code == 1 and err == ""
    doc = json.loads(out)
    [f] = [f for f in doc["findings"] if f["kind"] == "stream_not_answered"]
    assert f["severity"] == "error" and f["streams"] == [0, 4]
    assert all(isinstance(e["frame"], int) for e in f["evidence"])
    assert doc["connections"][0]["stream_credit"][1]["limit"] == 128
    code, out, _ = run(capsys, "diagnose", str(cap), "--keylog", str(keys))
    assert code == 0 and "server.pcapng#frame " in out and "stream_not_answered" in out


def test_a_capture_carrying_its_keys_needs_no_keylog(tmp_path, capsys):
    cap = tmp_path / "dsb.pcapng"
    write_capture(cap, dsb=True, plan=Plan(streams=2))
    code, out, err = run(capsys, "diagnose", str(cap), "--json", "--fail-on", "warning")
    assert (code, err) == (0, "")
    assert json.loads(out)["streams"]["complete"] == 2


def test_several_captures_and_qlog_files_diagnose_together(tmp_path, capsys):
    one, two = tmp_path / "one.pcapng", tmp_path / "two.pcapng"
    write_capture(one, plan=Plan(streams=1))
    write_capture(two, plan=Plan(streams=2), client_port=50001)
    qlog = ONE_QLOG_FILE
    code, out, _ = run(capsys, "diagnose", str(one), str(two), str(qlog), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["summary"]["connections"] == 3
    files = {c["client"]["file"] for c in doc["connections"]}
    assert files == {str(one), str(two), str(qlog)}


def test_a_directory_of_node_captures_takes_each_ones_keys_and_names(tmp_path):
    cap = tmp_path / "caps" / "registry.pcapng"
    cap.parent.mkdir()
    write_capture(cap, dsb=False, keylog_path=cap.with_suffix(".keys"), plan=Plan(streams=1))
    rec = open_inputs([cap.parent])
    assert [t.info.extra["decrypted"] for t in rec.traces] == ["full"]


def test_a_connection_in_two_captures_is_analysed_once_from_the_one_holding_more(tmp_path):
    from quicpair import record

    conv, datagrams = record(plan=Plan(streams=2))
    write_datagrams(tmp_path / "a.pcapng", datagrams, keylog=conv.keylog)
    write_datagrams(tmp_path / "b.pcapng", datagrams[:-4], keylog=conv.keylog)  # a capture stopped early
    rec = open_inputs([tmp_path])
    [trace] = rec.traces
    assert Path(trace.info.path).name == "a.pcapng"
    assert any("is in b.pcapng and a.pcapng: analysed from a.pcapng" in w for w in rec.warnings)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_line_and_a_nonzero_exit(tmp_path, unanswered, capsys):
    cap, keys = unanswered
    garbage = tmp_path / "garbage.pcapng"
    garbage.write_bytes(b"not a capture at all")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    other_keys = tmp_path / "other.keys"
    write_capture(tmp_path / "other.pcapng", keylog_path=other_keys)
    cases = [
        (["diagnose", str(garbage)], "not a pcap or pcapng capture (starts with 0x6e6f7420)"),
        (["diagnose", str(text)], "neither a qlog trace nor a pcap/pcapng capture"),
        (["diagnose", str(cap), "--keylog", str(other_keys)], "the key log matches no connection in server.pcapng"),
        (["diagnose", str(ONE_QLOG_FILE), "--keylog", str(keys)], "no packet capture"),
        (["diagnose", str(cap), "--keylog", str(tmp_path / "nope.keys")], "no such file or directory"),
        (["replay", str(garbage)], "not a pcap or pcapng capture"),
        (["convert", str(text), "-o", str(tmp_path / "out")], "neither a qlog trace nor a pcap/pcapng capture"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, (argv, err)


def test_a_truncated_capture_is_diagnosed_up_to_where_it_stops_and_says_where(unanswered, tmp_path, capsys):
    cap, keys = unanswered
    cut = tmp_path / "cut.pcapng"
    data = cap.read_bytes()
    cut.write_bytes(data[: len(data) - 40])
    code, out, err = run(capsys, "diagnose", str(cut), "--keylog", str(keys), "--json")
    assert code == 1
    assert err.startswith("dhtscope diagnose: ") and "capture truncated at frame" in err and "read the" in err
    assert json.loads(out)["summary"]["connections"] == 1  # what was there was read


def test_a_capture_of_an_unsupported_quic_version_names_it(tmp_path, capsys):
    client, server = ("10.0.0.1", 5000), ("10.1.0.1", 443)
    dcid, scid = os.urandom(8), os.urandom(8)
    draft = bytes([0xC0]) + struct.pack(">I", 0xFF00001D) + b"\x08" + dcid + b"\x08" + scid + os.urandom(1200)
    cap = tmp_path / "draft29.pcapng"
    write_datagrams(cap, [(1_780_000_000.0, client, server, draft)])
    code, _, err = run(capsys, "diagnose", str(cap))
    assert code == 1 and "QUIC version 0xff00001d (draft-29) is not supported" in err


def test_an_empty_keylog_is_no_error_for_a_node_whose_handshakes_all_failed(tmp_path):
    cap, keys = tmp_path / "alpn.pcapng", tmp_path / "alpn.keys"
    write_capture(cap, dsb=False, server_alpn="other/1")
    keys.write_text("")
    opened = read_inputs([cap], keys)
    assert [f.kind for f in analyse(opened.recording).findings if f.severity == "error"] == ["alpn_mismatch"]


def test_inputs_errors_are_trace_read_errors_for_whoever_handles_those(tmp_path):
    from dhtscope.tracing.reader import TraceReadError

    with pytest.raises(TraceReadError):
        open_inputs([tmp_path / "missing.sqlog"])
    assert issubclass(InputError, TraceReadError)


# ----------------------------------------------------------------------------- convert


def test_convert_writes_one_qlog_per_connection_that_the_reader_reads_back_unchanged(tmp_path, capsys):
    cap, keys = tmp_path / "c.pcapng", tmp_path / "c.keys"
    write_capture(cap, dsb=False, keylog_path=keys, plan=Plan(streams=3, key_update=True))
    write_capture(tmp_path / "d.pcapng", dsb=False, keylog_path=tmp_path / "d.keys", client_port=50002)
    out_dir = tmp_path / "qlog"
    code, out, err = run(capsys, "convert", str(cap), "--keylog", str(keys), "-o", str(out_dir))
    assert code == 0 and "wrote 1 qlog file" in out
    source = read_capture(cap, keys)
    back = open_recording(out_dir)
    assert back.warnings == []  # the reader's own checks: every record parsed, nothing truncated
    [mine], [theirs] = back.traces, source.traces
    assert mine.info.vantage == "network" and mine.info.odcid == theirs.info.odcid
    assert mine.info.format == "json-seq" and mine.info.qlog_version == "0.3"
    assert mine.info.extra["vantage_flow"] == "client" and mine.info.extra["server"] == "10.1.0.1:4433"
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        assert (a.name, a.data) == (b.name, b.data)
        assert abs(a.time_ms - b.time_ms) < 0.002
    header = json.loads((out_dir / f"{theirs.info.odcid}.sqlog").read_bytes()[1:].split(b"\n", 1)[0])
    assert header["traces" if "traces" in header else "trace"]["vantage_point"]["type"] == "network"
    assert header["qlog_format"] == "JSON-SEQ" and header["trace"]["common_fields"]["ODCID"] == theirs.info.odcid
    # The converted files diagnose as the capture does.
    assert [f.kind for f in analyse(back).findings] == [f.kind for f in analyse(source).findings]
    code, _, err = run(capsys, "convert", str(cap), "--keylog", str(keys), "-o", str(out_dir))
    assert code == 1 and "already holds qlog files" in err


def test_convert_refuses_inputs_without_a_capture(tmp_path, capsys):
    code, _, err = run(capsys, "convert", str(ONE_QLOG_FILE), "-o", str(tmp_path / "o"))
    assert code == 1 and "no pcap or pcapng capture" in err


# ----------------------------------------------------------------------------- replay


async def test_replay_of_a_capture_shows_every_tab_and_the_stream_timeline(unanswered):
    cap, keys = unanswered
    app = DhtscopeApp(ReplaySource(str(cap), keylog=str(keys)))
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(
            lambda: app.main.analysis is not None and not app.source.replay.indexing, pilot, what="index and analysis"
        )
        main = app.main

        def node_names() -> list[str]:
            return sorted(r.split(" | ")[1] for r in table_text(main.query_one("#nodes-table")))

        await wait_until(lambda: len(node_names()) == 2, pilot, what="both ends as nodes")
        assert node_names() == ["10.0.0.1:50000", "10.1.0.1:4433"]
        await pilot.press("2")
        await wait_until(lambda: main.query_one("#connections-table").row_count() == 1, pilot, what="the connection")
        [conn] = table_text(main.query_one("#connections-table"))
        assert "2/128" in conn  # the client opened 2 of the 128 streams the server allows
        await pilot.press("3")
        await wait_until(lambda: main.query_one("#streams-table").row_count() == 2, pilot, what="two streams")
        streams = table_text(main.query_one("#streams-table"))
        assert len(streams) == 2 and all(r.endswith("answered") for r in streams)
        await pilot.press("6")
        assert main.query_one("#event-log").row_count() == app.source.replay.total > 0
        await pilot.press("7")
        await wait_until(lambda: main.query_one("#findings-table").row_count() >= 1, pilot, what="findings")
        findings = table_text(main.query_one("#findings-table"))
        assert findings[0].startswith("error | stream_not_answered | 10.1.0.1:4433")
        assert "#frame " in str(main.query_one("#finding-detail").render())
        await pilot.press("enter")
        assert isinstance(app.screen, StreamTimelineScreen)
        rows = table_text(app.screen.query_one("#timeline"))
        assert any("MISSING" in r for r in rows) and any("sent" in r for r in rows)
        assert "stream credit: 10.0.0.1:50000 allows" in str(app.screen.query_one("#timeline-head").render())
        await pilot.press("escape", "4", "5", "8")


def test_replay_of_converted_qlog_opens_like_the_capture(tmp_path, capsys):
    cap = tmp_path / "c.pcapng"
    write_capture(cap, plan=UNANSWERED)
    assert run(capsys, "convert", str(cap), "-o", str(tmp_path / "q"))[0] == 0
    source = ReplaySource(str(tmp_path / "q"))
    source.open_now()
    assert source.error is None and source.state.total > 0
    names = {n.name for n in source.nodes()}
    assert names == {"10.0.0.1:50000", "10.1.0.1:4433"}
    kinds = [f.kind for f in source.analyse().findings]
    assert kinds[0] == "stream_not_answered"


# ----------------------------------------------------------------------------- ground truth plumbing


def test_cluster_pcap_gives_each_member_its_capture_and_key_log(tmp_path):
    plan = ClusterPlan(providers=1, pcap_dir=str(tmp_path))
    for m in plan.build():
        i = m.args.index("--pcap")
        assert m.args[i + 1] == str(tmp_path / f"{m.name}.pcapng")
        assert m.args[m.args.index("--keylog") + 1] == str(tmp_path / f"{m.name}.keys")


def test_node_pcap_without_keylog_puts_the_keys_beside_the_capture(tmp_path):
    from dhtscope.node.cli import service_options
    from dhtscope.tui.cli import build_parser

    args = build_parser().parse_args(["node", "--pcap", str(tmp_path / "n.pcapng")])
    opts = service_options(args)
    assert opts.pcap == str(tmp_path / "n.pcapng") and opts.keylog == str(tmp_path / "n.keys")


async def test_a_node_captures_what_it_sends_and_receives_with_keys_that_open_it(tmp_path, make_nodes):
    a, b = await make_nodes(2, pcap=None)
    from dhtscope.node.node import Node

    node = Node(name="probe-me", pcap=str(tmp_path / "n.pcapng"), keylog=str(tmp_path / "n.keys"))
    await node.start()
    try:
        await node.ping(("127.0.0.1", a.port))
    finally:
        await node.stop()
    rec = read_capture(tmp_path / "n.pcapng", tmp_path / "n.keys")
    [trace] = rec.traces
    assert trace.info.extra["decrypted"] == "full" and trace.info.extra["client_name"] == "probe-me"
    assert trace.info.extra["version"].startswith(f"0x{V1:08x}")
