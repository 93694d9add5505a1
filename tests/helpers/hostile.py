"""Hostile peers for tests: raw QUIC Initials that are never answered, and what came back to them."""

from __future__ import annotations

import socket

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from dhtscope.node.constants import ALPN


def initials(count: int, port: int) -> list[bytes]:
    """`count` first datagrams of distinct client connections (each a 1,200-byte Initial)."""
    out = []
    for _ in range(count):
        conn = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN]))
        conn.connect(("127.0.0.1", port), now=0.0)
        out.append(conn.datagrams_to_send(now=0.0)[0][0])
    return out


class Flooder:
    """A UDP socket that sends Initials and never answers; it can count what the node sent back."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)

    def send(self, datagrams: list[bytes], port: int) -> None:
        for data in datagrams:
            self.sock.sendto(data, ("127.0.0.1", port))

    def replies(self) -> dict[str, int]:
        """Datagrams received so far, by long-header packet type ("RETRY", "INITIAL", ...)."""
        kinds: dict[str, int] = {}
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return kinds
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                kind = QuicPacketType(header.packet_type).name
            except ValueError:
                kind = "other"
            kinds[kind] = kinds.get(kind, 0) + 1

    def close(self) -> None:
        self.sock.close()
