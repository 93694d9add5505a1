"""The TUI attached to real nodes through their control endpoints (`dhtscope attach`)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.tui import cell, table_text, wait_until

from dhtscope.node.cli import control_token
from dhtscope.node.control import ControlServer
from dhtscope.node.node import Node
from dhtscope.tracing.cli import UsageError
from dhtscope.tui.app import DhtscopeApp
from dhtscope.tui.commands import check_targets
from dhtscope.tui.screens.choose import ChooseScreen
from dhtscope.tui.sources.attach import AttachSource

ROOT = Path(__file__).resolve().parents[1]


async def test_attach_every_screen_reconnect_probe_and_scenario(sock_dir: str) -> None:
    registry = Node(name="registry", role="registry", request_timeout_s=1.0)
    provider = Node(name="provider1", role="provider", request_timeout_s=1.0)
    await registry.start()
    await provider.start()
    path = os.path.join(sock_dir, "registry.sock")
    server = ControlServer(registry, path)
    await server.start()
    servers = [server]
    try:
        await provider.bootstrap([("127.0.0.1", registry.port)])
        await provider.advertise("calculator", "127.0.0.1:9001")
        app = DhtscopeApp(AttachSource([path, os.path.join(sock_dir, "gone.sock")]))
        async with app.run_test(size=(120, 40)) as pilot:
            main = app.main
            nodes = main.query_one("#nodes-table")
            await wait_until(lambda: cell(nodes, 0, 5) == "connected", pilot, what="attached")
            rows = table_text(nodes)
            assert rows[0].split(" | ")[1] == "registry"
            assert rows[1].split(" | ")[5] == "waiting"  # nobody has listened on gone.sock yet
            assert main.node == "registry"

            await pilot.press("2")
            await wait_until(lambda: main.query_one("#connections-table").row_count() >= 1, pilot, what="conns")
            await pilot.press("4")
            await wait_until(
                lambda: any(provider.address in r for r in table_text(main.query_one("#routing-table"))),
                pilot,
                what="provider in the routing table",
            )
            await pilot.press("5")
            await wait_until(
                lambda: any("calculator" in r for r in table_text(main.query_one("#records-table"))),
                pilot,
                what="stored record",
            )

            await pilot.press("8", "tab")  # the operation chooser has the focus; tab to its argument
            await pilot.press(*"calculator", "enter")
            panel = main.query_one("#probe-panel")
            await wait_until(lambda: main.query_one("#probe-result").row_count() == 1, pilot, what="probe result")
            assert "127.0.0.1:9001" in table_text(main.query_one("#probe-result"))[0]
            assert table_text(main.query_one("#probe-rounds"))[0].startswith("round 1")
            assert not panel.running

            await pilot.press("escape", "6")
            log = main.query_one("#event-log")
            await wait_until(lambda: log.row_count() > 0, pilot, what="live events")
            assert any(log.event(i).node == "registry" for i in range(log.row_count()))

            await pilot.press("s")
            assert isinstance(app.screen, ChooseScreen)
            app.screen.dismiss("no-accept")
            await wait_until(lambda: registry.faults.no_accept, pilot, what="scenario on the attached node")

            await pilot.press("7")
            await wait_until(lambda: main.analysis is not None, pilot, what="analysis from live events")
            await pilot.press("3", "a")

            await server.close()
            await wait_until(lambda: cell(nodes, 0, 5) == "disconnected", pilot, what="disconnected")
            server = ControlServer(registry, path)
            await server.start()
            servers.append(server)
            await wait_until(lambda: cell(nodes, 0, 5) == "connected", pilot, timeout_s=10, what="reconnected")
    finally:
        for s in servers:
            await s.close()
        await provider.stop()
        await registry.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ATTACH = (
    "import sys, argparse\n"
    "from dhtscope.tui.commands import add_commands\n"
    "p = argparse.ArgumentParser(prog='dhtscope')\n"
    "add_commands(p.add_subparsers(dest='command', required=True))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.func(a))\n"
)


def test_attach_with_a_wrong_token_prints_one_refusal_line_and_exits_non_zero(tmp_path: Path) -> None:
    """The node takes its token from the environment, never the command line; so can attach."""
    port = _free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "dhtscope.node", "--json-lines", "--control", f"tcp:127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, DHTSCOPE_CONTROL_TOKEN="right-token"),
    )
    try:
        line = node.stdout.readline()  # type: ignore[union-attr]
        started_line = json.loads(line)
        assert started_line["event"] == "started"
        pin = ["--fingerprint", started_line["fingerprint"]]  # pinned: no trust-on-first-use warning
        assert b"right-token" not in Path(f"/proc/{node.pid}/cmdline").read_bytes()
        token_file = tmp_path / "token"
        token_file.write_text("wrong-token\n")
        for how, env in (
            (["--token", "wrong-token"], {}),
            (["--control-token-file", str(token_file)], {}),
            ([], {"DHTSCOPE_CONTROL_TOKEN": "wrong-token"}),
        ):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-c", ATTACH, "attach", f"tcp:127.0.0.1:{port}", *how, *pin],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )
            assert done.returncode != 0
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "refused" in lines[0] and "token" in lines[0], done.stderr
            assert done.stdout == ""  # the app never opened
            assert time.monotonic() - started < 20
        token_file.write_text("right-token\n")
        token = control_token(None, str(token_file))
        asyncio.run(check_targets([f"tcp:127.0.0.1:{port}"], token, wait=False))  # answered: the app may open
    finally:
        node.terminate()
        node.wait(10)


def test_the_control_token_comes_from_an_option_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHTSCOPE_CONTROL_TOKEN", "from-env")
    assert control_token(None, None) == "from-env"
    (tmp_path / "t").write_text("from-file\n")
    assert control_token(None, str(tmp_path / "t")) == "from-file"
    assert control_token("from-option", None) == "from-option"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        control_token(None, str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="cannot read token file"):
        control_token(None, str(tmp_path / "missing"))
    monkeypatch.delenv("DHTSCOPE_CONTROL_TOKEN")
    assert control_token(None, None) is None


@pytest.mark.parametrize("kind", ["missing", "regular file", "tcp nobody listens on"])
def test_attach_to_nothing_is_one_line_and_exit_1_without_opening_the_app(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dhtscope.tui import commands
    from dhtscope.tui.cli import main

    def no_app(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("the app opened")

    monkeypatch.setattr(commands, "_run_app", no_app)
    (tmp_path / "file").write_text("x")
    target = {
        "missing": "/nonexistent.sock",
        "regular file": str(tmp_path / "file"),
        "tcp nobody listens on": f"tcp:127.0.0.1:{_free_port()}",
    }[kind]
    assert main(["attach", target]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dhtscope attach: ") and "Traceback" not in err


def test_attach_wait_says_so_on_screen_and_exits_1_when_quit_before_any_node_answered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dhtscope.tui import commands
    from dhtscope.tui.cli import main

    seen: list[str] = []

    def headless(source: Any, select: str | None = None, last_resort: Any = None) -> int:
        async def drive() -> None:
            app = DhtscopeApp(source)
            async with app.run_test(size=(160, 30)) as pilot:
                nodes = app.main.query_one("#nodes-table")
                await wait_until(lambda: cell(nodes, 0, 5) == "waiting", pilot, what="waiting")
                seen.extend(table_text(nodes))

        asyncio.run(drive())
        return 0

    monkeypatch.setattr(commands, "_run_app", headless)
    assert main(["attach", "--wait", "/nonexistent.sock"]) == 1
    assert "waiting for the node to start" in seen[0]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quit before any node answered" in err
