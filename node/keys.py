"""Node identity: an Ed25519 key pair, stored as PEM, whose public key hashes to the node id."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .constants import MAX_KEY_FILE_BYTES
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
        if p.exists() or p.is_symlink():
            try:
                key = serialization.load_pem_private_key(read_key_file(p), password=None)
            except (ValueError, TypeError) as exc:
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


def read_key_file(path: Path) -> bytes:
    """A private key file's bytes: only a regular file, private to its owner, of key size; KeyFileError if not."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        # As ssh does: a private key others may read is as good as published.
        if os.name == "posix" and info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        chunks = []
        left = MAX_KEY_FILE_BYTES + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes; it is not a key")
    return data


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True if `signature` is `public_key`'s Ed25519 signature of `data`."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
