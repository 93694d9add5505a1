"""The DHT node: the sans-I/O core (routing, lookup, records) driven over QUIC."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .admission import AdmissionLimits
from .constants import (
    ALPHA,
    BUCKET_REFRESH_S,
    CONNECT_TIMEOUT_S,
    FIND_VALUE_QUORUM,
    LOOKUP_DIAL_TIMEOUT_S,
    MAINTENANCE_INTERVAL_S,
    MAX_DATAGRAM_BYTES,
    MAX_PENDING_VERIFICATIONS,
    MAX_RECORDS_PER_MESSAGE,
    MAX_SEEN_CONTACTS,
    MAX_UDP_PAYLOAD_BYTES,
    MIN_DATAGRAM_BYTES,
    PERSIST_COMMIT_INTERVAL_S,
    RECORD_TTL_S,
    REQUEST_TIMEOUT_S,
    ROUTING_SEEN_INTERVAL_S,
    STORE_BURST_RECORDS,
    STORE_RECORDS_PER_S,
    STREAM_CREDIT_WAIT_S,
    K,
)
from .diversity import AddressLimits
from .guards import RecentFailures, TokenBucket
from .ids import Contact, NodeId
from .keys import Identity
from .lookup import Hop, Lookup, LookupResult
from .persistence import NodeState, PersistenceError
from .records import Advertisements, Record, RecordError, SignatureCache, verify
from .routing import REFUSED, RoutingChange, RoutingTable
from .rpc import MemoryLimits, PeerMismatch, RemoteError, RpcEndpoint, RpcError, contact_of, message_name
from .scenarios import DEFAULT_LOSS, Faults, apply_scenario
from .store import RecordStore
from .transport import Address, Conn, Endpoint, TransportError
from .wire import (
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Message,
    Nodes,
    Ping,
    Pong,
    Sender,
    Store,
    StoreResult,
    Value,
)

log = logging.getLogger("dhtscope.node")

DEFAULT_ADDRESS_LIMITS = AddressLimits()

EventListener = Callable[[str, dict[str, Any], "Conn | None"], None]


class NodeError(Exception):
    """An operation the node could not carry out, with a reason a user can act on."""


@dataclass(frozen=True)
class StoreReport:
    """What a STORE reached: how many of the closest nodes accepted each record."""

    key: NodeId
    targets: tuple[Contact, ...]
    accepted: tuple[Contact, ...]
    refused: tuple[tuple[Contact, str], ...]
    stored_locally: bool
    lookup: LookupResult | None

    @property
    def replicas(self) -> int:
        return len(self.accepted) + (1 if self.stored_locally else 0)


@dataclass(frozen=True)
class Discovery:
    service: str
    records: tuple[Record, ...]
    lookup: LookupResult


@dataclass
class NodeStats:
    requests_handled: dict[str, int] = field(default_factory=dict)
    lookups: int = 0
    identity_mismatches: int = 0
    contacts_refused: int = 0  # over an address or subnet limit of the routing table
    contacts_unverified: int = 0  # their claimed address did not answer as them
    lookup_skips: int = 0  # contacts a lookup did not dial because they failed lately
    stores_overloaded: int = 0  # STOREs refused by the per-connection rate limit


class Node:
    """A Kademlia node over QUIC. Construct, `await start()`, use, `await stop()`."""

    def __init__(
        self,
        identity: Identity | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        role: str = "node",
        faults: Faults | None = None,
        recorder: Any = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        record_ttl_s: float = RECORD_TTL_S,
        republish_margin_s: float | None = None,
        maintenance_interval_s: float = MAINTENANCE_INTERVAL_S,
        bucket_refresh_s: float = BUCKET_REFRESH_S,
        clock: Callable[[], float] = time.time,
        client_mode: bool = False,
        max_datagram_bytes: int = MAX_DATAGRAM_BYTES,
        address_limits: AddressLimits | None = DEFAULT_ADDRESS_LIMITS,
        dial_timeout_s: float = LOOKUP_DIAL_TIMEOUT_S,
        store_records_per_s: float = STORE_RECORDS_PER_S,
        store_burst_records: int = STORE_BURST_RECORDS,
        store: RecordStore | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        admission_limits: AdmissionLimits | None = None,
        memory_limits: MemoryLimits | None = None,
        pcap: str | None = None,
        keylog: str | None = None,
    ) -> None:
        """`pcap` and `keylog`: write every datagram the node sends and receives to a pcapng
        capture, and its TLS secrets to an NSS key log, so the capture can be decrypted."""
        self.identity = identity or Identity.generate()
        self.id = self.identity.node_id
        self.name = name or self.id.short()
        self.role = role
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.recorder = recorder
        self.pcap = pcap
        self.keylog = keylog
        self.clock = clock
        # A client-mode node (a probe) never tells peers its port, so nobody adds it
        # to a routing table where it would linger after the process is gone.
        self.client_mode = client_mode
        if not MIN_DATAGRAM_BYTES <= max_datagram_bytes <= MAX_UDP_PAYLOAD_BYTES:
            raise ValueError(
                f"max_datagram_bytes must be {MIN_DATAGRAM_BYTES}..{MAX_UDP_PAYLOAD_BYTES}, got {max_datagram_bytes}"
            )
        self.max_datagram_bytes = max_datagram_bytes
        self.admission_limits = admission_limits
        self.memory_limits = memory_limits
        self.request_timeout_s = request_timeout_s
        self.maintenance_interval_s = maintenance_interval_s
        self.bucket_refresh_s = bucket_refresh_s
        self.dial_timeout_s = min(dial_timeout_s, CONNECT_TIMEOUT_S)
        self.routing = RoutingTable(self.id, limits=address_limits)
        self.store_ = store if store is not None else RecordStore()
        self.failures = RecentFailures()
        # A record met again (every lookup of a service meets the same few) costs no second Ed25519 check.
        self.signatures = SignatureCache()
        # Contacts the routing table heard from lately: their next answers within
        # ROUTING_SEEN_INTERVAL_S cost no table update (when they were last seen, for LRU order).
        self._seen_at: dict[Contact, float] = {}
        self.store_rate = (store_records_per_s, store_burst_records)
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.persistence: NodeState | None = None
        self.state_loaded: dict[str, Any] | None = None  # what start() read back from data_dir
        self._persist_failing = False
        ad_args: dict[str, Any] = {"ttl_s": record_ttl_s}
        if republish_margin_s is not None:
            ad_args["margin_s"] = republish_margin_s
        self.advertisements = Advertisements(self.identity, **ad_args)
        self.stats = NodeStats()
        self.listeners: list[EventListener] = []
        self.rpc: RpcEndpoint | None = None
        self.started_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._lookup_ids = 0
        self._rng = random.Random()
        self._stopping = False
        self._pinging: set[NodeId] = set()  # oldest contacts being checked, one PING each
        self._verifying: set[tuple[NodeId, str, int]] = set()  # claimed addresses being PINGed
        self._store_rate: weakref.WeakKeyDictionary[Conn, TokenBucket] = weakref.WeakKeyDictionary()

    # -- life -----------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def contact(self) -> Contact:
        return Contact(self.id, self.host, self.port)

    async def start(self) -> None:
        if self.data_dir is not None:
            try:
                self.persistence = NodeState(self.data_dir)
            except PersistenceError as exc:
                raise NodeError(str(exc)) from None
        try:
            await self._start()
        except BaseException:
            if self.persistence is not None:
                self.persistence.close()
                self.persistence = None
            raise

    async def _start(self) -> None:
        quic_logger = self.recorder.quic_logger() if self.recorder is not None else None
        if self.recorder is not None and hasattr(self.recorder, "on_stopped"):
            self.recorder.on_stopped = self._recording_stopped
        if self.keylog is not None:
            try:
                with open(self.keylog, "a"):
                    pass
            except OSError as exc:
                raise NodeError(f"{self.keylog}: cannot write the key log ({exc.strerror or exc})") from None
        capture = None
        if self.pcap is not None:
            from dhtscope.tracing.capture import CaptureError

            from .capture import PacketCapture

            try:
                capture = PacketCapture(self.pcap, self.name)
            except CaptureError as exc:
                raise NodeError(str(exc)) from None

        def make_endpoint(owner: RpcEndpoint) -> Endpoint:
            return Endpoint(
                self.identity,
                owner,
                faults=self.faults,
                quic_logger=quic_logger,
                max_datagram_bytes=self.max_datagram_bytes,
                limits=self.admission_limits,
                secrets_log=self.keylog,
                capture=capture,
            )

        self.rpc = RpcEndpoint(make_endpoint, self._sender, self._handle, self.faults, self.memory_limits)
        self.rpc.endpoint.event_sink = self._connection_event
        self.rpc.endpoint.listeners = self.listeners  # the same list: listeners added later count too
        try:
            host, port = await self.rpc.endpoint.listen(self.host, self.port)
        except OSError as exc:
            raise NodeError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = port
        self.started_at = self.clock()
        self.emit(
            "dht:node_started",
            {
                "node_id": self.id.hex(),
                "address": self.address,
                "role": self.role,
                "name": self.name,
                "scenario": self.faults.names(),
            },
        )
        if self.persistence is not None:
            self._load_state(self.persistence)
            self._spawn(self._persist())
        self._maintenance = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        self._stopping = True
        if self._maintenance is not None:
            self._maintenance.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(t for t in [self._maintenance, *self._tasks] if t), return_exceptions=True)
        if self.rpc is not None:
            await self.rpc.close()
        if self.persistence is not None:
            self._commit_state()
            self.persistence.close()
            self.persistence = None
        if self.recorder is not None:
            self.recorder.close()

    # -- persistence ------------------------------------------------------------------

    def _load_state(self, state: NodeState) -> None:
        """Records and contacts saved by an earlier run, each checked again as if it had just arrived."""
        now = self.clock()
        records = refused = 0
        for saved in state.load_records():
            outcome = self.store_.put(saved.record, now, origin=saved.origin, keep_until=saved.kept_until)
            if outcome.accepted:
                records += 1
                for gone in (*outcome.evicted, *outcome.purged):
                    state.record_removed(gone)
            else:
                refused += 1
                state.record_removed(saved.record)
        contacts = 0
        for contact, last_seen in state.load_contacts():
            if contact.node_id != self.id and self.routing.seen(contact, last_seen).action == "added":
                contacts += 1
        self.state_loaded = {
            "data_dir": self.data_dir,
            "records": records,
            "records_refused": refused,
            "contacts": contacts,
        }
        self.emit("dht:state_loaded", self.state_loaded)

    async def _persist(self) -> None:
        while not self._stopping:
            await asyncio.sleep(PERSIST_COMMIT_INTERVAL_S)
            self._commit_state()

    def _commit_state(self) -> None:
        state = self.persistence
        if state is None or not state.pending:
            return
        contacts = ((e.contact, e.last_seen) for b in self.routing.buckets() for e in b.contacts)
        try:
            state.commit(contacts)
        except PersistenceError as exc:
            if not self._persist_failing:  # once per outage, not once per commit
                log.warning("%s; the node keeps serving and retries", exc)
            self._persist_failing = True
            return
        if self._persist_failing:
            log.warning("writing %s works again", self.data_dir)
            self._persist_failing = False

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ---------------------------------------------------------------

    @property
    def traced(self) -> bool:
        """Whether anything reads node events (a recorder or a live listener); hot paths skip building them."""
        return self.recorder is not None or bool(self.listeners)

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """A node-level event: into the node's trace and to live listeners."""
        if self.recorder is not None:
            self.recorder.log(name, data)
        for listener in self.listeners:
            listener(name, data, None)

    def _recording_stopped(self, info: dict[str, Any]) -> None:
        """The recorder gave up (a read-only or removed directory, a full disk): say so; keep serving."""
        self.emit("dht:recording_stopped", {"reason": info.get("reason"), "errno": info.get("errno")})

    def _connection_event(self, conn: Conn, name: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(name, data, conn)

    # -- the handler: one request in, one response out --------------------------

    def _sender(self) -> Sender | None:
        return None if self.client_mode else Sender(self.id, self.port)

    def _handle(self, conn: Conn, request: Message) -> Message | None:
        kind = message_name(request)
        self.stats.requests_handled[kind] = self.stats.requests_handled.get(kind, 0) + 1
        if request.sender is not None:
            contact = contact_of(conn, request.sender)
            if contact is None:
                self.stats.identity_mismatches += 1
                claimed = request.sender.node_id.short()
                actual = conn.peer_id.short() if conn.peer_id else "no key"
                return Error(
                    request.request_id,
                    code=ErrorCode.IDENTITY_MISMATCH,
                    reason=f"claimed id {claimed} is not SHA-256 of your TLS key ({actual})",
                )
            conn.peer_port = request.sender.port
            self._learn(conn, contact)
        now = self.clock()
        rid = request.request_id
        if isinstance(request, Ping):
            return Pong(rid)
        if isinstance(request, FindNode):
            return Nodes(rid, contacts=tuple(self.routing.closest(request.target, K, exclude=conn.peer_id)))
        if isinstance(request, FindValue):
            return Value(
                rid,
                records=tuple(self.store_.get(request.key, now)[:MAX_RECORDS_PER_MESSAGE]),
                contacts=tuple(self.routing.closest(request.key, K, exclude=conn.peer_id)),
            )
        if isinstance(request, Store):
            bucket = self._store_rate.get(conn)
            if bucket is None:
                bucket = self._store_rate[conn] = TokenBucket(*self.store_rate, now)
            wait_s = bucket.take(len(request.records), now)
            if wait_s is not None:
                self.stats.stores_overloaded += 1
                return Error(
                    rid,
                    code=ErrorCode.OVERLOADED,
                    reason=f"STORE rate limit: {bucket.rate_per_s:g} records/s per connection "
                    f"(burst {bucket.burst:g}); retry in {min(wait_s, 3600.0):.1f} s",
                )
            origin = conn.addr[0]
            results = [self._accept_record(record, now, conn.peer_id, origin) for record in request.records]
            return StoreResult(rid, results=tuple(results))
        return Error(rid, code=ErrorCode.UNKNOWN_TYPE, reason=f"{kind} is not handled")

    def _accept_record(
        self, record: Record, now: float, from_peer: NodeId | None, origin: str | None
    ) -> tuple[bool, str]:
        outcome = self.store_.put(record, now, from_peer=from_peer, origin=origin)
        if self.persistence is not None:
            self.persistence.record_outcome(outcome, origin)
        for gone in outcome.evicted:
            self.emit(
                "dht:record_evicted",
                {"key": gone.key.hex(), "publisher": gone.publisher.hex(), "name": gone.name, "for": record.key.hex()},
            )
        base = {
            "key": record.key.hex(),
            "publisher": record.publisher.hex(),
            "from_peer": from_peer.hex() if from_peer else None,
        }
        if outcome.accepted:
            self.emit(
                "dht:record_stored",
                {
                    **base,
                    "seq": record.seq,
                    "action": outcome.action,
                    "expires_at_ms": round(record.expires_at * 1000),
                    "name": record.name,
                    **({"clamped": outcome.clamped} if outcome.clamped else {}),
                },
            )
        else:
            self.emit("dht:record_refused", {**base, "reason": outcome.reason})
        return outcome.accepted, outcome.summary

    # -- routing ----------------------------------------------------------------

    def _learn(self, conn: Conn, contact: Contact) -> None:
        """A peer proved its id on `conn` and claims to listen at `contact`'s address.

        An address the connection itself came from is proven: we dialled it, or the peer's
        datagrams came from it and its handshake completed, which QUIC allows only when the
        peer receives at that address (RFC 9000 section 8.1), and a node sends from the
        socket it listens on. Any other claim enters the table only once a PING to it, on a
        connection we open, is answered by the same node id.
        """
        if contact.node_id == self.id:
            return
        if conn.addr == (contact.host, contact.port):
            self._saw(contact)
            return
        known = self.routing.get(contact.node_id)
        if known is not None and (known.host, known.port) == (contact.host, contact.port):
            self._saw(contact)
            return
        self._verify_later(contact)

    def _verify_later(self, contact: Contact) -> None:
        key = (contact.node_id, contact.host, contact.port)
        if key in self._verifying or len(self._verifying) >= MAX_PENDING_VERIFICATIONS or self._stopping:
            return  # the peer's next request tries again
        if self.failures.recent((contact.host, contact.port), self.clock()) is not None:
            self.stats.contacts_unverified += 1
            return
        if self.routing.admissible(contact) is not None:
            self.stats.contacts_refused += 1
            return  # not worth a handshake: the table would refuse it anyway
        self._verifying.add(key)
        self._spawn(self._verify(contact, key))

    async def _verify(self, contact: Contact, key: tuple[NodeId, str, int]) -> None:
        rpc = self._require_started()
        try:
            await self._call(contact, Ping(rpc.next_request_id()), dial_timeout_s=self.dial_timeout_s, verify=True)
        except (NodeError, RemoteError) as exc:
            self.stats.contacts_unverified += 1
            self.emit(
                "dht:routing_updated",
                {
                    "action": "unverified",
                    "peer_id": contact.node_id.hex(),
                    "address": contact.address,
                    "bucket": self.id.bucket_index(contact.node_id),
                    "reason": f"claimed address did not answer as this node: {exc}",
                },
            )
        finally:
            self._verifying.discard(key)

    def _saw(self, contact: Contact) -> None:
        if contact.node_id == self.id:
            return
        now = self.clock()
        seen = self._seen_at
        last = seen.get(contact)
        if last is not None and 0.0 <= now - last < ROUTING_SEEN_INTERVAL_S:
            return  # the table moved it to the tail of its bucket a moment ago; the same again changes nothing
        if len(seen) >= MAX_SEEN_CONTACTS:
            seen.clear()
        seen[contact] = now
        change = self.routing.seen(contact, now)
        if change.action == REFUSED:
            self.stats.contacts_refused += 1
        self._log_change(change)
        if change.ping is not None and change.ping.node_id not in self._pinging:
            self._pinging.add(change.ping.node_id)
            self._spawn(self._check_oldest(change.ping))

    def _log_change(self, change: RoutingChange | None) -> None:
        if change is None or change.action == "ignored" or (change.action == "updated" and change.previous is None):
            return
        if self.persistence is not None and change.action != REFUSED:
            self.persistence.routing_changed()
        if change.action == "updated":
            return
        self.emit(
            "dht:routing_updated",
            {
                "action": change.action,
                "peer_id": change.contact.node_id.hex(),
                "address": change.contact.address,
                "bucket": change.bucket,
                **({"reason": change.reason} if change.reason else {}),
            },
        )
        if change.promoted is not None:
            self.emit(
                "dht:routing_updated",
                {
                    "action": "added",
                    "peer_id": change.promoted.node_id.hex(),
                    "address": change.promoted.address,
                    "bucket": change.bucket,
                },
            )

    async def _check_oldest(self, oldest: Contact) -> None:
        """A full bucket met a newcomer: the oldest contact keeps its place only if it still answers."""
        try:
            await self.ping(oldest)
        except (RpcError, TransportError, NodeError):
            self._failed(oldest)
        finally:
            self._pinging.discard(oldest.node_id)

    def _failed(self, contact: Contact) -> None:
        self._seen_at.pop(contact, None)
        self._log_change(self.routing.failed(contact.node_id, self.clock()))

    # -- RPCs -------------------------------------------------------------------

    def _require_started(self) -> RpcEndpoint:
        if self.rpc is None:
            raise NodeError("node is not started")
        return self.rpc

    async def _call(
        self,
        target: Contact | Address,
        message: Message,
        *,
        dial_timeout_s: float = CONNECT_TIMEOUT_S,
        verify: bool = False,
    ) -> tuple[Message, float, Conn]:
        """One request to a contact (or a bare address); the contact is marked failed if it does not answer.

        `verify`: on a connection we dial to the contact's address, never on one the peer opened,
        and a failure costs the contact nothing but this attempt.
        """
        rpc = self._require_started()
        if isinstance(target, Contact):
            addr, expected = (target.host, target.port), target.node_id
        else:
            addr, expected = target, None
        try:
            timeout_s = min(dial_timeout_s, self.request_timeout_s)
            if verify:
                conn = await rpc.connection_to(addr, None, timeout_s)
                if conn.peer_id != expected:
                    seen = conn.peer_id.short() if conn.peer_id else "an unidentified node"
                    want = expected.short() if expected else "the node asked for"
                    raise PeerMismatch(f"{addr[0]}:{addr[1]} is {seen}, not {want}")
            else:
                conn = await rpc.connection_to(addr, expected, timeout_s)
            response, rtt = await rpc.request(
                conn,
                message,
                self.request_timeout_s,
                min(STREAM_CREDIT_WAIT_S, 3 * self.request_timeout_s),
                sender=self._sender(),
            )
        except RemoteError:
            raise
        except (RpcError, TransportError) as exc:
            self.failures.failed(addr, self.clock(), str(exc))
            if isinstance(target, Contact) and not verify:
                self._failed(target)
            raise NodeError(str(exc)) from None
        self.failures.succeeded(addr)
        if conn.peer_id is not None and response.sender is not None and response.sender.node_id == conn.peer_id:
            # On a connection we dialled, the address is the one that answered; on one the peer
            # opened, its claimed port is checked before it counts.
            port = conn.addr[1] if conn.role == "client" else response.sender.port
            self._learn(conn, Contact(conn.peer_id, conn.addr[0], port))
        return response, rtt, conn

    async def ping(self, target: Contact | Address) -> float:
        """Round-trip time in seconds of one PING."""
        rpc = self._require_started()
        response, rtt, _ = await self._call(target, Ping(rpc.next_request_id()))
        if not isinstance(response, Pong):
            raise NodeError(f"PING answered with {response.TYPE.name}")
        return rtt

    async def bootstrap(self, addresses: list[Address]) -> int:
        """Join through known nodes: PING each, then look up our own id and refresh every bucket.

        The self-lookup is what fills the table beyond the bootstrap node; without it
        a node only ever knows its bootstrap contact.
        """
        reached = 0
        errors = []
        for addr in addresses:
            try:
                await self.ping(addr)
                reached += 1
            except (NodeError, RemoteError) as exc:
                errors.append(f"{addr[0]}:{addr[1]}: {exc}")
        if addresses and not reached:
            raise NodeError("no bootstrap node answered: " + "; ".join(errors))
        await self.find_node(self.id)
        await self.refresh(force=True)
        return len(self.routing)

    async def refresh(self, force: bool = False) -> int:
        """Look up a random id in each stale bucket; returns how many buckets were refreshed."""
        now = self.clock()
        stale = self.routing.stale_buckets(now, 0.0 if force else self.bucket_refresh_s)
        for index in stale:
            self.routing.touch_bucket(index, now)
        targets = [self.routing.random_id_in_bucket(i, self._rng) for i in stale]
        # Refreshing the far buckets in parallel keeps joining fast; each is its own lookup.
        sem = asyncio.Semaphore(ALPHA)

        async def one(target: NodeId) -> None:
            async with sem:
                await self.find_node(target)

        await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
        return len(targets)

    async def find_node(self, target: NodeId) -> LookupResult:
        return await self._lookup(target, "find_node")

    async def find_value(self, key: NodeId, quorum: int | None = FIND_VALUE_QUORUM) -> LookupResult:
        """Records under `key` gathered from the first `quorum` nodes holding any (None: all k closest)."""
        result = await self._lookup(key, "find_value", quorum)
        local = self.store_.get(key, self.clock())
        if local:
            merged = _latest_per_publisher([*result.values, *local])
            result = _replace_values(result, merged)
        return result

    async def _lookup(self, target: NodeId, kind: str, quorum: int | None = None) -> LookupResult:
        self._require_started()
        self._lookup_ids += 1
        lookup_id = f"{self.id.short()}-{self._lookup_ids}"
        self.stats.lookups += 1
        now = self.clock()
        index = self.id.bucket_index(target)
        if index >= 0:
            self.routing.touch_bucket(index, now)
        seeds = self.routing.closest(target, K)
        if not seeds:
            self.emit("dht:lookup_started", {"lookup_id": lookup_id, "kind": kind, "target": target.hex()})
            self.emit(
                "dht:lookup_finished",
                {
                    "lookup_id": lookup_id,
                    "rounds": 0,
                    "messages": 0,
                    "found": False,
                    "values": 0,
                    "closest": [],
                    "error": "routing table is empty",
                },
            )
            raise NodeError("routing table is empty: bootstrap from a known node first (--bootstrap HOST:PORT)")
        lookup = Lookup(
            target,
            seeds,
            kind,
            now,
            self_id=self.id,
            value_quorum=quorum,
            value_key=lambda r: (r.publisher.value, r.seq),
        )
        traced = self.traced
        if traced:
            self.emit("dht:lookup_started", {"lookup_id": lookup_id, "kind": kind, "target": target.hex()})
        pending: dict[asyncio.Task[Any], Contact] = {}
        logged = 0
        try:
            while not lookup.done:
                self._launch_queries(lookup, pending, kind, target)
                if not pending:
                    break
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    contact = pending.pop(task)
                    self._lookup_answer(lookup, contact, task)
                if traced:
                    logged = self._log_hops(lookup_id, lookup.hops, logged)
        finally:
            for task in pending:
                task.cancel()
        result = lookup.result()
        values = [r for r in result.values if self._valid(r)]
        result = _replace_values(result, _latest_per_publisher(values))
        if traced:
            self._log_hops(lookup_id, result.hops, logged)
            self.emit(
                "dht:lookup_finished",
                {
                    "lookup_id": lookup_id,
                    "kind": kind,
                    "rounds": result.rounds,
                    "messages": result.messages,
                    "found": result.found,
                    "values": len(result.values),
                    "closest": [c.node_id.hex() for c in result.closest],
                },
            )
        return result

    def _launch_queries(
        self, lookup: Lookup, pending: dict[asyncio.Task[Any], Contact], kind: str, target: NodeId
    ) -> None:
        """Query whom the lookup asks for; a contact that failed lately counts as failed at once."""
        rpc = self._require_started()
        while True:
            now = self.clock()
            batch = lookup.next_queries(now)
            if not batch:
                return
            for contact in batch:
                recent = self.failures.recent((contact.host, contact.port), now)
                if recent is not None:
                    self.stats.lookup_skips += 1
                    lookup.on_failure(contact, now, f"skipped: {recent}")
                    continue
                message: Message = (
                    FindValue(rpc.next_request_id(), key=target)
                    if kind == "find_value"
                    else FindNode(rpc.next_request_id(), target=target)
                )
                task = asyncio.create_task(self._call(contact, message, dial_timeout_s=self.dial_timeout_s))
                # A lookup cancelled mid-flight (the node stopping) never reads its tasks' outcomes:
                # read them here, or asyncio logs each failed one with a traceback.
                task.add_done_callback(_outcome_read)
                pending[task] = contact

    def _lookup_answer(self, lookup: Lookup, contact: Contact, task: asyncio.Task[Any]) -> None:
        now = self.clock()
        exc = task.exception()
        if exc is not None:
            lookup.on_failure(contact, now, str(exc))
            return
        response = task.result()[0]
        # The lookup skips this node's own id, and reads the contacts it does not know yet.
        if isinstance(response, Nodes):
            lookup.on_response(contact, now, response.contacts)
        elif isinstance(response, Value):
            lookup.on_response(contact, now, response.contacts, list(response.records))
        else:
            lookup.on_failure(contact, now, f"unexpected {response.TYPE.name}")

    def _log_hops(self, lookup_id: str, hops: list[Hop] | tuple[Hop, ...], start: int) -> int:
        for hop in list(hops)[start:]:
            if hop.rtt_s is None and hop.error is None:
                return start  # still in flight; log it once answered
            self.emit(
                "dht:lookup_round",
                {
                    "lookup_id": lookup_id,
                    "round": hop.round,
                    "peer_id": hop.contact.node_id.hex(),
                    "address": hop.contact.address,
                    "rtt_ms": round(hop.rtt_s * 1000, 3) if hop.rtt_s is not None else None,
                    "returned": [c.node_id.hex() for c in hop.returned],
                    "values": hop.values,
                    "error": hop.error,
                },
            )
            start += 1
        return start

    def _valid(self, record: Record) -> bool:
        try:
            self.signatures.verify(record, self.clock())
        except RecordError as exc:
            log.info("dropping record from lookup: %s", exc)
            return False
        return True

    # -- storing and discovery ------------------------------------------------------

    async def store(self, key: NodeId, value: bytes, name: str | None = None) -> StoreReport:
        """Sign a record for (key, value), keep republishing it, and STORE it at the k closest nodes."""
        record = self.advertisements.add(key, value, name, self.clock())
        return await self.store_record(record)

    async def store_record(self, record: Record) -> StoreReport:
        rpc = self._require_started()
        lookup = await self.find_node(record.key)
        targets = list(lookup.closest[:K])
        stored_locally = False
        if not self.client_mode and (
            len(targets) < K or record.key.distance(self.id) < record.key.distance(targets[-1].node_id)
        ):
            outcome = self.store_.put(record, self.clock(), from_peer=self.id)
            if self.persistence is not None:
                self.persistence.record_outcome(outcome, None)
            stored_locally = outcome.accepted

        async def one(contact: Contact) -> tuple[Contact, bool, str]:
            try:
                response, _, _ = await self._call(contact, Store(rpc.next_request_id(), records=(record,)))
            except (NodeError, RemoteError) as exc:
                return contact, False, str(exc)
            if isinstance(response, StoreResult) and response.results:
                ok, reason = response.results[0]
                return contact, ok, reason
            return contact, False, f"unexpected {response.TYPE.name}"

        outcomes = await asyncio.gather(*(one(c) for c in targets))
        accepted = tuple(c for c, ok, _ in outcomes if ok)
        refused = tuple((c, reason) for c, ok, reason in outcomes if not ok)
        report = StoreReport(record.key, tuple(targets), accepted, refused, stored_locally, lookup)
        self.emit(
            "dht:store_result",
            {
                "key": record.key.hex(),
                "name": record.name,
                "replicas": report.replicas,
                "targets": len(targets),
                "refused": [[c.node_id.hex(), r] for c, r in refused],
            },
        )
        return report

    async def advertise(self, service: str, endpoint: str) -> StoreReport:
        """Announce that `endpoint` provides `service`; republished before it expires while the node runs."""
        return await self.store(NodeId.for_name(service), endpoint.encode("utf-8"), name=service)

    async def discover(self, service: str, quorum: int | None = FIND_VALUE_QUORUM) -> Discovery:
        """Every live provider of `service` the network knows."""
        result = await self.find_value(NodeId.for_name(service), quorum)
        return Discovery(service, tuple(result.values), result)

    # -- maintenance ------------------------------------------------------------------

    async def _maintain(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.maintenance_interval_s)
            try:
                await self._maintain_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # maintenance must survive a bad round
                log.exception("maintenance round failed")

    async def _maintain_once(self) -> None:
        now = self.clock()
        for record in self.store_.expire(now):
            if self.persistence is not None:
                self.persistence.record_removed(record)
            self.emit(
                "dht:record_expired",
                {"key": record.key.hex(), "publisher": record.publisher.hex(), "name": record.name},
            )
        for record in self.advertisements.due(now):
            if len(self.routing) == 0:
                break
            self._spawn(self._republish(record))
        if len(self.routing):
            await self.refresh()

    async def _republish(self, record: Record) -> None:
        try:
            await self.store_record(record)
        except NodeError as exc:
            log.info("republish of %s failed: %s", record.name or record.key.short(), exc)

    # -- faults ----------------------------------------------------------------------------

    def set_scenario(self, name: str, loss: float = DEFAULT_LOSS) -> dict[str, Any]:
        """Switch this node's fault scenario live (ValueError for an unknown name); every mode calls this."""
        previous = self.faults.names()
        # In place: the transport and the RPC layer hold this very object and read it live.
        notes = apply_scenario(self.faults, name, loss)
        self.emit("dht:scenario_changed", {"scenario": name, "faults": self.faults.names(), "previous": previous})
        return {"scenario": name, "faults": self.faults.names(), "previous": previous, "notes": notes}

    # -- views ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a viewer shows about this node, as plain data."""
        now = self.clock()
        rpc = self.rpc
        conns = rpc.connections() if rpc else []
        return {
            "node": {
                "name": self.name,
                "id": self.id.hex(),
                "address": self.address,
                "role": self.role,
                "faults": self.faults.names(),
                "started_at": self.started_at,
                "contacts": len(self.routing),
                "records": len(self.store_),
                "recording": self.recorder.view() if hasattr(self.recorder, "view") else None,
            },
            "connections": [connection_view(c) for c in conns],
            "routing": [
                {
                    "index": b.index,
                    "contacts": [
                        {
                            "id": e.contact.node_id.hex(),
                            "address": e.contact.address,
                            "last_seen": e.last_seen,
                            "failures": e.failures,
                        }
                        for e in b.contacts
                    ],
                    "replacements": [
                        {"id": e.contact.node_id.hex(), "address": e.contact.address, "last_seen": e.last_seen}
                        for e in b.replacements
                    ],
                }
                for b in self.routing.buckets()
            ],
            "records": [record_view(r, now) for r in self.store_.records(now)],
            "advertisements": [record_view(r, now) for r in self.advertisements.all()],
            "stats": {
                "requests_handled": dict(self.stats.requests_handled),
                "lookups": self.stats.lookups,
                "identity_mismatches": self.stats.identity_mismatches,
                "contacts_refused": self.stats.contacts_refused,
                "contacts_unverified": self.stats.contacts_unverified,
                "lookup_skips": self.stats.lookup_skips,
                "stores_overloaded": self.stats.stores_overloaded,
            },
            "limits": self.limits_view(),
        }

    def limits_view(self) -> dict[str, Any]:
        """Every admission and memory limit, what is in use now, and how often each refused or shed work."""
        rpc = self.rpc
        if rpc is None:
            return {}
        admission = rpc.endpoint.admission.view()
        memory = rpc.memory_view()
        return {
            "admission": admission["admission"],
            "memory": memory["limits"],
            "in_use": {
                **admission["connections"],
                "memory_bytes": memory["used_bytes"],
                "inbound_request_bytes": memory["inbound_request_bytes"],
                "unread_answer_bytes": memory["unread_answer_bytes"],
            },
            "counters": dict(sorted({**admission["counters"], **memory["counters"]}.items())),
            "log_lines_suppressed": admission["log_lines_suppressed"],
            "udp_receive_buffer_bytes": rpc.endpoint.receive_buffer_bytes,
        }


def connection_view(conn: Conn) -> dict[str, Any]:
    state = conn.state
    return {
        "odcid": conn.odcid,
        "role": conn.role,
        "peer_address": conn.addr_text,
        "peer_id": conn.peer_id.hex() if conn.peer_id else None,
        "open": conn.is_open,
        "rtt_ms": round(conn.rtt_s * 1000, 3) if conn.rtt_s is not None else None,
        "bytes_sent": conn.bytes_sent,
        "bytes_received": conn.bytes_received,
        "streams_opened": conn.streams_opened,
        "streams_open": (len(state.outgoing) + len(state.incoming)) if state is not None else 0,
        "close_reason": conn.close_reason or None,
        "close_trigger": conn.close_trigger,
    }


def record_view(record: Record, now: float) -> dict[str, Any]:
    try:
        verify(record, now)
        signature = "valid"
    except RecordError as exc:
        signature = str(exc)
    return {
        "key": record.key.hex(),
        "name": record.name,
        "publisher": record.publisher.hex(),
        "value": record.value.decode("utf-8", "replace"),
        "seq": record.seq,
        "expires_at": record.expires_at,
        "expires_in_s": round(record.expires_at - now, 1),
        "signature": signature,
    }


def _outcome_read(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _latest_per_publisher(records: list[Record]) -> list[Record]:
    best: dict[tuple[int, int], Record] = {}
    for r in records:
        k = (r.key.value, r.publisher.value)
        if k not in best or r.seq > best[k].seq:
            best[k] = r
    return sorted(best.values(), key=lambda r: r.publisher.value)


def _replace_values(result: LookupResult, values: list[Record]) -> LookupResult:
    found = bool(values) if result.kind == "find_value" else result.found
    return dataclasses.replace(result, values=tuple(values), found=found)
