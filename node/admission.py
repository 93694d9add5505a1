"""Who gets a connection slot: Retry under load, limits per address and subnet, refusals told and counted.

A flood of QUIC Initials must not fill the node's slots, and a crowd of silent connections
must not keep honest peers out. The rules, decided here for every inbound Initial:

- up to RETRY_ABOVE_HALF_OPEN handshakes in progress, an Initial is admitted at once; past
  that, an Initial without our token gets a Retry (a small stateless packet) and only a
  client that echoes the token from its address is admitted: spoofed or fire-and-forget
  Initials cost no state;
- half-open and established connections have separate limits, in all and per address and
  per subnet, grouped as the routing table and the store group them (node/diversity.py:
  /24 for IPv4, /48 for IPv6; private addresses per address only, as one LAN holds many
  honest nodes; loopback exempt, as every node of a local cluster shares 127.0.0.1 and a
  loopback peer runs on this machine already);
- a refused peer is told so with CONNECTION_CLOSE (CONNECTION_REFUSED), at most
  REFUSALS_PER_S a second; beyond that it is dropped and counted;
- each kind of refusal is logged at most once per LOG_INTERVAL_S, with how many it stands for.

Sans-I/O: time comes in as an argument, nothing here reads a socket. The transport asks
`check` and tells `opened`, `established` and `gone`; it closes idle connections itself.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicErrorCode, QuicFrameType, QuicPacketType, encode_quic_retry
from aioquic.quic.packet_builder import QuicPacketBuilder

from .constants import (
    HANDSHAKE_TIMEOUT_S,
    IDLE_EVICTION_MIN_S,
    LOG_INTERVAL_S,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_CONNECTIONS_PER_SUBNET,
    MAX_HALF_OPEN_CONNECTIONS,
    MAX_HALF_OPEN_PER_ADDRESS,
    MIN_DATAGRAM_BYTES,
    REFUSAL_BURST,
    REFUSALS_PER_S,
    RETRIES_PER_S,
    RETRY_ABOVE_HALF_OPEN,
    RETRY_BURST,
    RETRY_TOKEN_LIFETIME_S,
)
from .diversity import network_group

log = logging.getLogger("dhtscope.admission")

Address = tuple[str, int]

RETRY_CID_BYTES = 8  # the connection id our Retry asks the client to use (aioquic's host_cid length)
TOKEN_VERSION = 1
TOKEN_TAG_BYTES = 16  # HMAC-SHA256 truncated: forging one still takes 2^128 tries
_TOKEN_FIXED_BYTES = 1 + 8 + 1  # version, issue time in ms, odcid length


# -- addresses --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Groups:
    """Where an address counts: `address` and `subnet`, None where it is exempt or has none."""

    address: str | None
    subnet: str | None


def address_groups(host: str, exempt_loopback: bool = True) -> Groups:
    """The groups `host` counts in: public addresses per address and subnet, private per address."""
    group = network_group(host, exempt_loopback)
    return Groups(group.address, group.subnet)


def _packed(addr: Address) -> bytes:
    try:
        host = ipaddress.ip_address(addr[0].split("%", 1)[0]).packed
    except ValueError:
        host = addr[0].encode("utf-8", "replace")
    return host + addr[1].to_bytes(2, "big")


# -- Retry tokens -----------------------------------------------------------------------------


class InvalidToken(ValueError):
    """A token we did not issue to this address and connection id, or one too old."""


class RetryTokens:
    """HMAC-protected Retry tokens: the address and port, the issue time, the client's first connection id.

    The token carries the original destination connection id in the clear (it crossed the
    wire in the clear already) so the server keeps no state between Retry and Initial.
    """

    def __init__(self, secret: bytes | None = None, lifetime_s: float = RETRY_TOKEN_LIFETIME_S) -> None:
        self._secret = secret or os.urandom(32)
        self.lifetime_s = lifetime_s

    def _tag(self, addr: Address, body: bytes, retry_cid: bytes) -> bytes:
        mac = hmac.new(self._secret, _packed(addr) + body + retry_cid, hashlib.sha256)
        return mac.digest()[:TOKEN_TAG_BYTES]

    def create(self, addr: Address, odcid: bytes, retry_cid: bytes, now: float) -> bytes:
        body = bytes([TOKEN_VERSION]) + int(now * 1000).to_bytes(8, "big") + bytes([len(odcid)]) + odcid
        return body + self._tag(addr, body, retry_cid)

    def validate(self, addr: Address, dcid: bytes, token: bytes, now: float) -> bytes:
        """The original destination connection id the token vouches for; InvalidToken otherwise."""
        if len(token) < _TOKEN_FIXED_BYTES + TOKEN_TAG_BYTES or token[0] != TOKEN_VERSION:
            raise InvalidToken("not a token of ours")
        odcid_len = token[9]
        end = _TOKEN_FIXED_BYTES + odcid_len
        if len(token) != end + TOKEN_TAG_BYTES:
            raise InvalidToken("token has the wrong length")
        body, tag = token[:end], token[end:]
        # The client must send its Initial to the connection id our Retry named, from the
        # address the Retry went to: both are in the MAC.
        if not hmac.compare_digest(tag, self._tag(addr, body, dcid)):
            raise InvalidToken("token was not issued to this address and connection id")
        issued_s = int.from_bytes(token[1:9], "big") / 1000
        if not 0 <= now - issued_s <= self.lifetime_s:
            raise InvalidToken("token has expired")
        return bytes(body[_TOKEN_FIXED_BYTES:])


def retry_datagram(
    tokens: RetryTokens, version: int, addr: Address, client_scid: bytes, odcid: bytes, now: float
) -> bytes:
    """A Retry packet asking the client at `addr` to prove it receives what we send there."""
    retry_cid = os.urandom(RETRY_CID_BYTES)
    return encode_quic_retry(
        version=version,
        source_cid=retry_cid,
        destination_cid=client_scid,
        original_destination_cid=odcid,
        retry_token=tokens.create(addr, odcid, retry_cid, now),
    )


def close_datagram(version: int, client_dcid: bytes, client_scid: bytes, error_code: int, reason: str) -> bytes:
    """A stateless Initial carrying CONNECTION_CLOSE: how a refused client learns it was refused.

    Initial keys derive from the client's destination connection id alone, so no connection
    state is needed (aioquic's server closes invalid tokens the same way).
    """
    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=client_dcid,
        is_client=False,
        max_datagram_size=MIN_DATAGRAM_BYTES,
        peer_cid=client_scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    phrase = reason.encode("utf-8")[:128]
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=1 + 3 * 8 + len(phrase))
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)  # the frame that caused it: none, the whole connection
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return datagrams[0]


# -- rates ----------------------------------------------------------------------------------------


class TokenBucket:
    """At most `rate_per_s` on average, `burst` at once; time comes in as an argument."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class LogLimiter:
    """One log line per kind per interval, saying how many occurrences it stands for."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()
        self.suppressed = 0

    def warning(self, kind: str, now: float, message: str) -> None:
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._since[kind] += 1
            self.suppressed += 1
            return
        more = self._since.pop(kind, 0)
        suffix = f" ({more} more like it in the last {now - last:.0f} s)" if more and last is not None else ""
        self._last[kind] = now
        self.logger.warning("%s%s", message, suffix)


# -- the decision ---------------------------------------------------------------------------------


class Verdict(enum.Enum):
    ADMIT = "admit"
    RETRY = "retry"  # validate the address first
    REFUSE = "refuse"  # over a limit: tell the peer (CONNECTION_REFUSED)
    FULL = "full"  # every slot taken: the transport may close an idle connection and ask again


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""


@dataclass(frozen=True)
class AdmissionLimits:
    """Every admission limit; tests shrink them, production uses the constants."""

    max_connections: int = MAX_CONNECTIONS
    max_half_open: int = MAX_HALF_OPEN_CONNECTIONS
    retry_above_half_open: int = RETRY_ABOVE_HALF_OPEN
    half_open_per_address: int = MAX_HALF_OPEN_PER_ADDRESS
    per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    per_subnet: int = MAX_CONNECTIONS_PER_SUBNET
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    idle_eviction_min_s: float = IDLE_EVICTION_MIN_S
    refusals_per_s: float = REFUSALS_PER_S
    refusal_burst: float = REFUSAL_BURST
    retries_per_s: float = RETRIES_PER_S
    retry_burst: float = RETRY_BURST
    exempt_loopback: bool = True  # False only where a test puts "remote" peers on 127.0.0.1

    def view(self) -> dict[str, Any]:
        """The limits by the names of their constants' units, for snapshots."""
        return {
            "max_connections": self.max_connections,
            "max_half_open": self.max_half_open,
            "retry_above_half_open": self.retry_above_half_open,
            "half_open_per_address": self.half_open_per_address,
            "connections_per_address": self.per_address,
            "connections_per_subnet": self.per_subnet,
            "handshake_timeout_s": self.handshake_timeout_s,
            "idle_eviction_min_s": self.idle_eviction_min_s,
            "refusals_per_s": self.refusals_per_s,
            "retry_token_lifetime_s": RETRY_TOKEN_LIFETIME_S,
            "loopback_exempt": self.exempt_loopback,
        }


@dataclass
class _Slot:
    groups: Groups
    inbound: bool
    established: bool = False


@dataclass
class Admission:
    """Counts of half-open and established connections, in all and per group, and the verdicts."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    tokens: RetryTokens = field(default_factory=RetryTokens)

    def __post_init__(self) -> None:
        self._slots: dict[Any, _Slot] = {}
        self.half_open = 0  # inbound handshakes in progress
        self.dialing = 0  # our own handshakes in progress
        self.established_count = 0
        self._half_open_by: Counter[str] = Counter()
        self._by: Counter[str] = Counter()  # connections (either state) per address and per subnet
        self.counters: Counter[str] = Counter()
        self._refusals = TokenBucket(self.limits.refusals_per_s, self.limits.refusal_burst)
        self._retries = TokenBucket(self.limits.retries_per_s, self.limits.retry_burst)
        self.logs = LogLimiter(log)

    @property
    def total(self) -> int:
        return len(self._slots)

    def groups(self, host: str) -> Groups:
        return address_groups(host, self.limits.exempt_loopback)

    def check(self, host: str, validated: bool) -> Decision:
        """What to do with a new inbound Initial from `host` (validated: it carried our valid token)."""
        lim = self.limits
        if not validated and self.half_open >= lim.retry_above_half_open:
            return Decision(Verdict.RETRY)
        if self.half_open >= lim.max_half_open:
            return Decision(Verdict.REFUSE, f"{self.half_open} handshakes in progress (at most {lim.max_half_open})")
        g = self.groups(host)
        if g.address is not None:
            if self._half_open_by[g.address] >= lim.half_open_per_address:
                if not validated:
                    return Decision(Verdict.RETRY)
                return Decision(Verdict.REFUSE, f"{lim.half_open_per_address} handshakes in progress from {g.address}")
            if self._by[g.address] >= lim.per_address:
                return Decision(Verdict.REFUSE, f"{lim.per_address} connections from {g.address}")
        if g.subnet is not None and self._by[g.subnet] >= lim.per_subnet:
            return Decision(Verdict.REFUSE, f"{lim.per_subnet} connections from {g.subnet}")
        if self.total >= lim.max_connections:
            return Decision(Verdict.FULL, f"all {lim.max_connections} connection slots taken")
        return Decision(Verdict.ADMIT)

    def has_room(self) -> bool:
        """A slot for a connection we dial ourselves (outbound: no per-address limit of our own)."""
        return self.total < self.limits.max_connections

    def opened(self, key: Any, host: str, inbound: bool = True) -> None:
        """A connection took a slot: half-open until `established`."""
        if key in self._slots:
            return
        groups = self.groups(host) if inbound else Groups(None, None)
        self._slots[key] = _Slot(groups, inbound)
        if inbound:
            self.half_open += 1
        else:
            self.dialing += 1
        for name in (groups.address, groups.subnet):
            if name is not None:
                self._by[name] += 1
        if groups.address is not None:
            self._half_open_by[groups.address] += 1

    def established(self, key: Any) -> None:
        slot = self._slots.get(key)
        if slot is None or slot.established:
            return
        slot.established = True
        self._end_handshake(slot)
        self.established_count += 1

    def gone(self, key: Any) -> None:
        """The connection closed, was evicted or abandoned: its slot is free (idempotent)."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        if slot.established:
            self.established_count -= 1
        else:
            self._end_handshake(slot)
        for name in (slot.groups.address, slot.groups.subnet):
            if name is not None:
                _decrement(self._by, name)

    def _end_handshake(self, slot: _Slot) -> None:
        if not slot.inbound:
            self.dialing -= 1
            return
        self.half_open -= 1
        if slot.groups.address is not None:
            _decrement(self._half_open_by, slot.groups.address)

    def may_send_refusal(self, now: float) -> bool:
        ok = self._refusals.take(now)
        self.counters["refusals_sent" if ok else "refusals_unsent"] += 1
        return ok

    def may_send_retry(self, now: float) -> bool:
        ok = self._retries.take(now)
        self.counters["retries_sent" if ok else "retries_unsent"] += 1
        return ok

    def view(self) -> dict[str, Any]:
        """Limits, current use and every counter, for Node.snapshot()['limits']."""
        return {
            "admission": self.limits.view(),
            "connections": {
                "half_open": self.half_open,
                "dialing": self.dialing,
                "established": self.established_count,
                "slots_used": self.total,
            },
            "counters": dict(sorted(self.counters.items())),
            "log_lines_suppressed": self.logs.suppressed,
        }


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


REFUSED_ERROR = int(QuicErrorCode.CONNECTION_REFUSED)
INVALID_TOKEN_ERROR = int(QuicErrorCode.INVALID_TOKEN)
