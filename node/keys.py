"""Node identity: an Ed25519 key pair, stored as PEM, whose public key hashes to the node id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .ids import NodeId

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class KeyFileError(Exception):
    """A key file that cannot be read or written."""


@dataclass(frozen=True)
class Identity:
    private_key: Ed25519PrivateKey
    public_key: bytes  # raw 32 bytes
    node_id: NodeId

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private_key=key, public_key=raw, node_id=NodeId.from_public_key(raw))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Read the key at `path`, or create one there (mode 0600) if the file does not exist."""
        p = Path(path)
        if p.exists():
            try:
                key = serialization.load_pem_private_key(p.read_bytes(), password=None)
            except (ValueError, TypeError, OSError) as exc:
                raise KeyFileError(f"cannot read key file {p}: {exc}") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise KeyFileError(f"key file {p} does not hold an Ed25519 private key")
            return cls.from_private_key(key)
        identity = cls.generate()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(identity.private_pem())
        except OSError as exc:
            raise KeyFileError(f"cannot write key file {p}: {exc}") from None
        return identity

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True if `signature` is `public_key`'s Ed25519 signature of `data`."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
