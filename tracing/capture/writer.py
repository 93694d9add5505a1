"""Write UDP datagrams as a capture a packet sniffer would have made (pcapng or pcap).

Each datagram gets real IPv4/IPv6 and UDP headers with valid checksums (dpkt builds them),
and in pcapng a Decryption Secrets Block can carry the TLS key log, so Wireshark and
`read_capture` open the file with no key file beside it. Buffered, and written out at least
every `flush_interval_s` while an event loop runs (at the next datagram otherwise), so a
crashed process loses at most that much.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct
import time
from pathlib import Path

import dpkt

from .errors import CaptureError
from .files import BT_DSB, BT_EPB, BT_IDB, DSB_TLS_KEY_LOG, OPT_COMMENT, PCAP_MAGIC_NS, PCAPNG_BOM, PCAPNG_SHB
from .link import LINKTYPE_ETHERNET, LINKTYPE_RAW

FLUSH_INTERVAL_S = 0.1  # a crash loses at most this much of the capture
SNAPLEN_BYTES = 262144  # tcpdump's default: every datagram whole
MAX_BUFFERED_BYTES = 1 << 20  # written out at once, not waiting for the flush timer
IP_TTL = 64
# Locally administered MAC addresses: the writer invents the Ethernet layer.
_MAC_PREFIX = b"\x02\x00"
_OPT_IF_TSRESOL = 9
_TSRESOL_NS = 9  # if_tsresol: 10^-9 s
_NS_PER_S = 1_000_000_000

Address = tuple[str, int]


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


class CaptureWriter:
    """Append UDP datagrams to a pcapng (default) or pcap file; `close()` when done."""

    def __init__(
        self,
        path: str | Path,
        *,
        fmt: str = "pcapng",
        link: str = "ethernet",
        keylog: str | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        comment: str | None = None,
    ) -> None:
        """`comment` goes into the pcapng section header (Wireshark shows it; pcap has no place for it)."""
        if fmt not in ("pcapng", "pcap"):
            raise CaptureError(f"capture format {fmt!r} unknown: use pcapng or pcap")
        if link not in ("ethernet", "raw"):
            raise CaptureError(f"link type {link!r} unknown: use ethernet or raw")
        if keylog and fmt != "pcapng":
            raise CaptureError("only pcapng carries a key log (decryption secrets block); write pcapng or a key file")
        self.path = Path(path)
        self.fmt = fmt
        self.linktype = LINKTYPE_ETHERNET if link == "ethernet" else LINKTYPE_RAW
        self._interval = flush_interval_s
        self._buf: list[bytes] = []
        self._buffered = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_write = time.monotonic()
        self._macs: dict[str, bytes] = {}
        self.datagrams = 0
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise CaptureError(f"{self.path}: cannot write the capture ({exc.strerror or exc})") from None
        if fmt == "pcap":
            # Nanosecond pcap: the same precision as the pcapng interface below.
            self._append(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN_BYTES, self.linktype))
        else:
            shb = struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1)
            if comment:
                text = comment.encode()
                shb += struct.pack("<HH", OPT_COMMENT, len(text)) + _pad4(text) + b"\0\0\0\0"
            tsresol = struct.pack("<HH", _OPT_IF_TSRESOL, 1) + _pad4(bytes([_TSRESOL_NS]))
            idb = struct.pack("<HHI", self.linktype, 0, SNAPLEN_BYTES) + tsresol + b"\0\0\0\0"
            self._append(_block(PCAPNG_SHB, shb) + _block(BT_IDB, idb))
            if keylog:
                self._append(self._dsb(keylog))
        self._write_out()  # the header goes out at once: the file is a valid capture from birth

    # -- writing

    def add_keylog(self, text: str) -> None:
        """Append NSS key log lines as a Decryption Secrets Block (before the packets they open)."""
        if self.fmt != "pcapng":
            raise CaptureError("only pcapng carries a key log (decryption secrets block)")
        if text:
            self._append(self._dsb(text))

    def write(self, time_s: float, src: Address, dst: Address, payload: bytes) -> None:
        """One UDP datagram from `src` to `dst` ((host, port) each) at `time_s` (epoch seconds)."""
        if self._fd is None:
            return
        frame = self._frame(src, dst, payload)
        ns = int(time_s * _NS_PER_S)
        if self.fmt == "pcap":
            sec, frac = divmod(ns, _NS_PER_S)
            record = struct.pack("<IIII", sec, frac, len(frame), len(frame)) + frame
        else:
            body = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, len(frame), len(frame)) + _pad4(frame)
            record = _block(BT_EPB, body)
        self.datagrams += 1
        self._append(record)

    def _dsb(self, text: str) -> bytes:
        data = text.encode()
        return _block(BT_DSB, struct.pack("<II", DSB_TLS_KEY_LOG, len(data)) + _pad4(data))

    def _frame(self, src: Address, dst: Address, payload: bytes) -> bytes:
        s_ip = ipaddress.ip_address(src[0])
        d_ip = ipaddress.ip_address(dst[0])
        if s_ip.version != d_ip.version:
            raise CaptureError(f"datagram from {src[0]} to {dst[0]}: source and destination differ in IP version")
        udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
        udp.ulen = len(udp)
        ip: dpkt.Packet
        if s_ip.version == 4:
            ip = dpkt.ip.IP(src=s_ip.packed, dst=d_ip.packed, p=dpkt.ip.IP_PROTO_UDP, ttl=IP_TTL, data=udp)
            ip.len = len(ip)
            ethertype = dpkt.ethernet.ETH_TYPE_IP
        else:
            ip = dpkt.ip6.IP6(src=s_ip.packed, dst=d_ip.packed, nxt=dpkt.ip.IP_PROTO_UDP, hlim=IP_TTL, data=udp)
            ip.p = dpkt.ip.IP_PROTO_UDP
            ip.plen = len(udp)
            ip.extension_hdrs = {}
            ip.all_extension_headers = []
            ethertype = dpkt.ethernet.ETH_TYPE_IP6
        raw = bytes(ip)  # dpkt fills in the IP and UDP checksums
        if self.linktype == LINKTYPE_RAW:
            return raw
        return self._mac(dst[0]) + self._mac(src[0]) + struct.pack(">H", ethertype) + raw

    def _mac(self, host: str) -> bytes:
        mac = self._macs.get(host)
        if mac is None:
            mac = self._macs[host] = _MAC_PREFIX + (len(self._macs) + 1).to_bytes(4, "big")
        return mac

    # -- buffering

    def _append(self, data: bytes) -> None:
        self._buf.append(data)
        self._buffered += len(data)
        if self._buffered >= MAX_BUFFERED_BYTES or time.monotonic() - self._last_write >= self._interval:
            self._write_out()
        elif self._timer is None:
            self._arm_timer()

    def _arm_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._write_out()

    def _write_out(self) -> None:
        self._last_write = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf or self._fd is None:
            return
        data = memoryview(b"".join(self._buf))
        self._buf.clear()
        self._buffered = 0
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            fd, self._fd = self._fd, None
            os.close(fd)
            raise CaptureError(f"{self.path}: write failed ({exc.strerror or exc}); capture stopped") from None

    def flush(self) -> None:
        """Hand everything written so far to the kernel."""
        self._write_out()

    def close(self) -> None:
        """Flush and close; later writes are ignored."""
        if self._fd is None:
            return
        self._write_out()
        fd, self._fd = self._fd, None
        os.close(fd)

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
