"""`dhtscope diagnose`: --fail-on for CI, the last line to act on, failures named from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.traces import SAMPLES, End, healthy_cluster, needs_samples, no_accept_cluster, write_sqlog

from dhtscope.tracing import cli as tracing_cli
from dhtscope.tracing import report
from dhtscope.tui.cli import main


def _write(tmp_path: Path, ends: list[End]) -> Path:
    for e in ends:
        path = tmp_path / str(e.node) / f"{e.odcid}-{e.vantage}-0.sqlog"
        write_sqlog(path, str(e.node), e.vantage, e.odcid, e.events)
    return tmp_path


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    ends, _ = no_accept_cluster()
    return _write(tmp_path / "broken", ends)


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    return _write(tmp_path / "healthy", healthy_cluster())


def test_fail_on_exits_1_when_a_finding_that_bad_exists(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", str(broken), "--fail-on", "error"]) == 1
    assert main(["diagnose", str(broken), "--fail-on", "warning"]) == 1
    assert main(["diagnose", str(broken)]) == 0  # no --fail-on: reporting never fails
    out = capsys.readouterr().out
    assert "Fix first: stream_not_delivered on registry" in out


def test_fail_on_exits_0_on_a_healthy_recording(healthy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", str(healthy), "--fail-on", "warning"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "No problems found: no finding above info."


def test_fail_on_works_with_json(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", str(broken), "--json", "--fail-on", "error"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["root_causes"] == ["stream_not_delivered/registry"]
    assert {f["caused_by"] for f in doc["findings"]} <= {None, "stream_not_delivered/registry"}


def test_fail_on_refuses_other_severities_in_one_line(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", str(broken), "--fail-on", "info"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--fail-on" in err and err.count("\n") == 1 and "Traceback" not in err
    assert tracing_cli.FAIL_ON == report.FAIL_ON


@needs_samples
def test_a_failed_handshake_sample_is_named_as_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(SAMPLES / "aioquic_server_failed.qlog")
    assert main(["diagnose", sample, "--fail-on", "error"]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out and "handshake_failed" in out and "bad certificate" in out
