"""Link, network and transport layers down to UDP, with dpkt (one decoder per link type)."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from struct import error as struct_error
from typing import Any

import dpkt

# Link types (LINKTYPE_* numbers as pcap and pcapng write them).
LINKTYPE_NULL = 0  # BSD loopback, host byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OPENBSD = 12  # DLT_RAW on some BSDs
LINKTYPE_RAW_BSDOS = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108  # OpenBSD loopback, network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

LINK_NAMES = {
    LINKTYPE_NULL: "BSD loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW_OPENBSD: "raw IP",
    LINKTYPE_RAW_BSDOS: "raw IP",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked (SLL2)",
}

IPPROTO_UDP = 17
IPV6_FRAGMENT_HEADER = 44

_RAW_LINKS = frozenset({LINKTYPE_RAW, LINKTYPE_RAW_OPENBSD, LINKTYPE_RAW_BSDOS, LINKTYPE_IPV4, LINKTYPE_IPV6})
_IPV4 = b"\x08\x00"
_IPV6 = b"\x86\xdd"

# (source address text, source port, destination address text, destination port, UDP payload)
Udp = tuple[str, int, str, int, bytes]


def _raw_ip(data: bytes) -> Any:
    version = data[0] >> 4 if data else 0
    if version == 4:
        return dpkt.ip.IP(data)
    if version == 6:
        return dpkt.ip6.IP6(data)
    return None


_LINKS: dict[int, Callable[[bytes], Any]] = {
    LINKTYPE_ETHERNET: dpkt.ethernet.Ethernet,
    LINKTYPE_LINUX_SLL: dpkt.sll.SLL,
    LINKTYPE_LINUX_SLL2: dpkt.sll2.SLL2,
    LINKTYPE_NULL: dpkt.loopback.Loopback,
    LINKTYPE_LOOP: dpkt.loopback.Loopback,
    LINKTYPE_RAW: _raw_ip,
    LINKTYPE_RAW_OPENBSD: _raw_ip,
    LINKTYPE_RAW_BSDOS: _raw_ip,
    LINKTYPE_IPV4: lambda data: dpkt.ip.IP(data),
    LINKTYPE_IPV6: lambda data: dpkt.ip6.IP6(data),
}


class LinkDecoder:
    """Turns frames into UDP datagrams; counts, by reason, the frames it passes over."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self._addr4: dict[bytes, str] = {}
        self._addr6: dict[bytes, str] = {}

    def udp(self, linktype: int, data: bytes) -> Udp | None:
        """The UDP datagram a frame carries, or None (and a counted reason) if it carries none."""
        fast = self._plain_udp(linktype, data)
        return fast if fast is not None else self._udp(linktype, data)

    def _plain_udp(self, linktype: int, data: bytes) -> Udp | None:
        """The common frame read directly: untagged Ethernet, SLL/SLL2 or raw IP, then IPv4
        without options or fragments (or IPv6 without extension headers), then UDP. Decoding
        these with dpkt cost 40% of the whole capture decode; anything else goes to dpkt."""
        if linktype == LINKTYPE_ETHERNET:
            off, ethertype = 14, data[12:14]
        elif linktype in _RAW_LINKS:
            off, ethertype = 0, (_IPV4 if data[:1] and data[0] >> 4 == 4 else _IPV6)
        elif linktype == LINKTYPE_LINUX_SLL:
            off, ethertype = 16, data[14:16]
        elif linktype == LINKTYPE_LINUX_SLL2:
            off, ethertype = 20, data[0:2]
        else:
            return None
        n = len(data)
        if ethertype == _IPV4:
            if (
                n < off + 28
                or data[off] != 0x45
                or data[off + 9] != IPPROTO_UDP
                or (data[off + 6] & 0x3F or data[off + 7])
            ):
                return None
            src, dst = self._v4(data[off + 12 : off + 16]), self._v4(data[off + 16 : off + 20])
            udp = off + 20
        elif ethertype == _IPV6:
            if n < off + 48 or data[off] >> 4 != 6 or data[off + 6] != IPPROTO_UDP:
                return None
            src, dst = self._v6(data[off + 8 : off + 24]), self._v6(data[off + 24 : off + 40])
            udp = off + 40
        else:
            return None
        ulen = (data[udp + 4] << 8) | data[udp + 5]
        if ulen < 8 or udp + ulen > n:
            return None  # cut short or odd: dpkt says what it is
        return (
            src,
            (data[udp] << 8) | data[udp + 1],
            dst,
            (data[udp + 2] << 8) | data[udp + 3],
            data[udp + 8 : udp + ulen],
        )

    def _udp(self, linktype: int, data: bytes) -> Udp | None:
        link = _LINKS.get(linktype)
        if link is None:
            self.skipped[f"link type {linktype} not supported"] += 1
            return None
        try:
            pkt = link(data)
        except (dpkt.UnpackError, IndexError, ValueError, struct_error):
            self.skipped["frames too short for their link header"] += 1
            return None
        ip = pkt
        # Link headers (Ethernet with any VLAN tags, SLL, SLL2, loopback) wrap the IP packet.
        while ip is not None and not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
            ip = getattr(ip, "data", None)
            if isinstance(ip, (bytes, bytearray)):
                ip = None
        if ip is None:
            self.skipped["not IP"] += 1
            return None
        if isinstance(ip, dpkt.ip.IP):
            if ip.mf or ip.offset:
                self.skipped["IPv4 fragments (not reassembled)"] += 1
                return None
            if ip.p != IPPROTO_UDP:
                self.skipped["not UDP"] += 1
                return None
            src, dst = self._v4(ip.src), self._v4(ip.dst)
        else:
            if IPV6_FRAGMENT_HEADER in ip.extension_hdrs:
                self.skipped["IPv6 fragments (not reassembled)"] += 1
                return None
            if ip.p != IPPROTO_UDP:
                self.skipped["not UDP"] += 1
                return None
            src, dst = self._v6(ip.src), self._v6(ip.dst)
        udp = ip.data
        if not isinstance(udp, dpkt.udp.UDP):
            self.skipped["UDP header cut short"] += 1
            return None
        payload = udp.data
        if udp.ulen >= 8 and len(payload) > udp.ulen - 8:
            payload = payload[: udp.ulen - 8]  # Ethernet padding after a short datagram
        return src, udp.sport, dst, udp.dport, bytes(payload)

    def _v4(self, raw: bytes) -> str:
        text = self._addr4.get(raw)
        if text is None:
            text = self._addr4[raw] = socket.inet_ntop(socket.AF_INET, raw)
        return text

    def _v6(self, raw: bytes) -> str:
        text = self._addr6.get(raw)
        if text is None:
            text = self._addr6[raw] = socket.inet_ntop(socket.AF_INET6, raw)
        return text


def endpoint(address: str, port: int) -> str:
    """`ip:port`, with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
