"""The aioquic internals dhtscope relies on are all named in one contract, checked against the installed aioquic."""

from __future__ import annotations

import aioquic
import pytest
from aioquic.quic import connection as aioquic_connection

from dhtscope.node import quic_internals


def test_installed_aioquic_keeps_every_clause_of_the_contract() -> None:
    assert quic_internals.check_contract() == []


def test_pinned_series_is_the_checked_one() -> None:
    assert aioquic.__version__.startswith(quic_internals.CHECKED_SERIES + ".")


def test_a_missing_private_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aioquic_connection.QuicConnection, "_write_stream_frame")
    problems = quic_internals.check_contract()
    assert problems == ["QuicConnection._write_stream_frame no longer exists"]


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def _set_state(self, state, reason):  # type: ignore[no-untyped-def]  # a stand-in with one more parameter
        pass

    monkeypatch.setattr(aioquic_connection.QuicConnection, "_set_state", _set_state)
    problems = quic_internals.check_contract()
    assert problems == ["QuicConnection._set_state takes (state, reason), not (state)"]


def test_a_missing_instance_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    original = aioquic_connection.QuicConnection.__init__

    def without_ack_delay(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # wraps aioquic's own
        original(self, *args, **kwargs)
        del self._ack_delay

    monkeypatch.setattr(aioquic_connection.QuicConnection, "__init__", without_ack_delay)
    assert "connection._ack_delay no longer exists" in quic_internals.check_contract()


def test_transport_reaches_aioquic_internals_only_through_this_module() -> None:
    import inspect
    import re

    from dhtscope.node import rpc, transport

    private = re.compile(r"\.quic\._[a-z]|\.tls\._|_loss\._")
    for module in (transport, rpc):
        assert not private.findall(inspect.getsource(module)), module.__name__
