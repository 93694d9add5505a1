"""A node's stored records and routing table in SQLite (stdlib sqlite3, WAL), so a restart loses nothing.

Changes are gathered in memory and committed together at most PERSIST_COMMIT_INTERVAL_S
apart, so a crash (SIGKILL included: WAL with synchronous=NORMAL is durable against a process
dying, if not against the machine losing power) loses at most the last second of writes. Nothing
is trusted on the way back in: the node passes every record through its store again, which
checks signature, expiry and limits.

One node per data directory: a lock file held for the node's life says so.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .constants import ID_BYTES
from .ids import Contact, NodeId
from .records import Record, RecordError
from .store import StoreOutcome

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one node per directory is then up to the user
    fcntl = None  # type: ignore[assignment]

DB_FILE = "node.sqlite3"
LOCK_FILE = "node.lock"
KEY_FILE = "node.pem"  # where the node's key lives when no --key is given
SCHEMA_VERSION = 1
MAX_STORED_RECORD_BYTES = 8 * 1024  # a record row larger than this is damage, not a record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    key BLOB NOT NULL,
    publisher BLOB NOT NULL,
    record BLOB NOT NULL,      -- msgpack of Record.to_wire(), signature included
    kept_until REAL NOT NULL,  -- unix seconds: when this node drops it (a clamped TTL)
    origin TEXT,               -- the address its STORE came from; NULL: this node's own
    PRIMARY KEY (key, publisher)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    node_id BLOB PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
"""


class PersistenceError(Exception):
    """A data directory that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SavedRecord:
    record: Record
    kept_until: float
    origin: str | None


def key_path(data_dir: str | os.PathLike[str]) -> str:
    """Where a node keeps its key inside `data_dir` when it is given no key file."""
    return os.path.join(os.fspath(data_dir), KEY_FILE)


class NodeState:
    """The SQLite file of one node's data directory, and the changes not yet committed to it."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PersistenceError(f"cannot create data dir {self.path}: {exc.strerror or exc}") from None
        if not self.path.is_dir():
            raise PersistenceError(f"data dir {self.path} is not a directory")
        self._lock_fd = self._lock()
        try:
            self._db = sqlite3.connect(self.path / DB_FILE, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise PersistenceError(
                    f"{self.path / DB_FILE} has schema {row[0]}, this version reads {SCHEMA_VERSION}"
                )
        except sqlite3.Error as exc:
            self._unlock()
            raise PersistenceError(f"cannot use {self.path / DB_FILE}: {exc}") from None
        except PersistenceError:
            self._unlock()
            raise
        # (key, publisher) -> row to write, or None to delete; the latest change wins.
        self._records: dict[tuple[bytes, bytes], tuple[bytes, float, str | None] | None] = {}
        self._routing_dirty = False
        self.commits = 0

    # -- one node per directory -------------------------------------------------------

    def _lock(self) -> int | None:
        if fcntl is None:
            return None
        lock_path = self.path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PersistenceError(f"cannot open {lock_path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise PersistenceError(f"data dir {self.path} is in use by another node (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- reading back -------------------------------------------------------------------

    def load_records(self) -> list[SavedRecord]:
        """Every saved record that still parses, soonest to drop first; damaged rows are deleted."""
        out: list[SavedRecord] = []
        for key, publisher, blob, kept_until, origin in self._db.execute(
            "SELECT key, publisher, record, kept_until, origin FROM records ORDER BY kept_until"
        ):
            record = _decode_record(blob)
            if record is None or record.key.to_bytes() != key or record.publisher.to_bytes() != publisher:
                self._records[(key, publisher)] = None
                continue
            out.append(SavedRecord(record, float(kept_until), origin))
        return out

    def load_contacts(self) -> list[tuple[Contact, float]]:
        """The saved routing table, least recently seen first."""
        out = []
        for node_id, host, port, last_seen in self._db.execute(
            "SELECT node_id, host, port, last_seen FROM contacts ORDER BY last_seen"
        ):
            if not isinstance(node_id, bytes) or len(node_id) != ID_BYTES or not 0 < int(port) < 65536:
                continue
            out.append((Contact(NodeId.from_bytes(node_id), str(host), int(port)), float(last_seen)))
        return out

    # -- changes --------------------------------------------------------------------------

    def record_outcome(self, outcome: StoreOutcome, origin: str | None) -> None:
        """Note what a STORE did: the record kept (or refused, if a saved one), the ones it pushed out."""
        record = outcome.record
        ident = (record.key.to_bytes(), record.publisher.to_bytes())
        if outcome.accepted and outcome.kept_until is not None:
            blob = msgpack.packb(record.to_wire(), use_bin_type=True)
            self._records[ident] = (blob, outcome.kept_until, origin)
        for gone in (*outcome.evicted, *outcome.purged):
            self.record_removed(gone)

    def record_removed(self, record: Record) -> None:
        self._records[(record.key.to_bytes(), record.publisher.to_bytes())] = None

    def routing_changed(self) -> None:
        self._routing_dirty = True

    @property
    def pending(self) -> bool:
        return bool(self._records) or self._routing_dirty

    def commit(self, contacts: Iterable[tuple[Contact, float]] | None = None) -> None:
        """Write every change noted since the last commit in one transaction.

        `contacts`: the whole routing table, written when it changed since the last commit.
        """
        if not self.pending:
            return
        records, self._records = self._records, {}
        write_routing, self._routing_dirty = self._routing_dirty, False
        try:
            db = self._db
            db.execute("BEGIN")
            db.executemany(
                "DELETE FROM records WHERE key = ? AND publisher = ?",
                [ident for ident, row in records.items() if row is None],
            )
            db.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
                [(*ident, *row) for ident, row in records.items() if row is not None],
            )
            if write_routing and contacts is not None:
                db.execute("DELETE FROM contacts")
                db.executemany(
                    "INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?)",
                    [(c.node_id.to_bytes(), c.host, c.port, seen) for c, seen in contacts],
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            # Keep what was not written for the next try (newer changes since win).
            for ident, row in records.items():
                self._records.setdefault(ident, row)
            self._routing_dirty = self._routing_dirty or write_routing
            raise PersistenceError(f"cannot write {self.path / DB_FILE}: {exc}") from None
        self.commits += 1

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._unlock()


def _decode_record(blob: Any) -> Record | None:
    if not isinstance(blob, bytes) or len(blob) > MAX_STORED_RECORD_BYTES:
        return None
    try:
        return Record.from_wire(msgpack.unpackb(blob, raw=False))
    except (RecordError, ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
