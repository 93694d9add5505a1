"""NSS key log files (SSLKEYLOGFILE): TLS 1.3 traffic secrets by ClientHello random."""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CaptureError

# Labels of the secrets QUIC needs (RFC 9001 uses TLS 1.3's key schedule as is).
CLIENT_EARLY = "CLIENT_EARLY_TRAFFIC_SECRET"
CLIENT_HANDSHAKE = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_0 = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_0 = "SERVER_TRAFFIC_SECRET_0"
QUIC_LABELS = frozenset({CLIENT_EARLY, CLIENT_HANDSHAKE, SERVER_HANDSHAKE, CLIENT_TRAFFIC_0, SERVER_TRAFFIC_0})

CLIENT_RANDOM_BYTES = 32  # TLS ClientHello.random


@dataclass
class KeyLog:
    """Secrets by client random; `sources` names where each batch came from (file, DSB)."""

    secrets: dict[bytes, dict[str, bytes]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    skipped_lines: int = 0

    def __len__(self) -> int:
        return len(self.secrets)

    def add_text(self, text: str, source: str) -> int:
        """Add the lines of an NSS key log; returns how many QUIC secrets they held."""
        added = 0
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3:
                self.skipped_lines += 1
                continue
            label, random_hex, secret_hex = parts
            try:
                random = binascii.unhexlify(random_hex)
                secret = binascii.unhexlify(secret_hex)
            except (binascii.Error, ValueError):
                self.skipped_lines += 1
                continue
            if label not in QUIC_LABELS:
                continue  # TLS 1.2 CLIENT_RANDOM, EXPORTER_SECRET, ...: not needed for QUIC
            if len(random) != CLIENT_RANDOM_BYTES:
                self.skipped_lines += 1
                continue
            self.secrets.setdefault(random, {})[label] = secret
            added += 1
        if added:
            self.sources.append(source)
        return added

    def merge(self, other: KeyLog) -> None:
        for random, labels in other.secrets.items():
            self.secrets.setdefault(random, {}).update(labels)
        self.sources.extend(other.sources)
        self.skipped_lines += other.skipped_lines


def read_keylog(path: str | Path) -> KeyLog:
    """Read an NSS key log file; a file with lines but no QUIC secret among them is an error."""
    p = Path(path)
    if not p.is_file():
        what = "a directory" if p.is_dir() else ("not a regular file" if p.exists() else "no such file")
        raise CaptureError(f"{p}: cannot read the key log ({what})")
    try:
        text = p.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise CaptureError(f"{p}: cannot read the key log ({exc.strerror or exc})") from None
    keys = KeyLog()
    if not text.strip():
        return keys  # a node whose handshakes all failed early writes an empty key log: no secrets, no error
    if keys.add_text(text, str(p)) == 0:
        raise CaptureError(
            f"{p}: not an NSS key log with TLS 1.3 secrets (no CLIENT_HANDSHAKE_TRAFFIC_SECRET or "
            "CLIENT_TRAFFIC_SECRET_0 lines)"
        )
    return keys
