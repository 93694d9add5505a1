"""The control endpoint: lets the TUI and the CLI attach to a running node.

Newline-delimited JSON both ways over a unix socket (mode 0600, the default) or
over TCP (`tcp:HOST:PORT`, which needs a shared token because anyone who can
reach the port could otherwise drive the node). TCP is wrapped in TLS 1.3 with the
node's own Ed25519 key, in a self-signed certificate like its QUIC one; its fingerprint
(`SHA256:` and SHA-256 of the raw public key: the node's id) is printed at start, and
clients pin it (`fingerprints=`) or trust it on first use, remembering it in
`known_controls_path()` and warning once. `tcp+plain:HOST:PORT` serves TCP without TLS,
on loopback addresses only.

Slots: a unix-socket client (authenticated by the socket's mode) or a TCP client that
sent the right token takes one of MAX_CONTROL_CLIENTS. TCP clients that have not yet
done so wait in a pool of their own, MAX_UNAUTHENTICATED_CONTROL_CLIENTS at most (a
newcomer pushes out the oldest) for HELLO_TIMEOUT_S at most: idle sockets cannot keep
the rightful client out.

Requests:  {"id": ID, "op": OP, ...fields}
Replies:   {"id": ID, "ok": true, "result": {...}}  or  {"id": ID, "ok": false, "error": "..."}
Events:    {"event": {"name", "data", "time_ms", "conn", "node"}}  (after `subscribe`)
           {"event": "dropped", "count": N}  (N events lost because the viewer fell behind)

Ops:
  hello        {"token"?}  -> {name, id, address, role, version, protocol, faults}
               (on TCP the first request must be hello with the right token)
  snapshot     -> Node.snapshot()
  subscribe    -> {subscribed: true, queue_events}; then event lines until unsubscribe
  unsubscribe  -> {subscribed: false}
  probe        {"kind": ping|find_node|find_value|discover|store|advertise, "args": [str, ...]}
               -> the `dhtscope probe --json` shape (hops, closest, records, ...) plus "kind"
  scenario     {"name": healthy|no-accept|stream-limit|loss|alpn-mismatch|stall, "loss"?}
               -> {scenario, faults, previous, notes}
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import os
import re
import socket
import ssl
import stat
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from dhtscope.tracing.version import dhtscope_version

from .certificates import make_certificate
from .endpoints import parse_address
from .ids import Contact, NodeId
from .node import Node, NodeError, record_view
from .probes import PROBE_KINDS, KnownNode, NodeRef, ProbeError, check_probe_args, resolve_node
from .rpc import RpcError
from .scenarios import DEFAULT_LOSS, SCENARIOS
from .transport import Conn, TransportError

log = logging.getLogger("dhtscope.control")

CONTROL_PROTOCOL_VERSION = 1
MAX_CONTROL_LINE_BYTES = 64 * 1024  # one request line; longer: error reply, connection closed
MAX_CONTROL_REPLY_BYTES = 64 * 1024 * 1024  # one reply line the client accepts (snapshots can be big)
MAX_CONTROL_CLIENTS = 16  # authenticated connections served at once; more are told so and closed
MAX_UNAUTHENTICATED_CONTROL_CLIENTS = 4  # TCP connections yet to say hello; a newcomer pushes out the oldest
MAX_CONTROL_JSON_DEPTH = 32  # nesting of one request (or reply) line; deeper is refused before decoding
MAX_PROBES_PER_CLIENT = 8  # probes running at once on one connection
SUBSCRIPTION_QUEUE_EVENTS = 10_000  # events buffered per subscriber; the oldest go first
CLIENT_EVENT_BUFFER = 10_000  # events a ControlClient holds for a slow reader
HELLO_TIMEOUT_S = 1.0  # a TCP client must finish TLS and authenticate within this
SEND_TIMEOUT_S = 10.0  # a client that does not read for this long is dropped
CONNECT_TIMEOUT_S = 5.0
UNIX_PATH_MAX_BYTES = 107  # sun_path is 108 bytes on Linux, with the NUL

REFUSED = "refused: wrong control token"
FINGERPRINT_PREFIX = "SHA256:"
KNOWN_CONTROLS_ENV = "DHTSCOPE_KNOWN_CONTROLS"  # where trusted-on-first-use fingerprints are kept

T = TypeVar("T")


class ControlError(Exception):
    """The control endpoint cannot be set up, reached, or refused a request; the message says why."""


class FingerprintMismatch(ControlError):
    """The endpoint's TLS key is not the one pinned or trusted before: nothing is sent to it."""


class _BadRequest(Exception):
    """A request the server answers with an error and keeps the connection open."""


# -- targets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlTarget:
    """Where a control endpoint is: a unix socket path, or a TCP host and port."""

    kind: str  # "unix" or "tcp"
    path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool = True  # TCP only: False for tcp+plain (loopback only)

    @property
    def description(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{'tcp' if self.tls else 'tcp+plain'}:{host}:{self.port}"

    @property
    def hostport(self) -> str:
        """HOST:PORT, as fingerprints are remembered."""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_control_target(text: str) -> ControlTarget:
    """`tcp:HOST:PORT` (TLS), `tcp+plain:HOST:PORT` (loopback only), `unix:PATH`, or a bare PATH (a unix socket)."""
    text = text.strip()
    for prefix, tls in (("tcp:", True), ("tcp+plain:", False)):
        if text.startswith(prefix):
            try:
                host, port = parse_address(text[len(prefix) :])
            except ValueError as exc:
                raise ControlError(f"control endpoint {text!r}: {exc}") from None
            return ControlTarget("tcp", host=host, port=port, tls=tls)
    path = text[5:] if text.startswith("unix:") else text
    if not path:
        raise ControlError("control endpoint is empty: give a unix socket path or tcp:HOST:PORT")
    return ControlTarget("unix", path=path)


# -- JSON lines -----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Event data is meant to be plain, but a stray bytes or set must not kill a subscription."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, NodeId):
        return value.hex()
    return str(value)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=_jsonable) + "\n").encode("utf-8")


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class JsonTooDeep(ValueError):
    pass


def loads_line(line: bytes, max_depth: int = MAX_CONTROL_JSON_DEPTH) -> Any:
    """One JSON line, refused (JsonTooDeep) if it nests deeper than `max_depth`, before it is decoded.

    json's decoder recurses once per level: a 30,000-deep line would raise RecursionError
    from deep inside it. Brackets inside strings do not count.
    """
    depth = 0
    for token in _JSON_TOKENS.finditer(line):
        ch = token.group()
        if ch in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(f"nests deeper than {max_depth} levels")
        elif ch in (b"]", b"}"):
            depth -= 1
    return json.loads(line)


# -- TLS ------------------------------------------------------------------------------------------


def fingerprint_of_der(der: bytes) -> str:
    """`SHA256:` and the hex SHA-256 of a certificate's raw Ed25519 key (its SubjectPublicKeyInfo otherwise)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = x509.load_der_x509_certificate(der).public_key()
    if isinstance(key, Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return FINGERPRINT_PREFIX + hashlib.sha256(raw).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """`SHA256:<64 hex>` from what a user typed (the prefix optional, any case, colons allowed)."""
    bare = text.strip()
    if bare.upper().startswith(FINGERPRINT_PREFIX):
        bare = bare[len(FINGERPRINT_PREFIX) :]
    bare = bare.replace(":", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", bare):
        raise ControlError(f"fingerprint {text!r} is not SHA256: and 64 hex digits")
    return FINGERPRINT_PREFIX + bare


def node_fingerprint(node: Node) -> str:
    """The fingerprint clients pin for this node's control endpoint: its id, as SHA256:hex."""
    return FINGERPRINT_PREFIX + node.id.hex()


def _server_tls(node: Node) -> ssl.SSLContext:
    """TLS 1.3 with the node's own Ed25519 key in a self-signed certificate (as its QUIC side makes)."""
    from cryptography.hazmat.primitives import serialization

    identity = node.identity
    certificate, _ = make_certificate(identity, time.time())  # the node's own key, never a fault's
    cert = certificate.public_bytes(serialization.Encoding.PEM)
    key = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # ssl reads keys only from files: a private directory that lives for the load alone.
    with tempfile.TemporaryDirectory(prefix="dhtscope-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        context.load_cert_chain(cert_path, key_path)
    return context


def _client_tls() -> ssl.SSLContext:
    # The certificate is self-signed: the key is checked against a pinned fingerprint instead.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def known_controls_path() -> Path:
    """Where fingerprints trusted on first use are kept: $DHTSCOPE_KNOWN_CONTROLS, else the user's config dir."""
    explicit = os.environ.get(KNOWN_CONTROLS_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dhtscope" / "known_controls"


def _known_fingerprint(path: Path, hostport: str) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == hostport:
            return parts[1]
    return None


def _remember_fingerprint(path: Path, hostport: str, fingerprint: str) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{hostport} {fingerprint}\n")
    except OSError as exc:
        log.warning("cannot remember the fingerprint of %s in %s: %s", hostport, path, exc.strerror or exc)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class _DropOldest(Generic[T]):
    """A bounded queue that never blocks the producer: when full, the oldest item goes and is counted."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._items: deque[T] = deque()
        self._dropped = 0  # not yet reported
        self.total_dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    def put(self, item: T) -> None:
        if len(self._items) >= self.maxlen:
            self._items.popleft()
            self._dropped += 1
            self.total_dropped += 1
        self._items.append(item)
        self._wake.set()

    def add_dropped(self, count: int) -> None:
        """Items lost before they reached this queue (a client relaying the server's notice)."""
        self._dropped += count
        self.total_dropped += count
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> tuple[int, T | None]:
        """(dropped, None) when drops are pending, else (0, item); (0, None) once closed and empty."""
        while not self._items and not self._dropped and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return count, None
        if self._items:
            return 0, self._items.popleft()
        return 0, None

    def __len__(self) -> int:
        return len(self._items)


# -- probe results (the same shape `dhtscope probe --json` prints) ----------------------------


def lookup_view(result: Any) -> dict[str, Any]:
    """A LookupResult as plain data: rounds, messages, every hop, the closest nodes."""
    return {
        "rounds": result.rounds,
        "messages": result.messages,
        "hops": [
            {
                "round": h.round,
                "node": h.contact.node_id.hex(),
                "address": h.contact.address,
                "rtt_ms": round(h.rtt_s * 1000, 3) if h.rtt_s is not None else None,
                "returned": len(h.returned),
                "values": h.values,
                "error": h.error,
            }
            for h in result.hops
        ],
        "closest": [{"node": c.node_id.hex(), "address": c.address} for c in result.closest],
    }


def known_nodes(node: Node) -> list[KnownNode]:
    """The nodes `node` can name: itself and every contact in its routing table."""
    return [KnownNode(node.id.hex(), node.name, node.address)] + [
        KnownNode(c.node_id.hex(), None, c.address) for c in node.routing.contacts()
    ]


def _ping_target(node: Node, text: str) -> tuple[Contact | tuple[str, int], NodeRef | None]:
    """HOST:PORT, or a node's name, id or id prefix that this node knows (with its address)."""
    if ":" in text:
        try:
            return parse_address(text), None
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
    try:
        ref = resolve_node(text, known_nodes(node))
    except ProbeError as exc:
        raise _BadRequest(str(exc)) from None
    contact = node.routing.get(NodeId(int(ref.node_id, 16))) if ref.how != "hashed" else None
    if contact is None:
        raise _BadRequest(
            f"ping target {text!r} is not a node in this node's routing table; give HOST:PORT, "
            "or the name, id or id prefix of a node it knows"
        )
    return contact, ref


async def run_probe(node: Node, kind: str, args: list[str]) -> dict[str, Any]:
    """One probe on `node`; the result has the shape of `dhtscope probe --json` plus `kind`."""
    op = kind.replace("_", "-")  # the CLI's spelling, so its printer reads these too
    if kind == "ping":
        target, ref = _ping_target(node, args[0])
        rtt = await node.ping(target)
        to = target.address if isinstance(target, Contact) else f"{target[0]}:{target[1]}"
        return {
            "op": op,
            "kind": kind,
            "to": to,
            "node": ref.node_id if ref else None,
            "target_note": ref.note() if ref else None,
            "rtt_ms": round(rtt * 1000, 3),
            "ok": True,
        }
    if kind == "find_node":
        ref = resolve_node(args[0], known_nodes(node))  # ProbeError (a ValueError) when ambiguous
        result = await node.find_node(NodeId(int(ref.node_id, 16)))
        return {
            "op": op,
            "kind": kind,
            "target": ref.node_id,
            "given": args[0],
            "resolved_as": ref.how,
            "target_note": ref.note(),
            **lookup_view(result),
            "ok": result.found,
        }
    if kind in ("find_value", "discover"):
        key = NodeId.parse(args[0])
        result = await node.find_value(key, quorum=None)
        records = [record_view(r, node.clock()) for r in result.values]
        return {
            "op": op,
            "kind": kind,
            "key": key.hex(),
            "name": args[0],
            **lookup_view(result),
            "records": records,
            "ok": bool(records),
        }
    # store and advertise: a signed record under the key (a name is hashed), republished while we run.
    # Only an advertisement names its key: stores check its value as an endpoint, so a plain value
    # stored under a name must not claim to be one.
    key_text, value = args
    key = NodeId.parse(key_text)
    name = key_text if key.hex() != key_text.lower() else None
    if kind == "store":
        report = await node.store(key, value.encode("utf-8"))
    else:
        report = await node.store(key, value.encode("utf-8"), name=name)
    return {
        "op": op,
        "kind": kind,
        "key": key.hex(),
        "name": name,
        "value": value,
        **(lookup_view(report.lookup) if report.lookup else {}),
        "replicas": report.replicas,  # accepted + this node's own copy
        "targets": len(report.targets),  # the closest nodes found, never this node
        "accepted": len(report.accepted),
        "stored_locally": report.stored_locally,
        "refused": [{"node": c.node_id.hex(), "reason": r} for c, r in report.refused],
        "ok": report.replicas > 0,
    }


# -- server -------------------------------------------------------------------------------------


class ControlServer:
    """Serves one node's control endpoint (protocol in the module docstring).

    `target` is a unix socket path (or `unix:PATH`) or `tcp:HOST:PORT`; TCP needs `token`.
    `await start()`, then `await close()`; `description` says where it listens.
    """

    def __init__(self, node: Node, target: str, token: str | None = None) -> None:
        self.node = node
        self.target = parse_control_target(target)
        if self.target.kind == "tcp" and not token:
            raise ControlError(
                f"control endpoint {self.target.description} is TCP and needs a token (--control-token-file, "
                "or DHTSCOPE_CONTROL_TOKEN); without one anyone who reaches the port controls the node"
            )
        if self.target.kind == "tcp" and not self.target.tls and not _is_loopback(self.target.host):
            raise ControlError(
                f"control endpoint {self.target.description} would carry the token in clear text beyond this "
                "machine: plain TCP is for loopback addresses only; use tcp:HOST:PORT (TLS)"
            )
        if self.target.kind == "unix" and len(os.fsencode(self.target.path or "")) > UNIX_PATH_MAX_BYTES:
            raise ControlError(
                f"control socket path {self.target.path!r} is longer than "
                f"{UNIX_PATH_MAX_BYTES} bytes; choose a shorter path"
            )
        self.token = token
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[_Session] = set()
        self._waiting: dict[_Session, None] = {}  # unauthenticated, oldest first
        self.fingerprint: str | None = None  # set for a TLS endpoint
        self.refused = 0  # clients turned away: slots full, or pushed out before saying hello
        self._socket_identity: tuple[int, int] | None = None  # (dev, inode) of the socket file we made
        self._path: str | None = None
        self.description = self.target.description

    @property
    def clients(self) -> int:
        """Authenticated clients being served."""
        return sum(1 for s in self._sessions if s.authenticated)

    async def start(self) -> None:
        if self.target.kind == "tcp":
            tls: dict[str, Any] = {}
            if self.target.tls:
                tls = {"ssl": _server_tls(self.node), "ssl_handshake_timeout": HELLO_TIMEOUT_S}
                self.fingerprint = node_fingerprint(self.node)
            try:
                self._server = await asyncio.start_server(
                    self._on_client, self.target.host, self.target.port, limit=MAX_CONTROL_LINE_BYTES, **tls
                )
            except OSError as exc:
                raise ControlError(f"cannot listen for control on {self.description}: {exc.strerror or exc}") from None
            host, port = self._server.sockets[0].getsockname()[:2]
            self.description = ControlTarget("tcp", host=host, port=port, tls=self.target.tls).description
            return
        path = self.target.path
        assert path is not None
        sock = self._bind_unix(path)
        self._path = os.path.abspath(path)
        try:
            self._server = await asyncio.start_unix_server(self._on_client, sock=sock, limit=MAX_CONTROL_LINE_BYTES)
        except BaseException:
            sock.close()
            await self.close()  # removes the socket file we just made
            raise
        self.description = f"unix:{self._path}"

    def _bind_unix(self, path: str) -> socket.socket:
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The umask is in force only for bind(), so the socket file is born 0600: there is
        # never a moment where another user could connect before a chmod.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot create control socket {path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        st = os.stat(path)
        self._socket_identity = (st.st_dev, st.st_ino)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Stop listening, end every session (removing their listeners), remove the socket file."""
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.cancel()
        # Each session's task returns quietly once cancelled by us (see _on_client).
        await asyncio.gather(*(s.task for s in list(self._sessions) if s.task), return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._path is not None and self._socket_identity is not None:
            # Only our own socket: another process may have replaced the path since.
            with contextlib.suppress(OSError):
                st = os.lstat(self._path)
                if (st.st_dev, st.st_ino) == self._socket_identity:
                    os.unlink(self._path)
            self._path = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        needs_token = self.target.kind == "tcp"
        if not needs_token and self.clients >= MAX_CONTROL_CLIENTS:
            await _turn_away(writer, f"too many control clients (at most {MAX_CONTROL_CLIENTS})")
            self.refused += 1
            return
        session = _Session(self, reader, writer, needs_token=needs_token)
        session.task = asyncio.current_task()
        self._sessions.add(session)
        if needs_token:
            if len(self._waiting) >= MAX_UNAUTHENTICATED_CONTROL_CLIENTS:
                # Whoever waits longest without a hello goes: idle sockets cannot crowd out a client.
                oldest = next(iter(self._waiting))
                del self._waiting[oldest]
                self.refused += 1
                oldest.push_out()
            self._waiting[session] = None
        try:
            await session.run()
        except asyncio.CancelledError:
            if not session.cancelled_by_server:
                raise
            # Ours: the server is closing. Returning quietly keeps asyncio from logging the
            # cancellation as an error of the connection callback.
        finally:
            self._sessions.discard(session)
            self._waiting.pop(session, None)

    def authenticate(self, session: _Session) -> str | None:
        """A TCP client sent the right token: give it a slot, or say why there is none."""
        self._waiting.pop(session, None)
        if self.clients >= MAX_CONTROL_CLIENTS:
            self.refused += 1
            return f"too many control clients (at most {MAX_CONTROL_CLIENTS})"
        session.authenticated = True
        return None

    def check_token(self, offered: Any) -> bool:
        if not isinstance(offered, str) or self.token is None:
            return False
        # Constant time, on bytes: compare_digest refuses non-ASCII str.
        return hmac.compare_digest(offered.encode("utf-8"), self.token.encode("utf-8"))


async def _turn_away(writer: asyncio.StreamWriter, error: str) -> None:
    with contextlib.suppress(Exception):
        writer.write(_line({"id": None, "ok": False, "error": error}))
        await asyncio.wait_for(writer.drain(), SEND_TIMEOUT_S)
    writer.close()


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a dead process is removed; a live one, or any other file, is an error."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlError(f"cannot check control socket {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ControlError(f"cannot check control socket {path}: {exc.strerror or exc}") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise ControlError(f"control socket {path} is in use by another running node")


class _Session:
    """One control connection: reads requests, writes replies and (if subscribed) events."""

    def __init__(
        self, server: ControlServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, needs_token: bool
    ) -> None:
        self.server = server
        self.node = server.node
        self.reader = reader
        self.writer = writer
        self.authenticated = not needs_token
        self.cancelled_by_server = False
        self.task: asyncio.Task[Any] | None = None
        self._write_lock = asyncio.Lock()
        self._closing = False
        self._probes: set[asyncio.Task[None]] = set()
        self._queue: _DropOldest[dict[str, Any]] | None = None
        self._pump: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        self.cancelled_by_server = True
        if self.task is not None:
            self.task.cancel()

    def push_out(self) -> None:
        """Drop a client that has not said hello, to make room for a newer one."""
        self._closing = True
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    # -- reading ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._closing:
                try:
                    if self.authenticated:
                        line = await self.reader.readuntil(b"\n")
                    else:
                        line = await asyncio.wait_for(self.reader.readuntil(b"\n"), HELLO_TIMEOUT_S)
                except asyncio.IncompleteReadError:
                    return  # the client went away (a partial last line is not a request)
                except asyncio.LimitOverrunError:
                    await self.send(
                        {
                            "id": None,
                            "ok": False,
                            "error": f"request line longer than {MAX_CONTROL_LINE_BYTES} bytes; "
                            "closing this connection",
                        }
                    )
                    return
                except TimeoutError:
                    await self.send(
                        {
                            "id": None,
                            "ok": False,
                            "error": f"no hello with a token within {HELLO_TIMEOUT_S:g} s; closing",
                        }
                    )
                    return
                except (ConnectionError, OSError):
                    return
                await self._on_line(line)
        finally:
            await self._cleanup()

    async def _on_line(self, line: bytes) -> None:
        text = line.strip()
        if not text and self.authenticated:
            return
        request: Any = None
        too_deep: str | None = None
        try:
            request = loads_line(text)
        except JsonTooDeep as exc:
            too_deep = str(exc)
        except (ValueError, UnicodeDecodeError):
            pass
        rid = request.get("id") if isinstance(request, dict) else None
        if not self.authenticated:
            # Nothing is served before the token: not even an error saying what was wrong.
            if (
                isinstance(request, dict)
                and request.get("op") == "hello"
                and self.server.check_token(request.get("token"))
            ):
                no_slot = self.server.authenticate(self)
                if no_slot is not None:
                    await self.send({"id": rid, "ok": False, "error": no_slot})
                    self._closing = True
                    return
                await self.send({"id": rid, "ok": True, "result": self._hello()})
            else:
                await self.send({"id": rid, "ok": False, "error": REFUSED})
                self._closing = True
            return
        if too_deep is not None:
            await self.send({"id": None, "ok": False, "error": f"request {too_deep}; send one flat JSON object"})
            return
        if not isinstance(request, dict):
            what = "not JSON" if request is None else f"a JSON {type(request).__name__}, not an object"
            await self.send({"id": None, "ok": False, "error": f"request is {what}; send one JSON object per line"})
            return
        try:
            await self._dispatch(rid, request)
        except _BadRequest as exc:
            await self.send({"id": rid, "ok": False, "error": str(exc)})
        except Exception as exc:  # a bug in one op must cost one request, not the connection
            log.exception("control op %r failed", request.get("op"))
            await self.send({"id": rid, "ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"})

    async def _dispatch(self, rid: Any, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "hello":
            await self.send({"id": rid, "ok": True, "result": self._hello()})
        elif op == "snapshot":
            await self.send({"id": rid, "ok": True, "result": self.node.snapshot()})
        elif op == "subscribe":
            self._subscribe()
            await self.send(
                {"id": rid, "ok": True, "result": {"subscribed": True, "queue_events": SUBSCRIPTION_QUEUE_EVENTS}}
            )
        elif op == "unsubscribe":
            await self._unsubscribe()
            await self.send({"id": rid, "ok": True, "result": {"subscribed": False}})
        elif op == "probe":
            self._start_probe(rid, request)
        elif op == "scenario":
            await self.send({"id": rid, "ok": True, "result": self._scenario(request)})
        else:
            known = "hello, snapshot, subscribe, unsubscribe, probe, scenario"
            raise _BadRequest(f"unknown op {op!r}; ops are {known}")

    # -- ops ----------------------------------------------------------------------------------

    def _hello(self) -> dict[str, Any]:
        node = self.node
        return {
            "name": node.name,
            "id": node.id.hex(),
            "address": node.address,
            "role": node.role,
            "version": dhtscope_version(),
            "protocol": CONTROL_PROTOCOL_VERSION,
            "faults": node.faults.names(),
        }

    def _subscribe(self) -> None:
        if self._queue is not None:
            return  # already subscribed: one stream of events per connection
        self._queue = _DropOldest(SUBSCRIPTION_QUEUE_EVENTS)
        self.node.listeners.append(self._listener)
        self._pump = asyncio.create_task(self._pump_events(self._queue))

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(ValueError):
            self.node.listeners.remove(self._listener)
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None

    def _listener(self, name: str, data: dict[str, Any], conn: Conn | None) -> None:
        # Called inside the node's own code paths: it must be cheap and must never raise.
        queue = self._queue
        if queue is None:
            return
        try:
            odcid = conn.odcid if conn is not None else None
        except Exception:
            odcid = None
        queue.put(
            {"name": name, "data": data, "time_ms": round(time.time() * 1000, 3), "conn": odcid, "node": self.node.name}
        )

    async def _pump_events(self, queue: _DropOldest[dict[str, Any]]) -> None:
        while not self._closing:
            dropped, event = await queue.get()
            if dropped:
                await self.send({"event": "dropped", "count": dropped})
            elif event is not None:
                await self.send({"event": event})
            elif queue.closed:
                return

    def _start_probe(self, rid: Any, request: dict[str, Any]) -> None:
        kind = request.get("kind")
        args = request.get("args", [])
        if not isinstance(kind, str) or not isinstance(args, list):
            raise _BadRequest(f"probe needs a kind ({', '.join(PROBE_KINDS)}) and a list of args")
        try:
            args = check_probe_args(kind, args)
        except ProbeError as exc:
            raise _BadRequest(str(exc)) from None
        if len(self._probes) >= MAX_PROBES_PER_CLIENT:
            raise _BadRequest(f"{MAX_PROBES_PER_CLIENT} probes already running on this connection; wait for one")
        if kind == "ping":
            _ping_target(self.node, args[0])  # a bad target is a bad request, answered now
        # A probe can take seconds; it runs on its own so the connection keeps serving.
        task = asyncio.create_task(self._probe(rid, kind, args))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, rid: Any, kind: str, args: list[str]) -> None:
        try:
            result = await run_probe(self.node, kind, args)
        except (NodeError, RpcError, TransportError, _BadRequest, ValueError) as exc:  # ProbeError is a ValueError
            await self.send({"id": rid, "ok": False, "error": f"{kind} failed: {exc}"})
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("probe %s failed", kind)
            await self.send({"id": rid, "ok": False, "error": f"{kind} failed: {type(exc).__name__}: {exc}"})
            return
        await self.send({"id": rid, "ok": True, "result": result})

    def _scenario(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("name")
        if not isinstance(name, str) or name not in SCENARIOS:
            raise _BadRequest(f"scenario name must be one of {', '.join(SCENARIOS)}, not {name!r}")
        loss = request.get("loss", DEFAULT_LOSS)
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0.0 <= loss <= 1.0:
            raise _BadRequest("scenario loss must be a number between 0 and 1")
        return self.node.set_scenario(name, loss=float(loss))

    # -- writing and the end -----------------------------------------------------------------------

    async def send(self, obj: dict[str, Any]) -> None:
        """One line to the client; a client that stops reading is dropped after SEND_TIMEOUT_S."""
        if self._closing and "event" in obj:
            return
        data = _line(obj)
        async with self._write_lock:
            if self.writer.is_closing():
                self._closing = True
                return
            try:
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), SEND_TIMEOUT_S)
            except (TimeoutError, ConnectionError, OSError, RuntimeError):
                self._closing = True
                self.writer.transport.abort()

    async def _cleanup(self) -> None:
        self._closing = True
        await self._unsubscribe()
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


# -- client ---------------------------------------------------------------------------------------


class ControlClient:
    """Talks to a node's control endpoint: requests, and the live event stream once subscribed."""

    def __init__(self, target: ControlTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.target = target
        self.hello: dict[str, Any] = {}
        self.fingerprint: str | None = None  # the TLS key's, once checked
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: _DropOldest[dict[str, Any]] = _DropOldest(CLIENT_EVENT_BUFFER)
        self._closed_reason: str | None = None
        self._last_error: str | None = None
        self._read_task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        target: str,
        token: str | None = None,
        timeout_s: float = CONNECT_TIMEOUT_S,
        fingerprints: Sequence[str] | None = None,
    ) -> ControlClient:
        """Connect and say hello (with the token, if given); `client.hello` then names the node.

        Over TLS the node's key must match one of `fingerprints`; without any, the fingerprint
        is trusted on first use (remembered in `known_controls_path()`, with a warning) and
        must match on every later connection.
        """
        where = parse_control_target(target)
        pinned = {normalize_fingerprint(f) for f in fingerprints or ()}
        try:
            if where.kind == "unix":
                opening = asyncio.open_unix_connection(where.path, limit=MAX_CONTROL_REPLY_BYTES)
            else:
                opening = asyncio.open_connection(
                    where.host,
                    where.port,
                    limit=MAX_CONTROL_REPLY_BYTES,
                    ssl=_client_tls() if where.tls else None,
                    server_hostname="" if where.tls else None,
                )
            reader, writer = await asyncio.wait_for(opening, timeout_s)
        except TimeoutError:
            raise ControlError(
                f"cannot reach control endpoint {where.description}: no answer within {timeout_s:g} s"
            ) from None
        except ssl.SSLError as exc:
            raise ControlError(
                f"cannot reach control endpoint {where.description}: TLS failed ({exc.reason or exc}); "
                "a tcp+plain endpoint is reached as tcp+plain:HOST:PORT"
            ) from None
        except OSError as exc:
            raise ControlError(f"cannot reach control endpoint {where.description}: {exc.strerror or exc}") from None
        client = cls(where, reader, writer)
        if where.kind == "tcp" and where.tls:
            try:
                client.fingerprint = _check_fingerprint(where, writer, pinned)
            except ControlError:
                await client.close()
                raise
        fields: dict[str, Any] = {"token": token} if token is not None else {}
        try:
            client.hello = await asyncio.wait_for(client.request("hello", **fields), timeout_s)
        except TimeoutError:
            await client.close()
            raise ControlError(
                f"control endpoint {where.description} did not answer hello within {timeout_s:g} s"
            ) from None
        except ControlError:
            await client.close()
            raise
        return client

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply's result; ControlError if it failed."""
        if self._closed_reason is not None:
            raise ControlError(self._closed_reason)
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(_line({"id": rid, "op": op, **fields}))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._pending.pop(rid, None)
            raise ControlError(f"control connection to {self.target.description} lost: {exc}") from None
        try:
            reply = await future
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error") or "request failed"))
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Subscription events as {"name", "data", "time_ms", "conn", "node"}, until the connection ends.

        Events lost to a slow reader (here or at the server) arrive as one event named
        "control:dropped" with data {"count": N}.
        """
        while True:
            dropped, event = await self._events.get()
            if dropped:
                yield {
                    "name": "control:dropped",
                    "data": {"count": dropped},
                    "time_ms": time.time() * 1000,
                    "conn": None,
                    "node": self.hello.get("name"),
                }
            elif event is not None:
                yield event
            else:
                return

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    async def close(self) -> None:
        self._read_task.cancel()
        await asyncio.gather(self._read_task, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        self._finish("control connection closed")

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _read(self) -> None:
        reason = f"control endpoint {self.target.description} closed the connection"
        try:
            while True:
                try:
                    line = await self._reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break
                except asyncio.LimitOverrunError:
                    reason = f"reply longer than {MAX_CONTROL_REPLY_BYTES} bytes"
                    break
                except (ConnectionError, OSError) as exc:
                    reason = f"control connection lost: {exc}"
                    break
                try:
                    message = loads_line(line)
                except ValueError:
                    continue  # not ours to fix; the server only writes JSON
                if not isinstance(message, dict):
                    continue
                self._on_message(message)
        finally:
            # A refusal or over-long-line error comes just before the close: that is the reason.
            self._finish(self._last_error or reason)

    def _on_message(self, message: dict[str, Any]) -> None:
        if "event" in message and "id" not in message:
            event = message["event"]
            if event == "dropped":
                count = message.get("count")
                self._events.add_dropped(count if isinstance(count, int) and count > 0 else 1)
            elif isinstance(event, dict):
                self._events.put(event)
            return
        rid = message.get("id")
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is not None and not future.done():
            future.set_result(message)
        elif not message.get("ok", True):
            self._last_error = str(message.get("error"))

    def _finish(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ControlError(self._closed_reason))
        self._pending.clear()
        self._events.close()


def _check_fingerprint(where: ControlTarget, writer: asyncio.StreamWriter, pinned: set[str]) -> str:
    """The endpoint's key fingerprint, if it is pinned or trusted; ControlError otherwise."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise ControlError(f"control endpoint {where.description} showed no certificate")
    seen = fingerprint_of_der(der)
    if pinned:
        if seen not in pinned:
            raise FingerprintMismatch(
                f"control endpoint {where.description} has key {seen}, not the pinned "
                f"{' or '.join(sorted(pinned))}; refusing to send it the token"
            )
        return seen
    path = known_controls_path()
    known = _known_fingerprint(path, where.hostport)
    if known is None:
        log.warning(
            "trusting control endpoint %s on first use: its key is %s (remembered in %s; "
            "compare it with the fingerprint the node printed, or pin it with --fingerprint)",
            where.description,
            seen,
            path,
        )
        _remember_fingerprint(path, where.hostport, seen)
    elif known != seen:
        raise FingerprintMismatch(
            f"control endpoint {where.description} has key {seen}, but {known} was trusted there before "
            f"(in {path}); if the node's key changed on purpose, remove that line"
        )
    return seen
