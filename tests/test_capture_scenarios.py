"""Every fault scenario, recorded and captured by the same nodes at once: what the registry's own
capture shows agrees with what the recording shows, on every stream the network can judge."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from scenario_run import Played, play
from tshark import decoded_packets, tshark_packets

from dhtscope.node.scenarios import SCENARIOS
from dhtscope.tracing.analysis import DONE, ERROR, INFO, MISSING, Analysis, analyse
from dhtscope.tracing.capture import read_capture
from dhtscope.tracing.reader import open_recording

pytestmark = pytest.mark.slow

# The steps a capture sees: both ends' packets and ACKs, never the application.
WIRE_STEPS = ("sent", "acked", "received", "answered", "fin_opener", "fin_peer")
# A stream failure the recording names, and the name the wire gives the same streams.
WIRE_KIND = {
    "stream_not_delivered": "stream_not_answered",
    "no_response": "stream_not_answered",
    "stream_limit_exhausted": "stream_limit_exhausted",
}
# The steps the loss fault stands between: it drops datagrams between the registry's socket,
# where its capture is written, and its transport, whose trace the recording holds.
BEHIND_THE_FAULT = {"peer": ("received", "answered", "fin_peer"), "opener": ("sent", "acked", "fin_opener")}
# one-way-loss drops only what the registry sends, before its socket.
BEHIND_THE_SEND_FAULT = {"peer": ("answered", "fin_peer"), "opener": ("sent", "fin_opener")}
# Findings about connections and packets that both views name alike.
SAME_KIND = ("alpn_mismatch", "packet_loss", "handshake_failed", "handshake_timeout", "connection_error")


class _Plays(dict[str, Played]):
    """Each scenario played once for the whole module, when a test first needs it (a few seconds each)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, scenario: str) -> Played:
        self[scenario] = asyncio.run(play(self.root / scenario, scenario))
        return self[scenario]


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Played]:
    return _Plays(tmp_path_factory.mktemp("scenarios"))


def _both(p: Played) -> tuple[Analysis, Analysis]:
    recording = analyse(open_recording(p.recording))
    capture = analyse(read_capture(p.capture("registry"), p.keys("registry"), names=p.addresses))
    return recording, capture


def _refs(a: Analysis, kinds: dict[str, str] | tuple[str, ...]) -> dict[tuple[str, str | None], set[tuple[str, int]]]:
    out: dict[tuple[str, str | None], set[tuple[str, int]]] = {}
    for f in a.findings:
        if f.kind in kinds and f.severity == ERROR:
            kind = kinds[f.kind] if isinstance(kinds, dict) else f.kind
            out.setdefault((kind, f.node), set()).update(f.stream_refs)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_capture_names_the_streams_the_recording_names(played: dict[str, Played], scenario: str) -> None:
    recording, capture = _both(played[scenario])
    in_capture = {(s.connection, s.stream_id) for s in capture.streams}
    expected = {k: refs & in_capture for k, refs in _refs(recording, WIRE_KIND).items()}
    expected = {k: v for k, v in expected.items() if v}
    assert _refs(capture, tuple(WIRE_KIND.values())) == expected


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_stream_the_wire_can_judge_has_the_same_steps(played: dict[str, Played], scenario: str) -> None:
    recording, capture = _both(played[scenario])
    assert capture.streams or not recording.streams
    compared = 0
    for seen in capture.streams:
        logged = recording.stream(seen.connection, seen.stream_id)
        assert logged is not None, f"stream {seen.stream_id} of {seen.connection} is in the capture only"
        registry_is = "peer" if seen.peer == "registry" else "opener" if seen.opener == "registry" else None
        for step in WIRE_STEPS:
            want = logged.step(step).status
            if want not in (DONE, MISSING):
                continue  # the recording cannot tell either
            behind = {"loss": BEHIND_THE_FAULT, "one-way-loss": BEHIND_THE_SEND_FAULT}.get(scenario)
            if behind is not None and registry_is is not None and step in behind[registry_is]:
                continue  # the wire and the registry's transport differ by what the fault dropped between them
            assert seen.step(step).status == want, (scenario, seen.connection, seen.stream_id, step)
            compared += 1
    assert compared >= len(capture.streams)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_connection_and_packet_findings_match(played: dict[str, Played], scenario: str) -> None:
    recording, capture = _both(played[scenario])
    wanted = {(f.kind, f.node) for f in recording.findings if f.kind in SAME_KIND and f.severity != INFO}
    got = {(f.kind, f.node) for f in capture.findings if f.kind in SAME_KIND and f.severity != INFO}
    assert {w for w in wanted if w[1] == "registry"} <= got


def test_a_healthy_capture_raises_nothing_above_info(played: dict[str, Played]) -> None:
    _, capture = _both(played["healthy"])
    assert [f.kind for f in capture.findings if f.severity != INFO] == []
    assert capture.streams and all(s.missing is None for s in capture.streams)


def test_each_node_names_itself_in_its_capture(played: dict[str, Played]) -> None:
    p = played["healthy"]
    for name in ("registry", "client"):
        rec = read_capture(p.capture(name), p.keys(name))
        assert all(name in t.info.node for t in rec.traces) and rec.traces


def test_datagrams_dropped_on_send_never_reach_the_capture(played: dict[str, Played]) -> None:
    """The loss fault drops on send before the socket (gaps in the registry's numbering) and on
    receive after it (packets the registry never acknowledged)."""
    _, capture = _both(played["loss"])
    [loss] = [f for f in capture.findings if f.kind == "packet_loss" and f.node == "registry"]
    assert "missing from the sender's packet numbers" in loss.summary
    assert "never acknowledged though later ones were" in loss.summary


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
@pytest.mark.parametrize("scenario", ["healthy", "stream-limit"])
def test_a_node_written_capture_decodes_as_tshark_decodes_it(played: dict[str, Played], scenario: str) -> None:
    p = played[scenario]
    theirs = tshark_packets(p.capture("registry"), p.keys("registry"))
    ours = decoded_packets(read_capture(p.capture("registry"), p.keys("registry")))
    assert len(ours) == len(theirs) > 20
    assert ours == theirs
