"""The TUI around a node it runs itself (`dhtscope tui`): every screen, probes and a scenario switch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers.tui import table_text, wait_until

from dhtscope.node.keys import Identity
from dhtscope.node.node import Node, NodeError
from dhtscope.node.recording import NodeRecorder
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.screens.choose import ChooseScreen
from dhtscope.tui.sources.embedded import EmbeddedSource


def _source(tmp_path: Path, bootstrap_port: int) -> EmbeddedSource:
    identity = Identity.generate()

    def factory(record_dir: str) -> Node:
        recorder = NodeRecorder(record_dir, "me", identity.node_id.hex(), "node")
        return Node(identity, name="me", recorder=recorder, request_timeout_s=1.0)

    async def service(node: Node, stop: asyncio.Event) -> None:
        await node.bootstrap([("127.0.0.1", bootstrap_port)])
        await stop.wait()

    return EmbeddedSource(factory, record_dir=str(tmp_path / "rec"), service=service)


async def _probe(app: DhtscopeApp, pilot: Any, kind: str, *args: str) -> None:
    panel = app.main.query_one("#probe-panel")
    panel.set_kind(kind)
    await pilot.pause()
    for i, value in enumerate(args):
        box = panel.query_one(f"#probe-arg{i + 1}")
        box.value = value
    panel.query_one("#probe-arg1").focus()
    await pilot.press("enter")
    await wait_until(
        lambda: not panel.running and "running" not in str(panel.query_one("#probe-status").render()),
        pilot,
        what=f"{kind} probe",
    )


async def _peers(rec: Path) -> list[Node]:
    # The peers record into the same directory, so analysis sees both ends of each connection.
    nodes = []
    for name in ("registry", "provider"):
        identity = Identity.generate()
        node = Node(
            identity,
            name=name,
            role=name,
            request_timeout_s=1.0,
            recorder=NodeRecorder(rec, name, identity.node_id.hex(), name),
        )
        await node.start()
        nodes.append(node)
    await nodes[1].bootstrap([("127.0.0.1", nodes[0].port)])
    return nodes


async def test_embedded_every_screen_probe_and_scenario(tmp_path: Path) -> None:
    registry, provider = await _peers(tmp_path / "rec")
    try:
        await _embedded(tmp_path, registry, provider)
    finally:
        await asyncio.gather(registry.stop(), provider.stop())


async def _embedded(tmp_path: Path, registry: Node, provider: Node) -> None:
    await provider.advertise("calculator", "127.0.0.1:9001")
    app = DhtscopeApp(_source(tmp_path, registry.port))
    async with app.run_test(size=(120, 40)) as pilot:
        main = app.main
        await wait_until(
            lambda: main.node == "me" and main.query_one("#nodes-table").row_count() == 1,
            pilot,
            what="the embedded node",
        )
        await wait_until(lambda: len(app.source.node.routing) >= 2, pilot, what="bootstrap")
        assert "running" in table_text(main.query_one("#nodes-table"))[0]

        await pilot.press("2")
        await wait_until(lambda: main.query_one("#connections-table").row_count() >= 1, pilot, what="connections")
        # The node's connection limit and its use, from Node.snapshot()["limits"].
        limits = main.query_one("#connection-limits")
        await wait_until(lambda: "slots" in str(limits.render()), pilot, what="connection limits")
        line = str(limits.render())
        view = app.source.node.limits_view()
        assert f"/{view['admission']['max_connections']} " in line, line
        assert "least recently used" in line and "refused 0" in line

        await pilot.press("4")
        await wait_until(lambda: main.query_one("#routing-table").row_count() >= 2, pilot, what="routing rows")
        addresses = {r.split(" | ")[3] for r in table_text(main.query_one("#routing-table"))}
        assert {registry.address, provider.address} <= addresses

        await pilot.press("8")
        await _probe(app, pilot, "find_value", "calculator")
        rounds = table_text(main.query_one("#probe-rounds"))
        assert rounds[0].startswith("round 1: asked")
        result = table_text(main.query_one("#probe-result"))
        assert len(result) == 1 and "127.0.0.1:9001" in result[0] and "signature valid" in result[0]

        await _probe(app, pilot, "store", "mykey", "myvalue")
        assert "stored" in table_text(main.query_one("#probe-result"))[0]
        await _probe(app, pilot, "ping", "not-an-address")
        assert "failed" in str(main.query_one("#probe-status").render())

        await pilot.press("escape", "5")
        await wait_until(
            lambda: any("myvalue" in r for r in table_text(main.query_one("#records-table"))), pilot, what="own record"
        )

        await pilot.press("6")
        log = main.query_one("#event-log")
        await wait_until(lambda: log.row_count() > 0, pilot, what="events")
        await pilot.press("space")
        frozen = log.row_count()
        await registry.ping(app.source.node.contact())
        await pilot.pause(0.3)
        assert log.row_count() == frozen and app.source.events.end > frozen
        await pilot.press("space")
        await wait_until(lambda: log.row_count() == app.source.events.end, pilot, what="resume")

        await pilot.press("s")
        assert isinstance(app.screen, ChooseScreen)
        app.screen.dismiss("no-accept")
        await wait_until(lambda: app.source.node.faults.no_accept, pilot, what="scenario switched")
        try:
            await registry.ping(app.source.node.contact())
        except NodeError:
            pass
        await pilot.press("7")
        await wait_until(
            lambda: any(f.kind == "stream_not_delivered" for f in (main.analysis.findings if main.analysis else [])),
            pilot,
            timeout_s=20,
            what="stream_not_delivered finding",
        )
        assert any("stream_not_delivered" in r for r in table_text(main.query_one("#findings-table")))

        await pilot.press("3", "a")
        assert any(r.endswith("delivered") for r in table_text(main.query_one("#streams-table")))


async def test_stream_limit_switched_in_the_embedded_tui_grants_its_128_streams(tmp_path: Path, raw_peer) -> None:
    """The embedded TUI switches a scenario through the node, as the control endpoint does."""
    from dhtscope.node.constants import MAX_STREAMS_PER_CONNECTION
    from dhtscope.node.scenarios import STREAM_LIMIT_SCENARIO_STREAMS

    identity = Identity.generate()
    source = EmbeddedSource(lambda record_dir: Node(identity, name="me"), record_dir=str(tmp_path / "rec"))
    await source.start()
    try:
        before = await raw_peer(source.node.port)
        assert before.conn.quic.peer_stream_credit() == MAX_STREAMS_PER_CONNECTION
        result = await source.set_scenario("me", "stream-limit")
        assert "stream-limit" in result["faults"]
        assert any("stream credit" in note for note in result["notes"])
        after = await raw_peer(source.node.port)
        assert after.conn.quic.peer_stream_credit() == STREAM_LIMIT_SCENARIO_STREAMS
    finally:
        await source.stop()
