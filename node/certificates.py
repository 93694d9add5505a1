"""The node's TLS certificate, and the check every node makes of its peer's during the handshake.

A node proves its id with a self-signed certificate for its Ed25519 key (the id is SHA-256 of
the key). A peer's certificate is refused, with the TLS alert that names why, when it is not
self-signed by its own key, not an Ed25519 key, outside its validity dates, or, for a contact
we dialled, not the key its id promises. `NodeQuicConnection` runs the check inside aioquic's
handshake, so a refusal closes the connection with CRYPTO_ERROR and the alert.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from .constants import MAX_CLOCK_SKEW_S
from .ids import NodeId
from .keys import Identity

# TLS alerts (RFC 8446 §6.2) a refusal is sent with.
BAD_CERTIFICATE_ALERT = 42
UNSUPPORTED_CERTIFICATE_ALERT = 43
CERTIFICATE_EXPIRED_ALERT = 45

CERTIFICATE_BACKDATE_S = 86_400.0  # valid from a day back, so a peer whose clock lags accepts it
CERTIFICATE_LIFETIME_S = 3650 * 86_400.0  # a node's key outlives any run; the id, not the date, is what counts
EXPIRED_CERTIFICATE_AGE_S = 30 * 86_400.0  # the bad-certificate fault's certificate ended a month ago, a day long

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class CertificateRefused(Exception):
    """A peer's certificate this node will not accept, with the TLS alert that says why."""

    def __init__(self, alert: int, reason: str) -> None:
        super().__init__(reason)
        self.alert = alert
        self.reason = reason


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_certificate(identity: Identity, now_s: float, fault: str | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """The node's self-signed certificate and the key it signs the handshake with.

    `fault` (scenarios.BAD_CERTIFICATES) makes one its peers refuse: "expired", or
    "not-ed25519" (an ECDSA P-256 key, from which no node id can be derived).
    """
    key: PrivateKey = identity.private_key
    start = now_s - CERTIFICATE_BACKDATE_S
    end = now_s + CERTIFICATE_LIFETIME_S
    if fault == "expired":
        end = now_s - EXPIRED_CERTIFICATE_AGE_S
        start = end - 86_400.0
    elif fault == "not-ed25519":
        key = ec.generate_private_key(ec.SECP256R1())
    elif fault is not None:
        raise ValueError(f"unknown certificate fault {fault!r}")
    name = _name(identity.node_id.hex())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(start, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(end, datetime.UTC))
    )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return builder.sign(key, hashes.SHA256()), key
    return builder.sign(key, None), key


def peer_id_from_certificate(cert: x509.Certificate | None) -> NodeId | None:
    """SHA-256 of the peer's raw Ed25519 key; None if there is no such key."""
    if cert is None:
        return None
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return NodeId.from_public_key(raw)


def check_peer_certificate(cert: x509.Certificate, now_s: float, expected: NodeId | None = None) -> NodeId:
    """The node id `cert` proves; CertificateRefused (with its TLS alert) if a node must not accept it."""
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CertificateRefused(UNSUPPORTED_CERTIFICATE_ALERT, f"certificate key cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        kind = type(key).__name__.removeprefix("_").replace("PublicKey", "")
        why = f"certificate key is {kind or 'unknown'}, not Ed25519: no node id hashes from it"
        raise CertificateRefused(UNSUPPORTED_CERTIFICATE_ALERT, why)
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused(BAD_CERTIFICATE_ALERT, "certificate is not self-signed by its own key") from None
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    if now_s > end + MAX_CLOCK_SKEW_S:
        why = f"certificate expired {_ago(now_s - end)} ago ({cert.not_valid_after_utc:%Y-%m-%d})"
        raise CertificateRefused(CERTIFICATE_EXPIRED_ALERT, why)
    if now_s < start - MAX_CLOCK_SKEW_S:
        raise CertificateRefused(
            CERTIFICATE_EXPIRED_ALERT,
            f"certificate is not valid for another {_ago(start - now_s)} ({cert.not_valid_before_utc:%Y-%m-%d})",
        )
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    node_id = NodeId.from_public_key(raw)
    if expected is not None and node_id != expected:
        why = f"certificate key hashes to node {node_id.short()}, not the {expected.short()} dialled"
        raise CertificateRefused(BAD_CERTIFICATE_ALERT, why)
    return node_id


def _ago(seconds: float) -> str:
    days = seconds / 86_400.0
    return f"{days:.0f} days" if days >= 2 else f"{seconds / 3600:.1f} hours"
