"""pcap and pcapng containers: frames with their time, link type and bytes, plus DSB key logs.

A hand-written walk over the blocks (struct on a memory map), because the libraries stop
short of what captures need here: dpkt's pcapng reader takes only the first interface and
skips Decryption Secrets Blocks, python-pcapng reads them but costs several times more per
frame, and neither says where a truncated file stops. Link layers are dpkt's (`link.py`).
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CaptureError

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BT_DSB = 0x0000000A
DSB_TLS_KEY_LOG = 0x544C534B  # "TLSK": NSS key log text

OPT_END = 0
OPT_COMMENT = 1
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

PCAP_HEADER_BYTES = 24
PCAP_RECORD_BYTES = 16
PCAPNG_MIN_BLOCK_BYTES = 12
# A block claiming more than this is corruption, not a frame: refuse before allocating it.
PCAPNG_MAX_BLOCK_BYTES = 256 * 1024 * 1024

# (frame number 1-based, time ms since the epoch, link type, frame bytes, original length)
Frame = tuple[int, float, int, bytes, int]

# The section comment a dhtscope node writes into its own capture: which address is which node.
_NODE_COMMENT = re.compile(r"^dhtscope node (\S+) at (\S+)$")


def node_comment(name: str, address: str) -> str:
    """The pcapng comment that names the node at `address` ("ip:port") in a capture it wrote."""
    return f"dhtscope node {name} at {address}"


def node_names(comments: list[str]) -> dict[str, str]:
    """{"ip:port": name} from the node comments among a capture's section comments."""
    out: dict[str, str] = {}
    for comment in comments:
        for line in comment.splitlines():
            m = _NODE_COMMENT.match(line.strip())
            if m is not None:
                out[m.group(2)] = m.group(1)
    return out


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    ms_per_unit: float  # if_tsresol as milliseconds per timestamp unit
    offset_ms: float  # if_tsoffset


@dataclass
class CaptureFile:
    """One opened capture; iterate `frames()` once. Warnings and key logs fill in as it reads."""

    path: str
    kind: str  # "pcap" | "pcapng"
    keylogs: list[str] = field(default_factory=list)  # NSS key log texts from DSBs
    comments: list[str] = field(default_factory=list)  # section header comments (opt_comment)
    truncated: str | None = None
    notes: list[str] = field(default_factory=list)
    frames_read: int = 0
    _mm: mmap.mmap | bytes = b""

    def frames(self) -> Iterator[Frame]:
        """Every frame of the file, in file order; stops (and sets `truncated`) where it is cut."""
        if self.kind == "pcap":
            return self._pcap_frames()
        return self._pcapng_frames()

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._mm = b""

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pcap

    def _pcap_frames(self) -> Iterator[Frame]:
        mm = self._mm
        size = len(mm)
        if size < PCAP_HEADER_BYTES:
            self._truncate(1, size)
            return
        magic_le = struct.unpack_from("<I", mm, 0)[0]
        if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            order = "<"
            magic = magic_le
        else:
            order = ">"
            magic = struct.unpack_from(">I", mm, 0)[0]
        linktype = struct.unpack_from(order + "I", mm, 20)[0] & 0xFFFF  # upper bits: FCS info
        per_unit = 1e-6 if magic == PCAP_MAGIC_NS else 1e-3
        record = struct.Struct(order + "IIII").unpack_from
        pos = PCAP_HEADER_BYTES
        number = 0
        while pos < size:
            number += 1
            if pos + PCAP_RECORD_BYTES > size:
                self._truncate(number, pos)
                return
            sec, frac, caplen, origlen = record(mm, pos)
            start = pos + PCAP_RECORD_BYTES
            end = start + caplen
            if end > size:
                self._truncate(number, pos)
                return
            self.frames_read = number
            yield number, sec * 1000.0 + frac * per_unit, linktype, mm[start:end], origlen
            pos = end

    # -- pcapng

    def _pcapng_frames(self) -> Iterator[Frame]:
        mm = self._mm
        size = len(mm)
        pos = 0
        number = 0
        order = "<"
        last_ms = 0.0
        interfaces: list[_Interface] = []
        u32 = struct.Struct("<I").unpack_from
        head = struct.Struct("<II").unpack_from
        epb = struct.Struct("<IIIII").unpack_from
        while pos < size:
            if pos + PCAPNG_MIN_BLOCK_BYTES > size:
                self._truncate(number + 1, pos)
                return
            btype = u32(mm, pos)[0]
            if btype == PCAPNG_SHB:
                if pos + 12 > size:
                    self._truncate(number + 1, pos)
                    return
                bom = struct.unpack_from("<I", mm, pos + 8)[0]
                if bom == PCAPNG_BOM:
                    order = "<"
                elif struct.unpack_from(">I", mm, pos + 8)[0] == PCAPNG_BOM:
                    order = ">"
                else:
                    raise CaptureError(f"{self.path}: pcapng section at byte {pos} has no byte-order magic")
                u32 = struct.Struct(order + "I").unpack_from
                head = struct.Struct(order + "II").unpack_from
                epb = struct.Struct(order + "IIIII").unpack_from
                interfaces = []  # interface ids are per section
                shb_len = head(mm, pos)[1]
                if shb_len >= PCAPNG_MIN_BLOCK_BYTES and pos + shb_len <= size:
                    self._section_comments(order, pos + 24, pos + shb_len - 4)
            btype, blen = head(mm, pos)
            if blen < PCAPNG_MIN_BLOCK_BYTES or blen % 4 or blen > PCAPNG_MAX_BLOCK_BYTES:
                if pos + blen > size or blen < PCAPNG_MIN_BLOCK_BYTES:
                    self._truncate(number + 1, pos)
                    return
                raise CaptureError(f"{self.path}: corrupt pcapng block at byte {pos} (length {blen})")
            end = pos + blen
            if end > size:
                self._truncate(number + 1, pos)
                return
            body = pos + 8
            body_end = end - 4
            if btype == BT_EPB:
                number += 1
                iface, hi, lo, caplen, origlen = epb(mm, body)
                start = body + 20
                if iface >= len(interfaces) or start + caplen > body_end:
                    self.notes.append(f"frame {number} (byte {pos}) names no interface or overruns its block")
                    pos = end
                    continue
                i = interfaces[iface]
                self.frames_read = number
                last_ms = ((hi << 32) | lo) * i.ms_per_unit + i.offset_ms
                yield number, last_ms, i.linktype, mm[start : start + caplen], origlen
            elif btype == BT_SPB:
                number += 1
                if not interfaces:
                    self.notes.append(f"frame {number} (byte {pos}): simple packet before any interface")
                    pos = end
                    continue
                i = interfaces[0]
                origlen = u32(mm, body)[0]
                caplen = min(origlen, body_end - body - 4)
                if i.snaplen:
                    caplen = min(caplen, i.snaplen)
                self.frames_read = number
                # A simple packet has no time: it takes the previous frame's (Wireshark shows none).
                yield number, last_ms, i.linktype, mm[body + 4 : body + 4 + caplen], origlen
            elif btype == BT_PB:
                number += 1
                iface, _drops, hi, lo, caplen, origlen = struct.unpack_from(order + "HHIIII", mm, body)
                start = body + 20
                if iface >= len(interfaces) or start + caplen > body_end:
                    pos = end
                    continue
                i = interfaces[iface]
                self.frames_read = number
                last_ms = ((hi << 32) | lo) * i.ms_per_unit + i.offset_ms
                yield number, last_ms, i.linktype, mm[start : start + caplen], origlen
            elif btype == BT_IDB:
                linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", mm, body)
                interfaces.append(self._interface(order, linktype, snaplen, body + 8, body_end))
            elif btype == BT_DSB:
                stype, slen = struct.unpack_from(order + "II", mm, body)
                if stype == DSB_TLS_KEY_LOG and body + 8 + slen <= body_end:
                    self.keylogs.append(bytes(mm[body + 8 : body + 8 + slen]).decode("utf-8", errors="replace"))
                elif stype != DSB_TLS_KEY_LOG:
                    self.notes.append(f"decryption secrets block at byte {pos} of type 0x{stype:08x} ignored")
            pos = end

    def _options(self, order: str, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
        """A pcapng block's options from `pos` to `end`: (code, where its value starts, its length)."""
        mm = self._mm
        while pos + 4 <= end:
            code, length = struct.unpack_from(order + "HH", mm, pos)
            if code == OPT_END:
                return
            value = pos + 4
            yield code, value, length
            pos = value + ((length + 3) & ~3)

    def _section_comments(self, order: str, pos: int, end: int) -> None:
        mm = self._mm
        for code, value, length in self._options(order, pos, end):
            if code == OPT_COMMENT and value + length <= end:
                self.comments.append(bytes(mm[value : value + length]).decode("utf-8", errors="replace"))

    def _interface(self, order: str, linktype: int, snaplen: int, pos: int, end: int) -> _Interface:
        ms_per_unit = 1e-3  # default resolution: microseconds
        offset_ms = 0.0
        mm = self._mm
        for code, value, length in self._options(order, pos, end):
            if code == OPT_IF_TSRESOL and length >= 1:
                res = mm[value]
                exponent = res & 0x7F
                ms_per_unit = 1000.0 / (2**exponent if res & 0x80 else 10**exponent)
            elif code == OPT_IF_TSOFFSET and length >= 8:
                offset_ms = struct.unpack_from(order + "q", mm, value)[0] * 1000.0
        return _Interface(linktype, snaplen, ms_per_unit, offset_ms)

    def _truncate(self, number: int, offset: int) -> None:
        before = number - 1
        self.truncated = (
            f"capture truncated at frame {number} (byte {offset}): read the {before} "
            f"frame{'' if before == 1 else 's'} before it"
        )


def _describe(path: Path) -> str | None:
    """Why `path` cannot be read as a file, or None if it is a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(st.st_mode):
        return "a directory, not a capture file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def sniff_capture(path: str | Path) -> str | None:
    """ "pcap" or "pcapng" if the file starts like one, else None; never blocks on a FIFO."""
    p = Path(path)
    if _describe(p) is not None:
        return None
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return None
    return _kind(head)


def _kind(head: bytes) -> str | None:
    if len(head) < 4:
        return None
    le, be = struct.unpack("<I", head[:4])[0], struct.unpack(">I", head[:4])[0]
    if PCAP_MAGIC_US in (le, be) or PCAP_MAGIC_NS in (le, be):
        return "pcap"
    if le == PCAPNG_SHB:
        return "pcapng"
    return None


def open_capture(path: str | Path) -> CaptureFile:
    """Open a pcap or pcapng file; CaptureError with one actionable line if it is neither."""
    p = Path(path)
    problem = _describe(p)
    if problem is not None:
        raise CaptureError(f"{p}: {problem}")
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise CaptureError(f"{p}: empty file, not a pcap or pcapng capture")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise CaptureError(f"{p}: {exc.strerror or exc}") from None
    kind = _kind(mm[:12])
    if kind is None:
        start = mm[:4].hex()
        mm.close()
        raise CaptureError(f"{p}: not a pcap or pcapng file (starts with 0x{start})")
    return CaptureFile(path=str(p), kind=kind, _mm=mm)
