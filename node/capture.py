"""A node's own packet capture: the datagrams its socket sent and received, as a sniffer saw them.

`PacketCapture.wrap` puts itself between the endpoint and its UDP transport, so every
datagram handed to the socket is written, whichever code path sent it; the endpoint
reports each datagram it receives before anything (a loss fault included) decides its
fate. A datagram the loss fault drops on send never reaches the socket and is not written,
as it never reached the wire; one dropped on receive had arrived, and is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from pathlib import Path
from typing import Any, cast

from dhtscope.tracing.capture.errors import CaptureError
from dhtscope.tracing.capture.files import node_comment
from dhtscope.tracing.capture.link import endpoint
from dhtscope.tracing.capture.writer import CaptureWriter

Address = tuple[str, int]

# A route lookup per unknown peer address when the node listens on an unspecified address;
# more distinct peers than this and the oldest answers are forgotten.
MAX_ROUTE_CACHE_ENTRIES = 1024


def _plain(host: str) -> str:
    """An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as IPv4."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class PacketCapture:
    """Writes one node's datagrams to a pcapng file; its TLS secrets go to the key log beside it."""

    def __init__(self, path: str | Path, name: str) -> None:
        """CaptureError now if `path` cannot be written: the file itself is begun once the socket is bound."""
        self.path = Path(path)
        self.name = name
        self.writer: CaptureWriter | None = None
        try:
            with open(self.path, "ab"):
                pass
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot write the capture ({exc.strerror or exc})") from None
        self._host = "0.0.0.0"
        self._port = 0
        self._routes: dict[str, str] = {}

    def wrap(self, transport: asyncio.DatagramTransport) -> asyncio.DatagramTransport:
        """The socket's transport, with every datagram sent through it written first."""
        sock = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        self._host, self._port = _plain(str(sock[0])), int(sock[1])
        if self.writer is None:
            self.writer = CaptureWriter(self.path, comment=node_comment(self.name, endpoint(self._host, self._port)))
        return cast(asyncio.DatagramTransport, _CapturingTransport(transport, self))

    def sent(self, data: bytes, addr: Any) -> None:
        peer = (_plain(str(addr[0])), int(addr[1]))
        if self.writer is not None:
            self.writer.write(time.time(), self._local(peer[0]), peer, data)

    def received(self, data: bytes, addr: Any) -> None:
        peer = (_plain(str(addr[0])), int(addr[1]))
        if self.writer is not None:
            self.writer.write(time.time(), peer, self._local(peer[0]), data)

    def _local(self, peer_host: str) -> Address:
        host = self._host
        if host not in ("0.0.0.0", "::"):
            return host, self._port
        # Bound to every interface: the address the kernel would send from towards this peer.
        src = self._routes.get(peer_host)
        if src is None:
            src = _route_source(peer_host)
            if len(self._routes) >= MAX_ROUTE_CACHE_ENTRIES:
                self._routes.pop(next(iter(self._routes)))
            self._routes[peer_host] = src
        return src, self._port

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _route_source(peer_host: str) -> str:
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, 9))  # no packet leaves: connect on UDP only picks a route
            return _plain(str(probe.getsockname()[0]))
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


class _CapturingTransport:
    """An asyncio datagram transport that writes what it sends to a PacketCapture."""

    def __init__(self, inner: asyncio.DatagramTransport, capture: PacketCapture) -> None:
        self._inner = inner
        self._capture = capture

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._capture.sent(data, addr)
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
