"""The loop node processes run on."""

from __future__ import annotations

import asyncio

import pytest

from dhtscope.node import runtime


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_when_installed(monkeypatch):
    pytest.importorskip("uvloop")
    monkeypatch.delenv(runtime.LOOP_ENV, raising=False)
    assert runtime.loop_name() == "uvloop"
    assert runtime.run(_loop_module()).startswith("uvloop")


def test_environment_picks_asyncios_loop(monkeypatch):
    monkeypatch.setenv(runtime.LOOP_ENV, "asyncio")
    assert runtime.loop_name() == "asyncio"
    assert runtime.run(_loop_module()).startswith("asyncio")
