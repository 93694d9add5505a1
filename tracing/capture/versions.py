"""QUIC version numbers: which this reader decrypts, and a name for every other."""

from __future__ import annotations

VERSION_1 = 0x00000001  # RFC 9000
VERSION_2 = 0x6B3343CF  # RFC 9369
SUPPORTED = (VERSION_1, VERSION_2)


def version_name(version: int) -> str:
    """`0xff00001d (draft-29)`: the number as hex and what it is, as far as it is known."""
    label = None
    if version == VERSION_1:
        label = "QUIC v1"
    elif version == VERSION_2:
        label = "QUIC v2"
    elif version == 0:
        label = "version negotiation"
    elif version & 0x0F0F0F0F == 0x0A0A0A0A:
        label = "reserved for negotiation"
    elif version >> 8 == 0xFF0000:
        label = f"draft-{version & 0xFF}"
    elif version == 0x709A50C4:
        label = "QUIC v2 draft"
    elif version >> 24 == 0x51 and all(0x30 <= (version >> s) & 0xFF <= 0x39 for s in (0, 8, 16)):
        label = "Google QUIC " + version.to_bytes(4, "big").decode("ascii")
    elif version >> 8 == 0xFACEB0:
        label = "mvfst"
    hex_text = f"0x{version:08x}"
    return f"{hex_text} ({label})" if label else hex_text
