"""QUIC on the wire, decrypted: packets of a capture into one network-vantage trace per connection.

The only module of dhtscope.tracing that imports aioquic: its packet protection (header
protection and AEAD, `aioquic.quic.crypto`), its key schedule helpers and its TLS message
parsers. Everything else here is bookkeeping: which connection a packet belongs to, which
keys open it, and the qlog events it becomes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoContext, CryptoPair, next_key_phase
from aioquic.quic.packet import decode_packet_number, pull_quic_transport_parameters
from aioquic.tls import CipherSuite, pull_client_hello, pull_encrypted_extensions, pull_server_hello

from ..model import Event, Recording, TraceInfo
from ..reader import DocTrace
from .errors import CaptureError
from .frames import DEFAULT_ACK_DELAY_EXPONENT, parse_frames
from .frames import varint as _varint
from .keylog import (
    CLIENT_EARLY,
    CLIENT_HANDSHAKE,
    CLIENT_TRAFFIC_0,
    SERVER_HANDSHAKE,
    SERVER_TRAFFIC_0,
    KeyLog,
)
from .link import LinkDecoder, endpoint
from .versions import SUPPORTED, VERSION_1, VERSION_2, version_name

# Long header packet types by the two type bits, per version (RFC 9000 17.2, RFC 9369 3.2).
_LONG_TYPES = {
    VERSION_1: ("initial", "0RTT", "handshake", "retry"),
    VERSION_2: ("retry", "initial", "0RTT", "handshake"),
}
QUIC_TRANSPORT_PARAMETERS_EXT = 0x39  # TLS extension carrying QUIC transport parameters (RFC 9001 8.2)
TLS_HANDSHAKE_HEADER_BYTES = 4  # message type + 24-bit length
MAX_CID_BYTES = 20  # RFC 9000 17.2
MIN_INITIAL_DCID_BYTES = 8  # RFC 9000 7.2: a client's first Destination Connection ID
MIN_INITIAL_DATAGRAM_BYTES = 1200  # RFC 9000 14.1: datagrams with a client's Initial are padded to this
RESET_TOKEN_BYTES = 16
# RFC 9000 10.3: a stateless reset is at least 21 bytes (5 unpredictable + 16 token).
MIN_STATELESS_RESET_BYTES = 21
# A ClientHello (or ServerHello, EncryptedExtensions) larger than this is not one: stop buffering.
MAX_TLS_MESSAGE_BYTES = 64 * 1024

_SPACE_OF = {"initial": "initial", "handshake": "handshake", "0RTT": "app", "1RTT": "app"}

CLIENT_TO_SERVER = True
SERVER_TO_CLIENT = False


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """Counts over a whole capture (the bench and the CLI print them)."""

    frames: int
    datagrams: int
    packets: int
    decrypted: int
    connections: int
    client_hellos: int = 0  # connections whose ClientHello was read (what a key log is matched by)
    matched_randoms: frozenset[bytes] = frozenset()  # client randoms the key log had secrets for
    unsupported: tuple[str, ...] = ()  # QUIC versions seen and not decrypted, named
    truncated: str | None = None  # where the capture stops early, if it does


class _Crypto:
    """Reassembles one TLS epoch's CRYPTO stream far enough to read its first message."""

    __slots__ = ("chunks", "done")

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.done = False

    def add(self, offset: int, data: bytes) -> bytes | None:
        """The first complete handshake message once it is all there, once."""
        if self.done or offset > MAX_TLS_MESSAGE_BYTES:
            return None
        self.chunks[offset] = data
        buf = bytearray()
        while True:
            # Overlapping retransmissions may start inside what is already joined.
            nxt = None
            for off, chunk in self.chunks.items():
                if off <= len(buf) < off + len(chunk):
                    nxt = chunk[len(buf) - off :]
                    break
            if nxt is None:
                break
            buf += nxt
            if len(buf) >= TLS_HANDSHAKE_HEADER_BYTES:
                need = TLS_HANDSHAKE_HEADER_BYTES + int.from_bytes(buf[1:4], "big")
                if need > MAX_TLS_MESSAGE_BYTES:
                    self.done = True
                    return None
                if len(buf) >= need:
                    self.done = True
                    self.chunks = {}
                    return bytes(buf[:need])
        return None


class _Keys:
    """One direction's keys and packet-number state."""

    __slots__ = ("initial", "handshake", "zero_rtt", "one_rtt", "one_rtt_prev", "generation", "largest", "crypto")

    def __init__(self) -> None:
        self.initial: CryptoContext | None = None
        self.handshake: CryptoContext | None = None
        self.zero_rtt: CryptoContext | None = None
        self.one_rtt: CryptoContext | None = None
        self.one_rtt_prev: CryptoContext | None = None
        self.generation = 0
        self.largest = {"initial": -1, "handshake": -1, "app": -1}
        self.crypto = {"initial": _Crypto(), "handshake": _Crypto()}


class _Conn:
    """One QUIC connection as the network saw it."""

    def __init__(self, ordinal: int, odcid: bytes, client: tuple[str, int], server: tuple[str, int], version: int):
        self.ordinal = ordinal
        self.odcid = odcid
        self.client = client
        self.server = server
        self.version = version
        self.supported = version in SUPPORTED
        self.c2s = _Keys()
        self.s2c = _Keys()
        self.events: list[tuple[float, str, dict[str, Any], int]] = []
        self.client_random: bytes | None = None
        self.cipher_suite: int | None = None
        self.secrets: dict[str, bytes] | None = None
        self.keys_ready = False
        self.cids: list[bytes] = []
        self.reset_tokens: set[bytes] = set()
        self.ack_exponent = {CLIENT_TO_SERVER: DEFAULT_ACK_DELAY_EXPONENT, SERVER_TO_CLIENT: DEFAULT_ACK_DELAY_EXPONENT}
        self.dropped: Counter[str] = Counter()
        self.packets = 0
        self.decrypted = 0
        self.notes: Counter[str] = Counter()
        self.retry_scid: bytes | None = None
        self.versions_logged = False
        self.client_alpns: list[str] | None = None
        self.setup_initial(odcid, version)

    def setup_initial(self, cid: bytes, version: int) -> None:
        if version not in SUPPORTED:
            return
        pair = CryptoPair()
        pair.setup_initial(cid, is_client=True, version=version)
        self.c2s.initial, self.s2c.initial = pair.send, pair.recv

    def keys(self, c2s: bool) -> _Keys:
        return self.c2s if c2s else self.s2c

    def emit(self, time_ms: float, name: str, data: dict[str, Any], frame: int) -> None:
        self.events.append((time_ms, name, data, frame))


class CaptureDecoder:
    """Feeds on UDP datagrams in capture order; `recording()` returns what it made of them."""

    def __init__(self, keylog: KeyLog | None = None, names: Mapping[str, str] | None = None) -> None:
        self.keylog = keylog if keylog is not None else KeyLog()
        self.names = dict(names or {})
        self.conns: list[_Conn] = []
        self._by_cid: dict[bytes, tuple[_Conn, bool]] = {}
        self._cid_lengths: Counter[int] = Counter()
        self._lengths: list[int] = []  # distinct lengths, most used first: short headers carry no length
        self._by_flow: dict[tuple[str, int, str, int], tuple[_Conn, bool]] = {}
        self._unattributed: Counter[tuple[str, int, str, int]] = Counter()
        self._used_randoms: set[bytes] = set()
        self.datagrams = 0
        self.packets = 0
        self.decrypted = 0
        self.notes: Counter[str] = Counter()

    # ------------------------------------------------------------------ attribution

    def _register(self, conn: _Conn, cid: bytes, c2s: bool) -> None:
        """`cid` is a destination connection id of packets going c2s (or s2c) on `conn`."""
        if not cid or cid in self._by_cid:
            return
        self._by_cid[cid] = (conn, c2s)
        counts = self._cid_lengths
        fresh = len(cid) not in counts
        counts[len(cid)] += 1
        if fresh or counts[self._lengths[0]] < counts[len(cid)]:
            self._lengths = [length for length, _ in counts.most_common()]
        conn.cids.append(cid)

    def _flow(self, conn: _Conn, src: tuple[str, int], dst: tuple[str, int], c2s: bool) -> None:
        key = (src[0], src[1], dst[0], dst[1])
        if self._by_flow.get(key, (None,))[0] is not conn:
            self._by_flow[key] = (conn, c2s)
            self._by_flow[(dst[0], dst[1], src[0], src[1])] = (conn, not c2s)

    def _short_lookup(self, data: bytes, pos: int) -> tuple[_Conn, bool, int] | None:
        for length in self._lengths:
            hit = self._by_cid.get(data[pos + 1 : pos + 1 + length])
            if hit is not None:
                return hit[0], hit[1], length
        return None

    # ------------------------------------------------------------------ datagrams

    def datagram(self, time_ms: float, frame: int, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        """One UDP datagram: every QUIC packet coalesced in it."""
        self.datagrams += 1
        pos = 0
        n = len(data)
        conn: _Conn | None = None
        c2s = True
        while pos < n:
            first = data[pos]
            if first & 0x80:
                step = self._long(time_ms, frame, src, dst, data, pos, conn)
                if step is None:
                    return
                conn, c2s, pos = step
            elif not first & 0x40:
                # Fixed bit clear: not a QUIC packet (zero bytes padding a datagram after its packets).
                if pos == 0:
                    self._unattributed[(src[0], src[1], dst[0], dst[1])] += 1
                elif data.count(0, pos) != n - pos:
                    self.notes["bytes after the last packet of a datagram"] += 1
                return
            else:
                if pos > 0 and conn is not None:
                    hit: tuple[_Conn, bool, int] | None = (conn, c2s, self._dcid_len(conn, c2s))
                else:
                    hit = self._short_lookup(data, pos)
                if hit is None:
                    flow = self._by_flow.get((src[0], src[1], dst[0], dst[1]))
                    if flow is None:
                        self._unattributed[(src[0], src[1], dst[0], dst[1])] += 1
                        return
                    hit = (flow[0], flow[1], self._dcid_len(flow[0], flow[1]))
                conn, c2s, dcid_len = hit
                self._flow(conn, src, dst, c2s)
                self._short(time_ms, frame, conn, c2s, data[pos:], dcid_len)
                return

    def _dcid_len(self, conn: _Conn, c2s: bool) -> int:
        for cid in reversed(conn.cids):
            hit = self._by_cid.get(cid)
            if hit is not None and hit[1] == c2s:
                return len(cid)
        return 0

    def _long(
        self,
        time_ms: float,
        frame: int,
        src: tuple[str, int],
        dst: tuple[str, int],
        data: bytes,
        pos: int,
        conn: _Conn | None,
    ) -> tuple[_Conn, bool, int] | None:
        """One long-header packet at `pos`; returns (connection, direction, next position) or None to stop."""
        n = len(data)
        if pos + 7 > n:
            self.notes["long header cut short"] += 1
            return None
        first = data[pos]
        version = int.from_bytes(data[pos + 1 : pos + 5], "big")
        p = pos + 5
        dlen = data[p]
        dcid = data[p + 1 : p + 1 + dlen]
        p += 1 + dlen
        if p >= n or dlen > MAX_CID_BYTES:
            self.notes["long header with a bad connection id"] += 1
            return None
        slen = data[p]
        scid = data[p + 1 : p + 1 + slen]
        p += 1 + slen
        if p > n or slen > MAX_CID_BYTES:
            self.notes["long header with a bad connection id"] += 1
            return None

        found = self._by_cid.get(dcid) if dcid else None
        if found is None and not self._opens_connection(version, first, dcid, n):
            flow = self._by_flow.get((src[0], src[1], dst[0], dst[1]))
            if flow is not None:
                found = flow

        if version == 0:
            if found is None:
                self._unattributed[(src[0], src[1], dst[0], dst[1])] += 1
                return None
            conn, c2s = found
            versions = [f"{int.from_bytes(data[i : i + 4], 'big'):08x}" for i in range(p, n - 3, 4)]
            conn.emit(
                time_ms,
                "quic:version_information",
                {"server_versions": versions, "client_versions": [f"{conn.version:08x}"]},
                frame,
            )
            self._packet_event(
                conn,
                c2s,
                time_ms,
                frame,
                {"packet_type": "version_negotiation", "dcid": dcid.hex(), "scid": scid.hex()},
                n - pos,
                None,
                {"supported_versions": versions},
            )
            return None

        if version not in SUPPORTED:
            # Unknown versions: the header's invariant fields still say which connection it is.
            if found is None:
                conn = self._new_conn(dcid, src, dst, version, frame)
                found = (conn, True)
            conn, c2s = found
            if c2s and scid:
                self._register(conn, scid, False)
            elif not c2s and scid:
                self._register(conn, scid, True)
            self._flow(conn, src, dst, c2s)
            conn.packets += 1
            self.packets += 1
            conn.dropped["unsupported_version"] += 1
            conn.emit(
                time_ms,
                "quic:packet_dropped",
                {
                    "header": {
                        "packet_type": "unknown",
                        "version": f"{version:08x}",
                        "dcid": dcid.hex(),
                        "scid": scid.hex(),
                    },
                    "raw": {"length": n - pos},
                    "trigger": "unsupported_version",
                    "details": {"sender": "client" if c2s else "server", "version": version_name(version)},
                },
                frame,
            )
            return None

        ptype = _LONG_TYPES[version][(first & 0x30) >> 4]
        if ptype == "retry":
            if found is None:
                self._unattributed[(src[0], src[1], dst[0], dst[1])] += 1
                return None
            conn, c2s = found
            conn.retry_scid = scid
            self._register(conn, scid, True)
            # RFC 9001 5.2: Initial keys after a Retry come from the Retry's Source Connection ID.
            conn.setup_initial(scid, version)
            # The client answers a Retry with a new ClientHello (aioquic's has a new random): read it.
            conn.c2s.crypto["initial"] = _Crypto()
            token_len = max(n - p - RESET_TOKEN_BYTES, 0)
            self._packet_event(
                conn,
                c2s,
                time_ms,
                frame,
                {"packet_type": "retry", "version": f"{version:08x}", "dcid": dcid.hex(), "scid": scid.hex()},
                n - pos,
                None,
                {"retry_token": {"length": token_len, "data": data[p : p + token_len].hex()}},
            )
            return None

        try:
            token_len = 0
            if ptype == "initial":
                token_len, p = _varint(data, p)
                p += token_len
            length, p = _varint(data, p)
        except IndexError:
            self.notes["long header cut short"] += 1
            return None
        end = p + length
        if end > n:
            self.notes["long header packet longer than its datagram"] += 1
            return None

        if found is None:
            if ptype != "initial":
                self._unattributed[(src[0], src[1], dst[0], dst[1])] += 1
                return None
            conn = self._new_conn(dcid, src, dst, version, frame)
            found = (conn, True)
        conn, c2s = found
        self._flow(conn, src, dst, c2s)
        if scid:
            self._register(conn, scid, not c2s)
        if version != conn.version and not c2s:
            conn.version = version  # compatible version negotiation: the server's choice wins
        if not conn.versions_logged and c2s:
            conn.versions_logged = True
            conn.emit(
                time_ms,
                "quic:version_information",
                {"client_versions": [f"{version:08x}"], "chosen_version": f"{version:08x}"},
                frame,
            )
        header: dict[str, Any] = {
            "packet_type": ptype,
            "version": f"{version:08x}",
            "dcid": dcid.hex(),
            "scid": scid.hex(),
        }
        if ptype == "initial":
            header["token"] = {"length": token_len}
        self._protected(time_ms, frame, conn, c2s, data[pos:end], p - pos, ptype, header, version)
        return conn, c2s, end

    @staticmethod
    def _opens_connection(version: int, first: int, dcid: bytes, size: int) -> bool:
        """A client's first Initial: a padded datagram to a connection id nobody has used yet.

        Two nodes that each connect to the other share one address pair; only the connection
        id tells their connections apart, so such a packet never joins an earlier one by address.
        """
        if version not in SUPPORTED or len(dcid) < MIN_INITIAL_DCID_BYTES or size < MIN_INITIAL_DATAGRAM_BYTES:
            return False
        return _LONG_TYPES[version][(first & 0x30) >> 4] == "initial"

    def _new_conn(self, dcid: bytes, src: tuple[str, int], dst: tuple[str, int], version: int, frame: int) -> _Conn:
        conn = _Conn(len(self.conns), dcid, src, dst, version)
        self.conns.append(conn)
        self._register(conn, dcid, True)
        self._flow(conn, src, dst, True)
        return conn

    # ------------------------------------------------------------------ packets

    def _short(self, time_ms: float, frame: int, conn: _Conn, c2s: bool, packet: bytes, dcid_len: int) -> None:
        dcid = packet[1 : 1 + dcid_len]
        header = {"packet_type": "1RTT", "dcid": dcid.hex()}
        self._protected(time_ms, frame, conn, c2s, packet, 1 + dcid_len, "1RTT", header, conn.version)

    def _protected(
        self,
        time_ms: float,
        frame: int,
        conn: _Conn,
        c2s: bool,
        packet: bytes,
        pn_offset: int,
        ptype: str,
        header: dict[str, Any],
        version: int,
    ) -> None:
        conn.packets += 1
        self.packets += 1
        space = _SPACE_OF[ptype]
        keys = conn.keys(c2s)
        ctx, reason = self._context(conn, c2s, ptype, version)
        if ctx is None:
            self._dropped(conn, c2s, time_ms, frame, header, len(packet), reason or "key_unavailable")
            return
        try:
            assert ctx.hp is not None and ctx.aead is not None  # a context from _context has keys
            plain_header, truncated = ctx.hp.remove(packet, pn_offset)
            pn = decode_packet_number(truncated, ((plain_header[0] & 0x03) + 1) * 8, keys.largest[space] + 1)
            body = packet[len(plain_header) :]
            if ptype == "1RTT" and (plain_header[0] & 0x04) >> 2 != ctx.key_phase:
                payload = self._key_update(conn, c2s, time_ms, frame, body, plain_header, pn)
            else:
                payload = ctx.aead.decrypt(body, plain_header, pn)
        except Exception:  # (aioquic raises CryptoError or ValueError for a bad packet)
            payload = None
        if payload is None:
            opened_before = keys.largest[space] >= 0
            if ptype == "1RTT" and self._stateless_reset(conn, c2s, time_ms, frame, header, packet, opened_before):
                return
            if ptype != "initial" and conn.secrets is not None and not opened_before:
                conn.notes["wrong_keys"] += 1
            self._dropped(conn, c2s, time_ms, frame, header, len(packet), "decryption_failure")
            return
        if pn > keys.largest[space]:
            keys.largest[space] = pn
        conn.decrypted += 1
        self.decrypted += 1
        header["packet_number"] = pn
        if ptype == "1RTT":
            header["key_phase"] = (plain_header[0] & 0x04) >> 2
        exponent = conn.ack_exponent[not c2s] if space == "app" else DEFAULT_ACK_DELAY_EXPONENT
        parsed = parse_frames(payload, exponent)
        if parsed.problem:
            conn.notes[parsed.problem.split(" at byte")[0]] += 1
        self._packet_event(conn, c2s, time_ms, frame, header, len(packet), parsed.frames, None)
        if parsed.crypto and space in ("initial", "handshake"):
            for offset, chunk in parsed.crypto:
                message = keys.crypto[space].add(offset, chunk)
                if message is not None:
                    self._tls_message(conn, c2s, space, message, time_ms, frame)
        for seq, cid, token in parsed.new_cids:
            # A NEW_CONNECTION_ID names a cid its *sender* will accept: the peer sends to it.
            self._register(conn, cid, not c2s)
            conn.reset_tokens.add(token)
            del seq

    def _packet_event(
        self,
        conn: _Conn,
        c2s: bool,
        time_ms: float,
        frame: int,
        header: dict[str, Any],
        length: int,
        frames: list[dict[str, Any]] | None,
        extra: dict[str, Any] | None,
    ) -> None:
        data: dict[str, Any] = {"header": header, "raw": {"length": length}}
        if frames is not None:
            data["frames"] = frames
        if extra:
            data.update(extra)
        conn.emit(time_ms, "quic:packet_sent" if c2s else "quic:packet_received", data, frame)

    def _dropped(
        self, conn: _Conn, c2s: bool, time_ms: float, frame: int, header: dict[str, Any], length: int, trigger: str
    ) -> None:
        conn.dropped[trigger] += 1
        conn.emit(
            time_ms,
            "quic:packet_dropped",
            {
                "header": header,
                "raw": {"length": length},
                "trigger": trigger,
                "details": {"sender": "client" if c2s else "server"},
            },
            frame,
        )

    def _stateless_reset(
        self,
        conn: _Conn,
        c2s: bool,
        time_ms: float,
        frame: int,
        header: dict[str, Any],
        packet: bytes,
        keys_work: bool,
    ) -> bool:
        """A short packet that does not open: a stateless reset if it ends with an announced token,
        or possibly one when this direction's keys open other packets and no token is known."""
        if len(packet) < MIN_STATELESS_RESET_BYTES:
            return False
        token = packet[-RESET_TOKEN_BYTES:]
        known = token in conn.reset_tokens
        if not known and (conn.reset_tokens or not keys_work):
            return False
        self._packet_event(
            conn,
            c2s,
            time_ms,
            frame,
            {"packet_type": "stateless_reset", "dcid": header.get("dcid", "")},
            len(packet),
            [],
            {
                "stateless_reset_token": token.hex(),
                "details": (
                    "stateless reset: the packet ends with a reset token the peer announced"
                    if known
                    else "possibly a stateless reset (heuristic): a short packet that does not decrypt"
                ),
            },
        )
        return True

    def _key_update(
        self, conn: _Conn, c2s: bool, time_ms: float, frame: int, body: bytes, plain_header: bytes, pn: int
    ) -> bytes | None:
        keys = conn.keys(c2s)
        assert keys.one_rtt is not None
        nxt = next_key_phase(keys.one_rtt)
        nxt.hp = keys.one_rtt.hp  # RFC 9001 6.1: a key update changes the packet keys, never the header key
        assert nxt.aead is not None  # derived from a context that had keys
        try:
            payload = nxt.aead.decrypt(body, plain_header, pn)
        except Exception:
            prev = keys.one_rtt_prev
            if prev is None or prev.aead is None:
                return None
            return prev.aead.decrypt(body, plain_header, pn)  # a late packet of the previous phase
        keys.one_rtt_prev, keys.one_rtt = keys.one_rtt, nxt
        keys.generation += 1
        conn.emit(
            time_ms,
            "quic:key_updated",
            {"key_type": "client_1rtt_secret" if c2s else "server_1rtt_secret", "generation": keys.generation},
            frame,
        )
        return payload

    # ------------------------------------------------------------------ keys

    def _context(self, conn: _Conn, c2s: bool, ptype: str, version: int) -> tuple[CryptoContext | None, str | None]:
        keys = conn.keys(c2s)
        if ptype == "initial":
            if version != conn.version and keys.initial is not None and keys.initial.version != version:
                conn.setup_initial(conn.retry_scid or conn.odcid, version)
            return keys.initial, None
        if not conn.keys_ready:
            reason = self._derive(conn, version)
            if reason is not None:
                return None, reason
        ctx = {"handshake": keys.handshake, "0RTT": keys.zero_rtt, "1RTT": keys.one_rtt}[ptype]
        return ctx, None if ctx is not None else "key_unavailable"

    def _derive(self, conn: _Conn, version: int) -> str | None:
        """Handshake, 0-RTT and 1-RTT keys from the key log; the reason they are missing otherwise."""
        if conn.client_random is None:
            conn.notes["no_client_hello"] += 1
            return "key_unavailable"
        secrets = self.keylog.secrets.get(conn.client_random)
        if secrets is None:
            conn.notes["no_keys"] += 1
            return "key_unavailable"
        conn.secrets = secrets
        self._used_randoms.add(conn.client_random)
        suite = conn.cipher_suite
        for label, c2s, attr in (
            (CLIENT_HANDSHAKE, True, "handshake"),
            (SERVER_HANDSHAKE, False, "handshake"),
            (CLIENT_EARLY, True, "zero_rtt"),
            (CLIENT_TRAFFIC_0, True, "one_rtt"),
            (SERVER_TRAFFIC_0, False, "one_rtt"),
        ):
            secret = secrets.get(label)
            if secret is None:
                continue
            cs = suite if suite is not None else _suite_for(secret)
            ctx = CryptoContext()
            try:
                ctx.setup(cipher_suite=CipherSuite(cs), secret=secret, version=conn.version or version)
            except Exception:  # (a secret of the wrong length for its suite)
                conn.notes["bad_secret"] += 1
                continue
            setattr(conn.keys(c2s), attr, ctx)
        conn.keys_ready = True
        return None

    def _tls_message(self, conn: _Conn, c2s: bool, space: str, message: bytes, time_ms: float, frame: int) -> None:
        kind = message[0]
        try:
            if space == "initial" and c2s and kind == 1:
                hello = pull_client_hello(Buffer(data=message))
                conn.client_random = hello.random
                conn.client_alpns = list(hello.alpn_protocols or [])
                conn.emit(time_ms, "quic:alpn_information", {"client_alpns": conn.client_alpns}, frame)
                params = _transport_parameters(hello.other_extensions)
                if params is not None:
                    conn.emit(time_ms, "quic:parameters_set", {"owner": "client", **params}, frame)
                    if "ack_delay_exponent" in params:
                        conn.ack_exponent[True] = params["ack_delay_exponent"]
            elif space == "initial" and not c2s and kind == 2:
                conn.cipher_suite = pull_server_hello(Buffer(data=message)).cipher_suite
            elif space == "handshake" and not c2s and kind == 8:
                ee = pull_encrypted_extensions(Buffer(data=message))
                data: dict[str, Any] = {"client_alpns": conn.client_alpns or []}
                if ee.alpn_protocol is not None:
                    data["chosen_alpn"] = ee.alpn_protocol
                    data["server_alpns"] = [ee.alpn_protocol]
                conn.emit(time_ms, "quic:alpn_information", data, frame)
                params = _transport_parameters(ee.other_extensions)
                if params is not None:
                    conn.emit(time_ms, "quic:parameters_set", {"owner": "server", **params}, frame)
                    if "ack_delay_exponent" in params:
                        conn.ack_exponent[False] = params["ack_delay_exponent"]
                    if isinstance(params.get("stateless_reset_token"), str):
                        conn.reset_tokens.add(bytes.fromhex(params["stateless_reset_token"]))
        except Exception as exc:  # (aioquic's parsers assert and raise freely)
            conn.notes[f"unreadable TLS message type {kind}: {type(exc).__name__}"] += 1

    # ------------------------------------------------------------------ result

    def recording(self, path: str, fmt: str, frame_count: int, warnings: Iterable[str] = ()) -> Recording:
        """One network-vantage trace per connection, and one warning per connection left dark."""
        rec = Recording(path=path, traces=[], warnings=list(warnings))
        for conn in self.conns:
            rec.traces.append(self._trace(conn, path, fmt))
            problem = self._problem(conn)
            if problem:
                rec.warnings.append(f"connection {self._label(conn)} (odcid {conn.odcid.hex()}): {problem}")
        if self.keylog.secrets and self.conns and not self._used_randoms & self.keylog.secrets.keys():
            seen = sum(1 for c in self.conns if c.client_random is not None)
            rec.warnings.append(
                f"key log ({', '.join(self.keylog.sources) or 'given'}) matches no connection in the capture: "
                f"{len(self.keylog.secrets)} client random(s) in it, {seen} ClientHello(s) seen"
            )
        if self._unattributed:
            total = sum(self._unattributed.values())
            rec.warnings.append(
                f"{total} UDP datagram(s) on {len(self._unattributed)} flow(s) not attributed to a QUIC connection "
                "(no handshake seen: capture started mid-connection, or not QUIC)"
            )
        for note, count in sorted(self.notes.items()):
            rec.warnings.append(f"{count} datagram(s): {note}")
        return rec

    def _label(self, conn: _Conn) -> str:
        return f"{self._name(conn.client)} → {self._name(conn.server)}"

    def _name(self, addr: tuple[str, int]) -> str:
        text = endpoint(*addr)
        names = self.names
        # A node bound to every interface names itself by its port alone.
        return (
            names.get(text)
            or names.get(addr[0])
            or names.get(f"0.0.0.0:{addr[1]}")
            or names.get(f"[::]:{addr[1]}")
            or text
        )

    def _problem(self, conn: _Conn) -> str | None:
        if not conn.supported:
            return (
                f"QUIC version {version_name(conn.version)} is not supported: "
                f"{conn.packets} packet(s) counted, none decrypted"
            )
        dropped = sum(conn.dropped.values())
        notes = conn.notes
        parts: list[str] = []
        if dropped:
            random = conn.client_random.hex() if conn.client_random else None
            if random is None:
                why = "its ClientHello was not seen (or not complete), so no key matches it"
            elif notes.get("no_keys"):
                why = f"no keys for client random {random} in the key log" + (
                    "" if self.keylog.secrets else " (no key log given)"
                )
            elif notes.get("wrong_keys"):
                why = f"wrong keys for client random {random}: packets fail AEAD authentication"
            elif notes.get("bad_secret"):
                why = f"the key log's secrets for client random {random} do not fit the cipher suite"
            else:
                why = "packets did not decrypt (" + ", ".join(f"{k} ×{v}" for k, v in conn.dropped.items()) + ")"
            parts.append(f"{dropped} of {conn.packets} packet(s) not decrypted: {why}")
        for note, count in notes.items():
            if note in ("no_keys", "wrong_keys", "bad_secret", "no_client_hello"):
                continue
            parts.append(f"{note} ({count}×)")
        return "; ".join(parts) or None

    def _trace(self, conn: _Conn, path: str, fmt: str) -> DocTrace:
        events: list[Event] = []
        frames: list[int] = []
        conn.events.sort(key=lambda e: e[0])  # stable: coalesced packets keep their order
        for record, (t, name, data, frame) in enumerate(conn.events):
            events.append(Event(time_ms=t, name=name, data=data, raw_name=name, record=record))
            frames.append(frame)
        decrypted = "none" if conn.decrypted == 0 else ("full" if conn.decrypted == conn.packets else "partial")
        client, server = endpoint(*conn.client), endpoint(*conn.server)
        info = TraceInfo(
            path=path,
            index=conn.ordinal,
            vantage="network",
            odcid=conn.odcid.hex(),
            node=self._label(conn),
            format=fmt,
            qlog_version=None,
            reference_time_ms=None,
            title=f"capture: {client} → {server}",
            warnings=(),
            extra={
                "capture": True,
                "frames": frames,
                "client": client,
                "server": server,
                "client_name": self._name(conn.client),
                "server_name": self._name(conn.server),
                "version": version_name(conn.version),
                "supported": conn.supported,
                "decrypted": decrypted,
                "protocol_type": ["QUIC"],
            },
        )
        return DocTrace(info, events)


def _suite_for(secret: bytes) -> int:
    # Without the ServerHello the secret's length tells the hash: SHA-384 means AES-256-GCM.
    return CipherSuite.AES_256_GCM_SHA384 if len(secret) == 48 else CipherSuite.AES_128_GCM_SHA256


def _transport_parameters(extensions: list[tuple[int, bytes]]) -> dict[str, Any] | None:
    for ext_type, value in extensions:
        if ext_type != QUIC_TRANSPORT_PARAMETERS_EXT:
            continue
        try:
            params = pull_quic_transport_parameters(Buffer(data=value))
        except Exception:
            return {"unreadable": True}
        out: dict[str, Any] = {}
        for key, val in vars(params).items():
            if val is None or val is False:
                continue
            if isinstance(val, bytes):
                val = val.hex()
            elif not isinstance(val, (int, bool)):
                val = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in vars(val).items()}
            out[key] = val
        return out
    return None


def decode_capture(
    path: str, keylog: KeyLog | None = None, names: Mapping[str, str] | None = None
) -> tuple[Recording, CaptureSummary]:
    """Read a capture file into a Recording of network-vantage traces, and its counts."""
    from .files import node_names, open_capture

    capture = open_capture(path)
    keys = KeyLog()
    if keylog is not None:
        keys.merge(keylog)
    link = LinkDecoder()
    decoder = CaptureDecoder(keys, names)
    try:
        udp = link.udp
        feed = decoder.datagram
        dsb_seen = 0
        for number, time_ms, linktype, data, _origlen in capture.frames():
            if len(capture.keylogs) > dsb_seen:
                # A DSB precedes the packets it opens (pcapng spec); take it as it comes.
                for text in capture.keylogs[dsb_seen:]:
                    keys.add_text(text, f"{path} (decryption secrets block)")
                dsb_seen = len(capture.keylogs)
            got = udp(linktype, data)
            if got is None:
                continue
            sip, sport, dip, dport, payload = got
            if payload:
                feed(time_ms, number, (sip, sport), (dip, dport), payload)
        for text in capture.keylogs[dsb_seen:]:
            keys.add_text(text, f"{path} (decryption secrets block)")
    finally:
        capture.close()
    for address, name in node_names(capture.comments).items():
        decoder.names.setdefault(address, name)  # names the caller gave win over the capture's own
    warnings: list[str] = []
    if capture.truncated:
        warnings.append(f"{path}: {capture.truncated}")
    warnings.extend(f"{path}: {note}" for note in capture.notes)
    for reason, count in sorted(link.skipped.items()):
        if reason not in ("not UDP", "not IP"):
            warnings.append(f"{path}: {count} frame(s) skipped: {reason}")
    if capture.frames_read and decoder.datagrams == 0:
        raise CaptureError(f"{path}: no UDP datagram in {capture.frames_read} frame(s): nothing QUIC to read")
    rec = decoder.recording(path, capture.kind, capture.frames_read, warnings)
    summary = CaptureSummary(
        frames=capture.frames_read,
        datagrams=decoder.datagrams,
        packets=decoder.packets,
        decrypted=decoder.decrypted,
        connections=len(decoder.conns),
        client_hellos=sum(1 for c in decoder.conns if c.client_random is not None),
        matched_randoms=frozenset(decoder._used_randoms),
        unsupported=tuple(dict.fromkeys(version_name(c.version) for c in decoder.conns if not c.supported)),
        truncated=capture.truncated,
    )
    return rec, summary
