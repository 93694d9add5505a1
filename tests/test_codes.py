"""tracing.codes: every code a trace carries has its registry's name, never a bare number."""

from __future__ import annotations

import pytest

from dhtscope.tracing.codes import (
    ErrorCode,
    application_code,
    application_registry,
    close_code,
    stream_code_label,
    tls_alert_words,
    transport_code,
    transport_code_by_name,
)


@pytest.mark.parametrize(
    "alert, words",
    [
        (40, "handshake failure"),
        (42, "bad certificate"),
        (43, "unsupported certificate"),
        (44, "certificate revoked"),
        (45, "certificate expired"),
        (46, "certificate unknown"),
        (47, "illegal parameter"),
        (48, "unknown CA"),
        (49, "access denied"),
        (50, "decode error"),
        (51, "decrypt error"),
        (70, "protocol version"),
        (71, "insufficient security"),
        (80, "internal error"),
        (109, "missing extension"),
        (110, "unsupported extension"),
        (112, "unrecognized name"),
        (116, "certificate required"),
        (120, "no application protocol"),
    ],
)
def test_crypto_errors_are_named_by_their_tls_alert(alert: int, words: str) -> None:
    code = transport_code(0x100 + alert)
    assert code.name == "CRYPTO_ERROR" and code.registry == "tls" and code.tls_alert == alert
    assert code.label == f"TLS alert {alert} ({words})"
    assert tls_alert_words(alert) == words


def test_an_unregistered_tls_alert_says_so() -> None:
    assert transport_code(0x1FE).label == "TLS alert 254 (unregistered alert 254)"


@pytest.mark.parametrize(
    "value, name",
    [
        (0x00, "NO_ERROR"),
        (0x01, "INTERNAL_ERROR"),
        (0x02, "CONNECTION_REFUSED"),
        (0x03, "FLOW_CONTROL_ERROR"),
        (0x04, "STREAM_LIMIT_ERROR"),
        (0x05, "STREAM_STATE_ERROR"),
        (0x06, "FINAL_SIZE_ERROR"),
        (0x07, "FRAME_ENCODING_ERROR"),
        (0x08, "TRANSPORT_PARAMETER_ERROR"),
        (0x09, "CONNECTION_ID_LIMIT_ERROR"),
        (0x0A, "PROTOCOL_VIOLATION"),
        (0x0B, "INVALID_TOKEN"),
        (0x0C, "APPLICATION_ERROR"),
        (0x0D, "CRYPTO_BUFFER_EXCEEDED"),
        (0x0E, "KEY_UPDATE_ERROR"),
        (0x0F, "AEAD_LIMIT_REACHED"),
        (0x10, "NO_VIABLE_PATH"),
        (0x11, "VERSION_NEGOTIATION_ERROR"),
    ],
)
def test_transport_errors_are_named(value: int, name: str) -> None:
    code = transport_code(value)
    assert code.name == name and code.registry == "quic"
    assert code.label == f"{name} (0x{value:x})"
    assert code.is_error == (value != 0)
    assert transport_code_by_name(name.lower()) == value


def test_a_peers_violation_blames_the_end_that_received_the_close() -> None:
    assert transport_code(0x03).blames == "receiver"  # FLOW_CONTROL_ERROR: the peer sent too much
    assert transport_code(0x01).blames == "closer"  # INTERNAL_ERROR: the closer's own failure
    assert transport_code(0x12A).blames == "receiver"  # bad certificate: the presenter's certificate
    assert transport_code(0x174).blames == "closer"  # certificate required: the closer sent none


def test_an_unregistered_transport_code_is_named_as_such() -> None:
    code = transport_code(0xCFFF)
    assert code.registry == "unknown" and "0xcfff" in code.words and code.is_error


def test_application_codes_come_from_the_registry_the_alpn_gives() -> None:
    assert application_registry(["dhtscope/1"]) == "dhtscope"
    assert application_registry(["h3"]) == application_registry(["h3-29"]) == "h3"
    assert application_registry(["hq-interop"]) is None
    assert application_code(0x09, ["dhtscope/1"]).name == "CANCELLED"
    assert application_code(0x04, ["dhtscope/1"]).name == "MESSAGE_TOO_LARGE"
    assert application_code(0x0100, ["h3"]).name == "H3_NO_ERROR"
    assert not application_code(0x0100, ["h3"]).is_error
    assert application_code(0x010C, ["h3"]).name == "H3_REQUEST_CANCELLED"
    assert application_code(0x0200, ["h3"]).name == "QPACK_DECOMPRESSION_FAILED"
    # H3 names only where the ALPN says h3; dhtscope's only for dhtscope's ALPN
    assert application_code(0x0100, ["dhtscope/1"]).registry == "unknown"
    assert application_code(0x09, ["h3"]).registry == "unknown"
    assert application_code(0x09, []).name == "0x9"


def test_stream_codes_show_their_name_or_hex() -> None:
    assert stream_code_label(9, ["dhtscope/1"]) == "CANCELLED"
    assert stream_code_label(0x10C, ["h3"]) == "H3_REQUEST_CANCELLED"
    assert stream_code_label(0x10C, ["dhtscope/1"]) == "0x10c"


def test_close_codes_follow_their_error_space() -> None:
    assert close_code(0x0A, "transport", ["h3"]).name == "PROTOCOL_VIOLATION"
    assert close_code(0x0A, "application", ["h3"]).registry == "unknown"
    assert close_code(0x06, "application", ["dhtscope/1"]).name == "INTERNAL"


def test_the_node_reads_the_same_error_code_table() -> None:
    from dhtscope.node import wire

    assert wire.ErrorCode is ErrorCode
    assert ErrorCode.CANCELLED == 0x09 and ErrorCode.MESSAGE_TOO_LARGE == 0x04
