"""The `dhtscope` command: each layer's commands, one-line errors, described options, light imports."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.waiting import process_running

from dhtscope.tui.cli import build_parser, main

COMMANDS = ("node", "cluster", "probe", "sim", "diagnose", "tui", "attach", "replay", "demo")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_layer_registers_its_commands() -> None:
    assert set(COMMANDS) <= set(_subparsers(build_parser()))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_is_described(command: str) -> None:
    sub = _subparsers(build_parser())[command]
    undescribed = [
        a.dest
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction) and (a.help is None or a.help == argparse.SUPPRESS or not a.help)
    ]
    assert undescribed == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["probe", "--to", "127.0.0.1:1", "advertise", "calculator", "notanendpoint"], "must be HOST:PORT"),
        (["probe", "--to", "127.0.0.1:1", "ping", "extra"], "ping takes no arguments"),
        (["probe", "--to", "127.0.0.1:1", "store", "only-a-key"], "store needs KEY and VALUE"),
    ],
)
def test_probe_mistakes_are_one_line_and_exit_non_zero(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "--advertise", "calc=garbage"],
        ["node", "--request-timeout", "-1"],
        ["node", "--listen", "::1:4500"],
        ["cluster", "--base-port", "80"],
        ["cluster", "--providers", "0"],
        ["sim", "--nodes", "1"],
        ["probe", "--to", "127.0.0.1:1", "--timeout", "0", "ping"],
    ],
)
def test_numbers_and_addresses_are_checked_where_they_enter(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "see dhtscope" in err


def test_diagnose_refuses_a_fifo_instead_of_hanging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.qlog"
    os.mkfifo(fifo)
    assert main(["diagnose", str(fifo)]) == 1
    assert "not a regular file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["empty file", "binary file", "empty directory", "/dev/null", "only a manifest"])
def test_replay_of_something_that_holds_no_qlog_is_one_line_and_exit_1(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dhtscope.tui import commands

    def no_app(*args: object, **kwargs: object) -> int:
        raise AssertionError("the app opened")

    monkeypatch.setattr(commands, "_run_app", no_app)
    paths = {
        "empty file": tmp_path / "empty.sqlog",
        "binary file": tmp_path / "binary.qlog",
        "empty directory": tmp_path / "dir",
        "/dev/null": Path("/dev/null"),
        "only a manifest": tmp_path / "rec",
    }
    paths["empty file"].write_bytes(b"")
    paths["binary file"].write_bytes(bytes(range(256)) * 4)
    paths["empty directory"].mkdir()
    paths["only a manifest"].mkdir()
    (paths["only a manifest"] / "manifest.json").write_text('{"nodes": []}')
    assert main(["replay", str(paths[kind])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dhtscope replay: ") and "Traceback" not in err


def test_sim_text_output_is_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--nodes", "200", "--lookups", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    colons = {line.index(":") for line in lines}
    assert len(colons) == 1, lines
    values = {key.strip(): value for key, value in (line.split(": ", 1) for line in lines)}
    assert len(values["log2_nodes"].split(".")[-1]) <= 3  # not 8.965784284662087


def test_replay_and_the_tracing_layer_load_neither_aioquic_nor_the_node() -> None:
    code = (
        "import sys, dhtscope.tracing, dhtscope.tracing.analysis, dhtscope.tui.app, dhtscope.tui.sources.replay\n"
        "import dhtscope.tui.cli\n"
        "dhtscope.tui.cli.build_parser().parse_args(['replay', 'x'])\n"
        "loaded = [m for m in sys.modules if m.startswith('aioquic') or m in "
        "('dhtscope.node.node', 'dhtscope.node.transport')]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_m_dhtscope_node_runs_a_node_and_stops_when_its_stdin_closes(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dhtscope.node", "--listen", "127.0.0.1:0", "--json-lines", "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        started = json.loads(proc.stdout.readline())
        assert started["event"] == "started"
        proc.stdin.close()  # what a supervisor's death does to the pipe
        assert proc.wait(timeout=10) == 0
        assert any(json.loads(line)["event"] == "stopped" for line in proc.stdout if line.strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_members_go_when_the_cluster_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves no time to clean up: the members' stdin pipes close, and they stop."""
    import random

    base = random.randrange(30000, 40000)
    cluster = subprocess.Popen(
        [sys.executable, "-m", "dhtscope.tui.cli", "cluster", "--providers", "1", "--base-port", str(base)],
        stdout=subprocess.PIPE,
        text=True,
    )
    members: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(members) < 3:
            out = subprocess.run(["pgrep", "-P", str(cluster.pid)], capture_output=True, text=True).stdout
            members = [int(p) for p in out.split()]
            time.sleep(0.1)
        assert len(members) == 3
        cluster.send_signal(signal.SIGKILL)
        cluster.wait()
        deadline = time.monotonic() + 10
        alive = members
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if process_running(pid)]
            time.sleep(0.1)
        assert alive == []
    finally:
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
