"""The qlog reader against real files from other stacks and files of every shape we make."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import orjson
import pytest
from conftest import SAMPLES, needs_samples

from dhtscope.tracing.model import Recording
from dhtscope.tracing.reader import (
    SqlogTrace,
    TraceReadError,
    canonical_name,
    open_recording,
    open_trace_file,
    read_nodes,
)

RS = b"\x1e"
REF_MS = 1_700_000_000_000.0


def _seq(path: Path, records: list[dict], *, sep: bytes = RS) -> Path:
    """Write records as JSON-SEQ (sep=RS) or NDJSON (sep=b'')."""
    with open(path, "wb") as fh:
        for record in records:
            fh.write(sep + orjson.dumps(record) + b"\n")
    return path


def _header(odcid: str = "c0ffee", vantage: str = "client", **common: object) -> dict:
    fields = {"ODCID": odcid, "reference_time": REF_MS, "time_format": "relative", **common}
    return {
        "qlog_version": "0.3",
        "qlog_format": "JSON-SEQ",
        "trace": {"vantage_point": {"type": vantage, "name": "n1"}, "common_fields": fields},
    }


def _pkt(i: int, t: float | None = None) -> dict:
    return {
        "time": i * 0.5 if t is None else t,
        "name": "transport:packet_sent",
        "data": {"header": {"packet_number": i, "packet_type": "1RTT"}, "frames": [{"frame_type": "ping"}]},
    }


def _monotonic(trace) -> bool:  # type: ignore[no-untyped-def]
    times = [e.time_ms for e in trace]
    return all(b >= a for a, b in zip(times, times[1:], strict=False))


# --------------------------------------------------------------------------- real samples

SAMPLE_EXPECT = {
    # file: (format, vantage, odcid, events, names that must be present, first time_ms or None)
    "aioquic_client_success.qlog": (
        "qlog-0.3-json",
        "client",
        "fcabe9223fe7d8c1",
        80,
        {
            "quic:packet_sent",
            "quic:packet_received",
            "quic:recovery_metrics_updated",
            "quic:key_updated",
            "http:frame_parsed",
        },
        1745672395021.2815,
    ),
    "aioquic_draft01_parallel10.qlog": (
        "draft-01-json",
        "client",
        "8b8c8ba3cae71a66",
        1549,
        {"quic:packet_sent", "quic:packet_received", "quic:spin_bit_updated", "http:frame_created"},
        1575028855415.0,
    ),
    "aioquic_server_failed.qlog": (
        "qlog-0.3-json",
        "server",
        "3d7719d94183cb7e",
        37,
        {"quic:packet_sent", "quic:packet_dropped", "quic:parameters_set"},
        1745672125973.8923,
    ),
    "picoquic_binlog_ref.qlog": ("draft-00-json", "client", None, 77, {"quic:packet_sent"}, None),
    "quicgo_client_ndjson_truncated.qlog": (
        "ndjson",
        "client",
        "e030424f204c09e66748ea",
        11401,
        {
            "quic:packet_sent",
            "quic:packet_received",
            "quic:recovery_metrics_updated",
            "quic:connection_started",
            "quic:congestion_state_updated",
        },
        1677497814774.5974 + 0.054586,
    ),
    "quinn_moq_clock_pub_loss.sqlog": (
        "json-seq",
        "client",
        "8e28814968061c0b43ad47f15dec5da8f186b50c",
        113,
        {"quic:packet_sent", "quic:packet_received", "moq-transfork-03:frame_created"},
        1753559625721.0,
    ),
}


@needs_samples
@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECT))
def test_sample(name: str) -> None:
    fmt, vantage, odcid, count, names, first_ms = SAMPLE_EXPECT[name]
    rec = open_recording(SAMPLES / name)
    assert len(rec.traces) == 1
    trace = rec.traces[0]
    assert trace.info.format == fmt
    assert trace.info.vantage == vantage
    assert trace.info.odcid == odcid
    assert len(trace) == count
    seen = {e.name for e in trace}
    assert names <= seen, names - seen
    # Nothing keeps a draft-specific category that the vocabulary maps to quic:.
    assert not any(
        n.split(":")[0] in ("transport", "security", "connectivity", "recovery") or n.startswith("quic-") for n in seen
    )
    assert [e.record for e in trace.iter_range(0, 5)] == list(range(min(5, count)))
    assert _monotonic(trace)
    if first_ms is not None:
        assert trace[0].time_ms == pytest.approx(first_ms, abs=1e-3)
        start, end = trace.time_range()
        assert 1.5e12 < start <= end < 2e12  # absolute epoch ms
        assert not [w for w in trace.info.warnings if "truncated" not in w]


@needs_samples
def test_sample_quicgo_truncated_last_line_is_skipped_with_warning() -> None:
    path = SAMPLES / "quicgo_client_ndjson_truncated.qlog"
    rec = open_recording(path)
    trace = rec.traces[0]
    assert any("truncated" in w for w in trace.info.warnings)
    assert any("truncated" in w and str(path) in w for w in rec.warnings)
    last = trace[len(trace) - 1]
    assert last.name == "quic:packet_sent" and last.data["header"]["packet_number"] == 3704
    assert trace.info.reference_time_ms == pytest.approx(1677497814774.5974)
    assert trace.time_range()[1] == pytest.approx(1677497814774.5974 + 106880.228364, abs=1e-3)


@needs_samples
def test_sample_quinn_keeps_raw_names_and_epoch_reference() -> None:
    trace = open_recording(SAMPLES / "quinn_moq_clock_pub_loss.sqlog").traces[0]
    assert trace[0].raw_name == "quic-10:packet_sent"
    assert trace[0].name == "quic:packet_sent"
    assert trace.info.reference_time_ms == 0.0  # epoch 1970: times are already absolute
    assert trace.info.node == "clock-pub"
    assert "urn:ietf:params:qlog:events:quic-10" in trace.info.extra["event_schemas"]


@needs_samples
def test_sample_draft01_string_times_and_frames() -> None:
    trace = open_recording(SAMPLES / "aioquic_draft01_parallel10.qlog").traces[0]
    assert trace.info.reference_time_ms == 1575028855415.0
    assert trace.time_range() == (1575028855415.0, 1575028855415.0 + 2085)
    assert trace[0].raw_name == "transport:parameters_set"


@needs_samples
def test_sample_picoquic_relative_times_warn_and_frames_survive() -> None:
    trace = open_recording(SAMPLES / "picoquic_binlog_ref.qlog").traces[0]
    assert trace.info.reference_time_ms is None
    assert any("relative" in w for w in trace.info.warnings)
    assert trace.info.node == "backend-67"
    frame_types = {f["frame_type"] for e in trace for f in e.data["frames"]}
    assert {"path_abandon", "reset_stream_at", "ack_frequency", "unknown"} <= frame_types
    assert len(frame_types) == 38


@needs_samples
def test_samples_directory_reads_every_file() -> None:
    rec = open_recording(SAMPLES)
    assert len(rec.traces) == len(SAMPLE_EXPECT)
    assert {Path(t.info.path).name for t in rec.traces} == set(SAMPLE_EXPECT)
    assert any("truncated" in w for w in rec.warnings)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("transport:packet_sent", "quic:packet_sent"),
        ("security:key_updated", "quic:key_updated"),
        ("quic-10:packet_received", "quic:packet_received"),
        ("quic:stream_data_moved", "quic:stream_data_moved"),
        ("connectivity:spin_bit_updated", "quic:spin_bit_updated"),
        ("recovery:metrics_updated", "quic:recovery_metrics_updated"),
        ("recovery:packet_lost", "quic:packet_lost"),
        ("dht:rpc_sent", "dht:rpc_sent"),
        ("http:frame_parsed", "http:frame_parsed"),
        ("moq-transfork-03:frame_created", "moq-transfork-03:frame_created"),
    ],
)
def test_canonical_names(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


# --------------------------------------------------------------------------- generated files


def test_qlog03_json_with_several_traces(tmp_path: Path) -> None:
    from aioquic.quic.logger import QuicLogger

    logger = QuicLogger()
    client = logger.start_trace(is_client=True, odcid=bytes.fromhex("AABBCC"))
    server = logger.start_trace(is_client=False, odcid=bytes.fromhex("AABBCC"))
    other = logger.start_trace(is_client=True, odcid=bytes.fromhex("0102"))
    for i, trace in enumerate((client, server, other)):
        for _ in range(i + 2):
            trace.log_event(category="transport", event="packet_sent", data={"frames": []})
        trace.log_event(category="recovery", event="metrics_updated", data={"cwnd": 1})
    path = tmp_path / "all.qlog"
    path.write_text(json.dumps(logger.to_dict()))  # one line, as QuicFileLogger writes it

    rec = open_recording(path)
    assert [t.info.index for t in rec.traces] == [0, 1, 2]
    assert [t.info.vantage for t in rec.traces] == ["client", "server", "client"]
    assert [t.info.odcid for t in rec.traces] == ["aabbcc", "aabbcc", "0102"]
    assert [len(t) for t in rec.traces] == [3, 4, 5]
    assert rec.traces[2][-1].name == "quic:recovery_metrics_updated"
    assert all(t.info.format == "qlog-0.3-json" and not t.info.warnings for t in rec.traces)
    assert rec.traces[0][0].time_ms > 1.5e12


def test_contained_document_skips_trace_errors_with_warning(tmp_path: Path) -> None:
    doc = {
        "file_schema": "urn:ietf:params:qlog:file:contained",
        "serialization_format": "application/qlog+json",
        "traces": [
            {"vantage_point": {"type": "client"}, "common_fields": {"group_id": "01"}, "events": [_pkt(0, t=REF_MS)]},
            {"error_description": "server trace lost", "vantage_point": {"type": "server"}},
        ],
    }
    path = tmp_path / "contained.qlog"
    path.write_bytes(orjson.dumps(doc))
    rec = open_recording(path)
    assert len(rec.traces) == 1
    assert rec.traces[0].info.format == "qlog-contained-json"
    assert any("server trace lost" in w for w in rec.warnings)


def test_current_draft_json_seq_relative_to_rfc3339_epoch(tmp_path: Path) -> None:
    header = {
        "file_schema": "urn:ietf:params:qlog:file:sequential",
        "serialization_format": "application/qlog+json-seq",
        "trace": {
            "vantage_point": {"type": "server", "name": "edge"},
            "common_fields": {
                "group_id": "DEADBEEF",
                "time_format": "relative_to_epoch",
                "reference_time": {"clock_type": "system", "epoch": "2024-01-01T00:00:00Z"},
            },
            "event_schemas": ["urn:ietf:params:qlog:events:quic-10"],
        },
    }
    events = [
        {"time": 1.5, "name": "quic-10:packet_sent", "data": {"header": {"packet_number": 0}}},
        {"time": 2.0, "name": "quic-10:stream_data_moved", "data": {"stream_id": 0, "from": "application"}},
        {"time": 3.0, "name": "quic-10:recovery_metrics_updated", "data": {"cwnd": 5}},
    ]
    path = _seq(tmp_path / "draft.sqlog", [header, *events])
    trace = open_recording(path).traces[0]
    epoch_ms = 1704067200000.0
    assert trace.info.reference_time_ms == epoch_ms
    assert [e.time_ms for e in trace] == [epoch_ms + 1.5, epoch_ms + 2.0, epoch_ms + 3.0]
    assert [e.name for e in trace] == ["quic:packet_sent", "quic:stream_data_moved", "quic:recovery_metrics_updated"]
    assert trace.info.odcid == "deadbeef"
    assert (trace.info.vantage, trace.info.node, trace.info.format) == ("server", "edge", "json-seq")
    assert trace.info.qlog_version == "urn:ietf:params:qlog:file:sequential"
    assert not trace.info.warnings


def test_delta_times_are_summed(tmp_path: Path) -> None:
    header = _header(time_format="relative_to_previous_event")
    path = _seq(tmp_path / "delta.sqlog", [header] + [_pkt(i, t=10.0) for i in range(5)])
    trace = open_trace_file(path)[0]
    # Random access before sequential access must still sum from the start.
    assert trace[3].time_ms == REF_MS + 40.0
    assert [e.time_ms for e in trace] == [REF_MS + 10.0 * (i + 1) for i in range(5)]


def test_ndjson_sniffed_despite_extension_and_blank_lines(tmp_path: Path) -> None:
    header = {
        "qlog_format": "NDJSON",
        "qlog_version": "draft-02",
        "trace": {
            "vantage_point": {"type": "client"},
            "common_fields": {"ODCID": "0A0B", "reference_time": REF_MS, "time_format": "relative"},
        },
    }
    lines = [orjson.dumps(header)] + [orjson.dumps(_pkt(i)) for i in range(6)]
    lines.insert(3, b"")  # a stray blank line is not an event
    path = tmp_path / "trace.json"  # the extension lies: content decides
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    trace = open_trace_file(path)[0]
    assert trace.info.format == "ndjson"
    assert trace.info.odcid == "0a0b"
    assert len(trace) == 6
    assert [e.data["header"]["packet_number"] for e in trace] == list(range(6))
    assert trace[5].time_ms == REF_MS + 2.5
    assert not trace.info.warnings


def test_single_json_document_named_sqlog_is_sniffed(tmp_path: Path) -> None:
    doc = {"qlog_version": "0.3", "traces": [{"vantage_point": {"type": "client"}, "events": [_pkt(0, t=REF_MS)]}]}
    path = tmp_path / "lies.sqlog"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    trace = open_trace_file(path)[0]
    assert trace.info.format == "qlog-0.3-json"
    assert trace[0].time_ms == REF_MS


def test_draft01_microseconds_and_event_fields(tmp_path: Path) -> None:
    doc = {
        "qlog_version": "draft-01",
        "traces": [
            {
                "vantage_point": {"type": "server"},
                "configuration": {"time_units": "us"},
                "common_fields": {"group_id": "ff00", "reference_time": str(int(REF_MS * 1000))},
                "event_fields": ["relative_time", "category", "event_type", "data"],
                "events": [
                    ["0", "transport", "packet_received", {"frames": []}],
                    ["2500", "recovery", "packet_lost", {}],
                    "junk",
                ],
            }
        ],
    }
    path = tmp_path / "old.qlog"
    path.write_bytes(orjson.dumps(doc))
    trace = open_trace_file(path)[0]
    assert [e.time_ms for e in trace] == [REF_MS, REF_MS + 2.5]
    assert [e.name for e in trace] == ["quic:packet_received", "quic:packet_lost"]
    assert trace.info.odcid == "ff00"
    assert any("malformed" in w for w in trace.info.warnings)


def test_relative_times_without_reference_are_kept_and_flagged(tmp_path: Path) -> None:
    header = {"qlog_format": "JSON-SEQ", "trace": {"vantage_point": {"type": "client"}}}
    path = _seq(tmp_path / "rel.sqlog", [header, _pkt(0, t=5.0), _pkt(1, t=7.0)])
    trace = open_trace_file(path)[0]
    assert [e.time_ms for e in trace] == [5.0, 7.0]
    assert trace.info.reference_time_ms is None
    assert any("relative" in w for w in trace.info.warnings)


def test_truncated_json_seq_last_record_skipped(tmp_path: Path) -> None:
    path = _seq(tmp_path / "cut.sqlog", [_header()] + [_pkt(i) for i in range(10)])
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # cut into the last record
    rec = open_recording(path)
    trace = rec.traces[0]
    assert len(trace) == 9
    assert trace[-1].data["header"]["packet_number"] == 8
    assert any("truncated" in w for w in trace.info.warnings)
    assert any("truncated" in w and "cut.sqlog" in w for w in rec.warnings)


def test_corrupt_middle_record_keeps_numbering(tmp_path: Path) -> None:
    path = tmp_path / "mid.sqlog"
    good = [RS + orjson.dumps(r) + b"\n" for r in [_header()] + [_pkt(i) for i in range(5)]]
    good[3] = RS + b'{"time": 1.0, "name": "transport:pack\n'  # event 2 is damaged
    path.write_bytes(b"".join(good))
    trace = open_trace_file(path)[0]
    assert len(trace) == 5
    assert trace[2].name == "qlog:unreadable_record"
    assert trace[2].time_ms == trace[1].time_ms
    assert trace[3].data["header"]["packet_number"] == 3 and trace[3].record == 3
    assert any("corrupt record 2" in w for w in trace.info.warnings)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"hello, this is not qlog\n", "not a qlog"),
        (bytes(range(256)), "not a qlog"),
        (b'{"traces": [', "not valid JSON"),
        (b'{"some": "json"}', "not a qlog"),
        (b'{"qlog_version": "0.3", "traces": []}', "no readable trace"),
        (b'{"file_schema": "urn:ietf:params:qlog:file:contained", "traces": [{"error_description": "boom"}]}', "boom"),
        (b"\x1e{broken\n", "no complete JSON record"),
        (b"\x1e[1, 2]\n", "not a qlog"),
    ],
)
def test_unreadable_files_raise_one_line_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.qlog"
    path.write_bytes(content)
    with pytest.raises(TraceReadError) as err:
        open_recording(path)
    message = str(err.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(TraceReadError, match="nope.sqlog"):
        open_recording(tmp_path / "nope.sqlog")


def test_several_paths_make_one_recording(tmp_path: Path) -> None:
    a = _seq(tmp_path / "a.sqlog", [_header("01")] + [_pkt(0)])
    b = _seq(tmp_path / "b.sqlog", [_header("02", "server")] + [_pkt(0), _pkt(1)])
    rec = open_recording(a, b)
    assert isinstance(rec, Recording)
    assert [(t.info.odcid, len(t)) for t in rec.traces] == [("01", 1), ("02", 2)]


# --------------------------------------------------------------------------- recording dirs


def _node_dir(root: Path, name: str, entry: bool = True) -> Path:
    node = root / name
    node.mkdir(parents=True)
    if entry:
        (node / "node.json").write_text(
            json.dumps({"name": name, "id": name * 4, "address": f"127.0.0.1:{len(name)}", "role": "peer", "dir": name})
        )
    return node


def test_recording_directory_with_manifest(tmp_path: Path) -> None:
    alpha = _node_dir(tmp_path, "alpha")
    beta = _node_dir(tmp_path, "beta-dir", entry=False)
    late = _node_dir(tmp_path, "late")  # started after the manifest was written
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "dhtscope_version": "0.1.0",
                "created_ms": REF_MS,
                "nodes": [
                    {"name": "alpha", "id": "aa", "address": "127.0.0.1:1", "role": "bootstrap", "dir": "alpha"},
                    {"name": "beta", "id": "bb", "address": "127.0.0.1:2", "role": "peer", "dir": "beta-dir"},
                ],
            }
        )
    )
    _seq(alpha / "node.sqlog", [_header(vantage="unknown"), {"time": 1, "name": "dht:node_started", "data": {}}])
    _seq(alpha / "abcd-client-0.sqlog", [_header("abcd"), _pkt(0)])
    _seq(beta / "abcd-server-0.sqlog", [_header("abcd", "server"), _pkt(0)])
    _seq(late / "ef-client-0.sqlog", [_header("ef"), _pkt(0)])
    (alpha / "notes.txt").write_text("not a trace")
    (tmp_path / "results.json").write_text('{"ok": true}')  # other JSON is ignored quietly
    (alpha / "broken.sqlog").write_bytes(b"garbage")

    rec = open_recording(tmp_path)
    assert rec.dhtscope_version == "0.1.0"
    assert [(n.name, n.node_id, n.role, n.dir) for n in rec.nodes] == [
        ("alpha", "aa", "bootstrap", "alpha"),
        ("beta", "bb", "peer", "beta-dir"),
        ("late", "latelatelatelate", "peer", "late"),
    ]
    by_file = {Path(t.info.path).name: t.info for t in rec.traces}
    assert set(by_file) == {"node.sqlog", "abcd-client-0.sqlog", "abcd-server-0.sqlog", "ef-client-0.sqlog"}
    assert by_file["abcd-client-0.sqlog"].node == "alpha"
    assert by_file["abcd-server-0.sqlog"].node == "beta"  # manifest name, not the dir name
    assert by_file["ef-client-0.sqlog"].node == "late"
    assert by_file["node.sqlog"].vantage == "unknown"
    assert any("broken.sqlog" in w for w in rec.warnings)
    assert not any("results.json" in w for w in rec.warnings)
    assert read_nodes(tmp_path) == rec.nodes  # the same nodes, without opening a trace


def test_recording_directory_without_manifest(tmp_path: Path) -> None:
    gamma = _node_dir(tmp_path, "gamma")
    bare = _node_dir(tmp_path, "bare", entry=False)
    _seq(gamma / "01-client-0.sqlog", [_header("01"), _pkt(0)])
    _seq(bare / "01-server-0.qlognd", [_header("01", "server"), _pkt(0)], sep=b"")
    rec = open_recording(tmp_path)
    assert [n.name for n in rec.nodes] == ["gamma"]
    assert sorted((t.info.node, t.info.vantage, t.info.format) for t in rec.traces) == [
        ("bare", "server", "ndjson"),
        ("gamma", "client", "json-seq"),
    ]
    assert read_nodes(tmp_path) == rec.nodes
    assert read_nodes(bare / "01-server-0.qlognd") == []  # a trace file names its node in its header


# --------------------------------------------------------------------------- large and live files


@pytest.fixture(scope="module")
def big_sqlog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.sqlog"
    chunks = [RS + orjson.dumps(_header()) + b"\n"]
    chunks += [RS + orjson.dumps(_pkt(i)) + b"\n" for i in range(100_000)]
    path.write_bytes(b"".join(chunks))
    return path


def test_big_sqlog_is_lazy_and_random_access_is_right(big_sqlog: Path) -> None:
    trace = open_trace_file(big_sqlog)[0]
    assert isinstance(trace, SqlogTrace)
    assert len(trace) == 100_000
    assert not trace._cache  # opening parsed no events (the first one aside, uncached)
    rng = random.Random(7)
    for i in rng.sample(range(100_000), 3000):
        event = trace[i]
        assert event.record == i
        assert event.data["header"]["packet_number"] == i
        assert event.time_ms == REF_MS + i * 0.5
    assert len(trace._cache) <= SqlogTrace.CACHE_SIZE
    assert trace[-1].data["header"]["packet_number"] == 99_999
    with pytest.raises(IndexError):
        trace[100_000]
    assert trace.time_range() == (REF_MS, REF_MS + 99_999 * 0.5)
    window = list(trace.iter_range(50_000, 50_010))
    assert [e.record for e in window] == list(range(50_000, 50_010))
    assert [e.data["header"]["packet_number"] for e in trace.iter_range(99_998, 200_000)] == [99_998, 99_999]


def test_a_pickled_trace_keeps_its_index_and_maps_the_file_again(tmp_path: Path) -> None:
    import pickle

    path = _seq(tmp_path / "live.sqlog", [_header()] + [_pkt(i) for i in range(1000)])
    trace = open_trace_file(path)[0]
    assert trace[10].record == 10  # mapped and cached: neither travels
    copy = pickle.loads(pickle.dumps(trace))
    assert copy._mm is None and not copy._cache
    assert copy._marks == trace._marks and copy.info == trace.info and len(copy) == 1000
    assert [e.data["header"]["packet_number"] for e in copy.iter_range(995, 1000)] == [995, 996, 997, 998, 999]
    assert copy[500] == trace[500]
    with open(path, "ab") as fh:
        fh.write(RS + orjson.dumps(_pkt(1000)) + b"\n")
    assert copy.refresh() == 1 and copy[-1].data["header"]["packet_number"] == 1000
    copy.close()


def test_refresh_picks_up_appended_events(tmp_path: Path) -> None:
    path = _seq(tmp_path / "live.sqlog", [_header()] + [_pkt(i) for i in range(1000)])
    trace = open_trace_file(path)[0]
    assert isinstance(trace, SqlogTrace)
    assert trace.refresh() == 0
    with open(path, "ab") as fh:
        for i in range(1000, 1500):
            fh.write(RS + orjson.dumps(_pkt(i)) + b"\n")
        partial = RS + orjson.dumps(_pkt(1500)) + b"\n"
        fh.write(partial[:20])  # the writer is mid-record
    assert trace.refresh() == 500
    assert len(trace) == 1500
    assert trace[1499].data["header"]["packet_number"] == 1499
    assert any("truncated" in w for w in trace.info.warnings)
    with open(path, "ab") as fh:
        fh.write(partial[20:])
    assert trace.refresh() == 1
    assert trace[-1].data["header"]["packet_number"] == 1500
    assert not trace.info.warnings  # the record completed: no longer truncated
    assert trace.time_range()[1] == REF_MS + 1500 * 0.5


def test_refresh_ndjson_line_completed_later(tmp_path: Path) -> None:
    path = tmp_path / "live.qlognd"
    path.write_bytes(orjson.dumps(_header()) + b"\n" + orjson.dumps(_pkt(0)))  # no newline yet
    trace = open_trace_file(path)[0]
    assert len(trace) == 1  # a complete last line counts even without its newline
    with open(path, "ab") as fh:
        fh.write(b"\n" + orjson.dumps(_pkt(1)) + b"\n")
    assert trace.refresh() == 1
    assert [e.data["header"]["packet_number"] for e in trace] == [0, 1]


def test_many_files_do_not_exhaust_descriptors(tmp_path: Path) -> None:
    import dhtscope.tracing.reader as reader

    paths = [_seq(tmp_path / f"{i:03d}-client-0.sqlog", [_header(f"{i:04x}"), _pkt(i)]) for i in range(40)]
    old = reader._POOL.capacity
    reader._POOL.capacity = 8
    try:
        rec = open_recording(tmp_path)
        for _ in range(2):
            for trace, path in zip(rec.traces, paths, strict=True):
                assert trace[0].data["header"]["packet_number"] == int(path.name[:3])
        assert sum(t._mm is not None for t in rec.traces) <= 8
    finally:
        reader._POOL.capacity = old
    assert len(os.listdir(tmp_path)) == 40


# ----------------------------------------------------------------------------- bad files, big documents


def test_pipes_devices_and_directories_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "trace.qlog"
    os.mkfifo(fifo)
    for path, what in (
        (fifo, "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),
        (tmp_path, "a directory"),
    ):
        with pytest.raises(TraceReadError, match=what):
            open_trace_file(path)
    with pytest.raises(TraceReadError, match="not a regular file"):
        open_recording(fifo)


@needs_samples
@pytest.mark.parametrize(
    "name", ["aioquic_client_success.qlog", "aioquic_draft01_parallel10.qlog", "picoquic_binlog_ref.qlog"]
)
def test_large_documents_read_lazily_give_the_same_traces(monkeypatch, name):
    from dhtscope.tracing import reader

    eager = open_trace_file(SAMPLES / name)
    monkeypatch.setattr(reader, "LAZY_DOC_MIN_BYTES", 0)
    lazy = open_trace_file(SAMPLES / name)
    assert [type(t).__name__ for t in lazy] == ["LazyDocTrace"] * len(eager)
    for a, b in zip(lazy, eager, strict=True):
        assert a.info == b.info
        assert list(a) == list(b)
        assert a[len(a) - 1] == b[len(b) - 1]


def test_a_document_the_lazy_walker_cannot_follow_is_read_eagerly(monkeypatch, tmp_path):
    from dhtscope.tracing import reader

    monkeypatch.setattr(reader, "LAZY_DOC_MIN_BYTES", 0)
    path = tmp_path / "odd.qlog"
    # Non-ASCII text: string and byte offsets differ, so the whole document is parsed.
    doc = {
        "qlog_version": "0.3",
        "traces": [{"title": "é", "events": [{"time": 1, "name": "transport:x", "data": {}}]}],
    }
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    [trace] = open_trace_file(path)
    assert type(trace).__name__ == "DocTrace" and trace.info.title == "é" and len(trace) == 1
