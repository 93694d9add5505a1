"""Names for the numbers on the wire: QUIC transport errors, TLS alerts, HTTP/3 and dhtscope codes.

One registry for every code a trace carries, so a report never shows a bare number:
QUIC transport error codes (RFC 9000 §20.1, RFC 9368), CRYPTO_ERROR as "TLS alert N (name)"
(RFC 9001 §4.8 over the TLS alerts of RFC 8446 §6 and RFC 7301), HTTP/3 and QPACK error
codes (RFC 9114 §8.1, RFC 9204 §6; used only where the ALPN says h3) and dhtscope's own
application error codes (ALPN `dhtscope/N`), which the node imports from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class ErrorCode(IntEnum):
    """dhtscope's application error codes: in ERROR responses and in stream resets (RESET_STREAM / STOP_SENDING)."""

    MALFORMED = 0x01  # not msgpack, or not the structure of any message
    UNSUPPORTED_VERSION = 0x02  # a version this node does not speak
    UNKNOWN_TYPE = 0x03  # a message type this node does not know
    MESSAGE_TOO_LARGE = 0x04  # more than MAX_MESSAGE_BYTES on one stream
    OVERLOADED = 0x05  # too many requests in flight; retry later
    INTERNAL = 0x06  # the handler failed; the node keeps serving
    IDENTITY_MISMATCH = 0x07  # sender id is not SHA-256 of its TLS public key
    NOT_A_REQUEST = 0x08  # a response type arrived as a request
    CANCELLED = 0x09  # the requester gave up (timeout) or shut down
    REQUEST_TIMEOUT = 0x0A  # a request did not arrive whole in time (stream reset)


DHTSCOPE_ALPN_PREFIX = "dhtscope/"  # every wire version's ALPN starts so

# Who a code blames: the endpoint that sent the close, or the one that received it.
CLOSER = "closer"
RECEIVER = "receiver"
BOTH = "both"


@dataclass(frozen=True, slots=True)
class Code:
    """One code named: `name` as its registry spells it, `words` for people, `blames` whom."""

    value: int
    name: str
    words: str
    registry: str  # "quic", "tls", "h3", "dhtscope" or "unknown"
    blames: str = BOTH
    is_error: bool = True
    tls_alert: int | None = None

    @property
    def label(self) -> str:
        """`NAME (0xN)`, or `TLS alert N (words)` for a CRYPTO_ERROR."""
        if self.tls_alert is not None:
            return f"TLS alert {self.tls_alert} ({self.words})"
        return f"{self.name} (0x{self.value:x})"


# RFC 9000 §20.1 and RFC 9368 §10.2: (name, words, whom it blames).
QUIC_TRANSPORT_ERRORS: dict[int, tuple[str, str, str]] = {
    0x00: ("NO_ERROR", "closed without error", BOTH),
    0x01: ("INTERNAL_ERROR", "the closing endpoint failed internally", CLOSER),
    0x02: ("CONNECTION_REFUSED", "the server refused the connection", CLOSER),
    0x03: ("FLOW_CONTROL_ERROR", "the peer sent more data than its flow-control credit allowed", RECEIVER),
    0x04: ("STREAM_LIMIT_ERROR", "the peer opened more streams than it was allowed", RECEIVER),
    0x05: ("STREAM_STATE_ERROR", "a frame arrived for a stream in a state that forbids it", RECEIVER),
    0x06: ("FINAL_SIZE_ERROR", "a stream's final size changed or was exceeded", RECEIVER),
    0x07: ("FRAME_ENCODING_ERROR", "a frame was badly encoded", RECEIVER),
    0x08: ("TRANSPORT_PARAMETER_ERROR", "the peer's transport parameters were malformed or invalid", RECEIVER),
    0x09: ("CONNECTION_ID_LIMIT_ERROR", "the peer issued more connection ids than allowed", RECEIVER),
    0x0A: ("PROTOCOL_VIOLATION", "the peer violated the QUIC protocol", RECEIVER),
    0x0B: ("INVALID_TOKEN", "the client presented an invalid Retry or NEW_TOKEN token", RECEIVER),
    0x0C: ("APPLICATION_ERROR", "the application closed the connection before the handshake completed", CLOSER),
    0x0D: ("CRYPTO_BUFFER_EXCEEDED", "the peer sent more handshake data than could be buffered", RECEIVER),
    0x0E: ("KEY_UPDATE_ERROR", "a key update went wrong", RECEIVER),
    0x0F: ("AEAD_LIMIT_REACHED", "too many packets under one key: the AEAD limit was reached", BOTH),
    0x10: ("NO_VIABLE_PATH", "no usable network path (e.g. the path MTU is too small)", BOTH),
    0x11: ("VERSION_NEGOTIATION_ERROR", "version negotiation failed or was tampered with", BOTH),
}
CRYPTO_ERROR_FIRST = 0x0100  # CRYPTO_ERROR: 0x0100 + the TLS alert (RFC 9001 §4.8)
CRYPTO_ERROR_LAST = 0x01FF

# RFC 8446 §6 (with the alerts it reserves), RFC 7301 §3.2 and RFC 8446's successors.
TLS_ALERTS: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed_RESERVED",
    22: "record_overflow",
    30: "decompression_failure_RESERVED",
    40: "handshake_failure",
    41: "no_certificate_RESERVED",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction_RESERVED",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation_RESERVED",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable_RESERVED",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value_RESERVED",
    115: "unknown_psk_identity",
    116: "certificate_required",
    117: "general_error",
    120: "no_application_protocol",
    121: "ech_required",
}
# Alerts about the certificate the other end presented: the alert's sender refused it.
CERTIFICATE_ALERTS = frozenset({42, 43, 44, 45, 46, 48, 49, 113})
# Alerts where the sender failed on its own side.
SENDER_ALERTS = frozenset({80, 90, 116})
NO_APPLICATION_PROTOCOL_ALERT = 120

# What to do about the TLS alerts people meet, in a few words each.
TLS_ALERT_FIXES: dict[int, str] = {
    40: "the two ends share no acceptable cipher suite, group or signature algorithm: align their TLS settings",
    42: "the certificate was refused: check that it is signed by a CA the peer trusts and is well formed",
    43: "the certificate's type or key is not supported by the peer: use a key type it accepts",
    44: "the certificate was revoked: issue a new one",
    45: "the certificate has expired or is not yet valid: renew it and check both clocks",
    46: "the peer could not accept the certificate: check its chain and the peer's trust store",
    48: "the certificate's CA is unknown to the peer: add the CA to its trust store or use a trusted certificate",
    49: "the peer denied access after the handshake's identity check: check its access policy",
    50: "a handshake message could not be decoded: the two stacks disagree on an encoding",
    51: "a handshake signature or Finished check failed: the keys do not match the certificate",
    70: "no common TLS version: both ends must speak TLS 1.3",
    71: "the offered security parameters are too weak for the peer",
    80: "the sender failed internally during the handshake: see its own logs",
    109: "a required TLS extension is missing (e.g. QUIC transport parameters)",
    110: "an extension arrived that the peer does not allow there",
    112: "the server does not serve the name (SNI) the client asked for",
    116: "the server requires a client certificate and the client sent none",
    120: "the two ends offer no common ALPN: configure the same protocol version on both",
}

# RFC 9114 §8.1 and RFC 9204 §6.
HTTP3_ERRORS: dict[int, tuple[str, str]] = {
    0x0100: ("H3_NO_ERROR", "closed without error"),
    0x0101: ("H3_GENERAL_PROTOCOL_ERROR", "the peer violated HTTP/3"),
    0x0102: ("H3_INTERNAL_ERROR", "an internal error in the HTTP/3 stack"),
    0x0103: ("H3_STREAM_CREATION_ERROR", "the peer created a stream it should not have"),
    0x0104: ("H3_CLOSED_CRITICAL_STREAM", "a stream HTTP/3 needs was closed or reset"),
    0x0105: ("H3_FRAME_UNEXPECTED", "a frame arrived where it is not allowed"),
    0x0106: ("H3_FRAME_ERROR", "a frame was badly formatted"),
    0x0107: ("H3_EXCESSIVE_LOAD", "the peer put excessive load on it"),
    0x0108: ("H3_ID_ERROR", "a stream or push id was used wrongly"),
    0x0109: ("H3_SETTINGS_ERROR", "the SETTINGS frame was invalid"),
    0x010A: ("H3_MISSING_SETTINGS", "no SETTINGS frame at the start of the control stream"),
    0x010B: ("H3_REQUEST_REJECTED", "the server rejected the request without processing it"),
    0x010C: ("H3_REQUEST_CANCELLED", "the request or its response was cancelled"),
    0x010D: ("H3_REQUEST_INCOMPLETE", "the client's stream ended before the request was complete"),
    0x010E: ("H3_MESSAGE_ERROR", "the HTTP message was malformed"),
    0x010F: ("H3_CONNECT_ERROR", "the CONNECT request's TCP connection was reset or failed"),
    0x0110: ("H3_VERSION_FALLBACK", "the request must be retried over an older HTTP version"),
    0x0200: ("QPACK_DECOMPRESSION_FAILED", "a header block could not be decompressed"),
    0x0201: ("QPACK_ENCODER_STREAM_ERROR", "the QPACK encoder stream was invalid"),
    0x0202: ("QPACK_DECODER_STREAM_ERROR", "the QPACK decoder stream was invalid"),
}
H3_NO_ERROR = 0x0100

DHTSCOPE_WORDS: dict[ErrorCode, str] = {
    ErrorCode.MALFORMED: "the message was not valid msgpack or had the wrong structure",
    ErrorCode.UNSUPPORTED_VERSION: "the message speaks a wire version this node does not",
    ErrorCode.UNKNOWN_TYPE: "a message type (or a unidirectional stream) this node does not handle",
    ErrorCode.MESSAGE_TOO_LARGE: "the message exceeded the node's size limit",
    ErrorCode.OVERLOADED: "the node shed load: retry later",
    ErrorCode.INTERNAL: "the request handler failed",
    ErrorCode.IDENTITY_MISMATCH: "the sender's id is not SHA-256 of its TLS key",
    ErrorCode.NOT_A_REQUEST: "a response type arrived as a request",
    ErrorCode.CANCELLED: "the requester gave up on the stream",
    ErrorCode.REQUEST_TIMEOUT: "the request did not arrive whole in time (a slow or stalled sender)",
}


def tls_alert_words(alert: int) -> str:
    """`bad certificate` for 42; an unregistered alert says so."""
    name = TLS_ALERTS.get(alert)
    if name is None:
        return f"unregistered alert {alert}"
    return name.removesuffix("_RESERVED").replace("_", " ").replace("unknown ca", "unknown CA")


def transport_code(value: int) -> Code:
    """A QUIC transport error code (the close frame's error_space "transport") named."""
    if CRYPTO_ERROR_FIRST <= value <= CRYPTO_ERROR_LAST:
        alert = value - CRYPTO_ERROR_FIRST
        if alert in CERTIFICATE_ALERTS:
            blames = RECEIVER
        elif alert in SENDER_ALERTS:
            blames = CLOSER
        else:
            blames = BOTH
        return Code(value, "CRYPTO_ERROR", tls_alert_words(alert), "tls", blames, True, alert)
    known = QUIC_TRANSPORT_ERRORS.get(value)
    if known is not None:
        name, words, blames = known
        return Code(value, name, words, "quic", blames, value != 0)
    # Only the end that chose an unregistered code knows what it means.
    words = f"transport error 0x{value:x} (not in the QUIC registry)"
    return Code(value, "UNKNOWN_TRANSPORT_ERROR", words, "unknown", CLOSER)


def transport_code_by_name(name: str) -> int | None:
    """A transport error code from its name as some stacks log it (`flow_control_error`)."""
    wanted = name.strip().upper()
    return next((v for v, (n, _, _) in QUIC_TRANSPORT_ERRORS.items() if n == wanted), None)


def application_registry(alpns: Iterable[str]) -> str | None:
    """Which registry names application codes for these ALPNs: "dhtscope", "h3", or None."""
    for alpn in alpns:
        if alpn.startswith(DHTSCOPE_ALPN_PREFIX):
            return "dhtscope"
        if alpn == "h3" or alpn.startswith("h3-"):
            return "h3"
    return None


def application_code(value: int, alpns: Iterable[str]) -> Code:
    """An application error code named by the registry the ALPN gives, or said to be unnamed."""
    registry = application_registry(alpns)
    if registry == "h3":
        known = HTTP3_ERRORS.get(value)
        if known is not None:
            return Code(value, known[0], known[1], "h3", BOTH, value != H3_NO_ERROR)
    elif registry == "dhtscope":
        if value == 0:
            return Code(0, "NO_ERROR", "closed without error", "dhtscope", BOTH, False)
        try:
            code = ErrorCode(value)
        except ValueError:
            pass
        else:
            return Code(value, code.name, DHTSCOPE_WORDS[code], "dhtscope", CLOSER)
    what = f"for ALPN {registry}" if registry else "(no registry for this ALPN)"
    return Code(value, f"0x{value:x}", f"application code 0x{value:x} {what}", "unknown", CLOSER, value != 0)


def close_code(value: int, space: str | None, alpns: Iterable[str]) -> Code:
    """The code of a CONNECTION_CLOSE: transport or application space."""
    if space == "application":
        return application_code(value, alpns)
    return transport_code(value)


def stream_code_label(value: int, alpns: Iterable[str]) -> str:
    """A RESET_STREAM / STOP_SENDING code as `NAME` where the ALPN gives a registry, else `0xN`."""
    code = application_code(value, alpns)
    return code.name if code.registry != "unknown" else f"0x{value:x}"


__all__ = [
    "CRYPTO_ERROR_FIRST",
    "CRYPTO_ERROR_LAST",
    "HTTP3_ERRORS",
    "QUIC_TRANSPORT_ERRORS",
    "TLS_ALERTS",
    "TLS_ALERT_FIXES",
    "Code",
    "ErrorCode",
    "application_code",
    "application_registry",
    "close_code",
    "stream_code_label",
    "tls_alert_words",
    "transport_code",
    "transport_code_by_name",
]
