"""A node's records and routing table survive a restart, a SIGKILL included, and are checked again on the way in."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from dhtscope.node.constants import PERSIST_COMMIT_INTERVAL_S
from dhtscope.node.ids import Contact, NodeId
from dhtscope.node.keys import Identity
from dhtscope.node.node import Node, NodeError
from dhtscope.node.persistence import DB_FILE, KEY_FILE, NodeState, PersistenceError
from dhtscope.node.records import Record
from dhtscope.node.service import ServiceOptions
from dhtscope.node.store import RecordStore

NOW = 1_700_000_000.0
KEY = NodeId.for_name("calculator")


def advert(identity: Identity, port: int, ttl_s: float = 300.0, now: float = NOW) -> Record:
    return Record.create(identity, KEY, f"127.0.0.1:{port}".encode(), 1, ttl_s, now, name="calculator")


def saved_rows(data_dir: Path) -> int:
    """Records committed to `data_dir`'s database, read as another process would."""
    db = sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


# -- the SQLite file -------------------------------------------------------------------------


def test_records_and_contacts_round_trip_through_the_file(tmp_path) -> None:
    store = RecordStore()
    state = NodeState(tmp_path)
    records = [advert(Identity.generate(), 9000 + i, ttl_s=3600) for i in range(3)]
    for i, record in enumerate(records):
        state.record_outcome(store.put(record, NOW, origin=f"10.0.0.{i}"), f"10.0.0.{i}")
    contacts = [(Contact(NodeId.random(), "10.0.0.9", 4500 + i), NOW + i) for i in range(5)]
    state.routing_changed()
    state.commit(iter(contacts))
    assert state.commits == 1 and not state.pending
    state.close()

    again = NodeState(tmp_path)
    loaded = again.load_records()
    assert sorted(s.record.publisher for s in loaded) == sorted(r.publisher for r in records)
    assert {s.kept_until for s in loaded} == {NOW + 600}  # the clamp is saved, not the hour asked
    assert {s.origin for s in loaded} == {"10.0.0.0", "10.0.0.1", "10.0.0.2"}
    assert again.load_contacts() == contacts
    again.close()


def test_removed_records_are_deleted_at_the_next_commit(tmp_path) -> None:
    store = RecordStore()
    state = NodeState(tmp_path)
    record = advert(Identity.generate(), 9001)
    state.record_outcome(store.put(record, NOW), None)
    state.commit()
    state.record_removed(record)
    state.commit()
    assert state.load_records() == []
    state.close()


def test_one_node_per_data_dir(tmp_path) -> None:
    first = NodeState(tmp_path)
    with pytest.raises(PersistenceError, match=f"in use by another node \\(pid {os.getpid()}\\)"):
        NodeState(tmp_path)
    first.close()
    NodeState(tmp_path).close()  # free again once the first one closed


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PersistenceError, match="cannot use .*node.sqlite3"):
        NodeState(tmp_path)
    NodeState(tmp_path / "elsewhere").close()  # and the lock was let go: another dir works


def test_damaged_rows_are_skipped_and_deleted(tmp_path) -> None:
    state = NodeState(tmp_path)
    state.record_outcome(RecordStore().put(advert(Identity.generate(), 9001), NOW), None)
    state.commit()
    state.close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?)", (b"k" * 32, b"p" * 32, b"\xc1garbage", NOW + 10, None))
    db.commit()
    db.close()
    state = NodeState(tmp_path)
    assert len(state.load_records()) == 1
    state.commit()
    state.close()
    assert saved_rows(tmp_path) == 1


# -- a node that restarts ----------------------------------------------------------------------


async def test_a_restarted_node_serves_its_records_and_knows_its_contacts(make_nodes, tmp_path) -> None:
    identity = Identity.generate()
    registry = Node(identity, data_dir=tmp_path)
    await registry.start()
    providers = await make_nodes(3, bootstrap=False)
    for i, provider in enumerate(providers):
        await provider.bootstrap([("127.0.0.1", registry.port)])
        await provider.advertise("calculator", f"127.0.0.1:{9001 + i}")
    known = {c.node_id for c in registry.routing.contacts()}
    assert len(registry.store_.get(KEY, registry.clock())) == 3
    await registry.stop()

    again = Node(identity, data_dir=tmp_path)
    await again.start()
    try:
        assert again.state_loaded == {
            "data_dir": str(tmp_path),
            "records": 3,
            "records_refused": 0,
            "contacts": len(known),
        }
        assert sorted(r.value for r in again.store_.get(KEY, again.clock())) == [
            b"127.0.0.1:9001",
            b"127.0.0.1:9002",
            b"127.0.0.1:9003",
        ]
        assert {c.node_id for c in again.routing.contacts()} == known
    finally:
        await again.stop()


async def test_expired_and_forged_records_are_not_loaded_back(tmp_path) -> None:
    t = [NOW]
    node = Node(data_dir=tmp_path, clock=lambda: t[0])
    await node.start()
    short, long = advert(Identity.generate(), 9001, ttl_s=10), advert(Identity.generate(), 9002, ttl_s=300)
    for record in (short, long):
        node._accept_record(record, t[0], None, "10.0.0.1")
    await node.stop()
    db = sqlite3.connect(tmp_path / DB_FILE)  # alter the long one's endpoint behind its signature
    blob = db.execute("SELECT record FROM records WHERE publisher = ?", (long.publisher.to_bytes(),)).fetchone()[0]
    wire = msgpack.unpackb(blob, raw=False)
    wire["v"] = b"6.6.6.6:1"
    db.execute("UPDATE records SET record = ? WHERE publisher = ?", (msgpack.packb(wire), long.publisher.to_bytes()))
    db.commit()
    db.close()

    t[0] = NOW + 20  # the short one has expired meanwhile
    node = Node(node.identity, data_dir=tmp_path, clock=lambda: t[0])
    await node.start()
    await node.stop()
    assert node.state_loaded["records"] == 0 and node.state_loaded["records_refused"] == 2
    assert node.store_.records() == []
    assert saved_rows(tmp_path) == 0  # and deleted, not read again next time


async def test_a_data_dir_in_use_is_one_line_from_start(tmp_path) -> None:
    first = Node(data_dir=tmp_path)
    await first.start()
    try:
        with pytest.raises(NodeError, match="in use by another node"):
            await Node(data_dir=tmp_path).start()
    finally:
        await first.stop()


def test_the_key_lives_in_the_data_dir_unless_one_is_given(tmp_path) -> None:
    assert ServiceOptions(listen=("127.0.0.1", 0), data_dir=str(tmp_path)).key_path() == str(tmp_path / KEY_FILE)
    given = ServiceOptions(listen=("127.0.0.1", 0), data_dir=str(tmp_path), key_file="k.pem")
    assert given.key_path() == "k.pem"
    assert ServiceOptions(listen=("127.0.0.1", 0)).key_path() is None
    assert PERSIST_COMMIT_INTERVAL_S <= 0.5  # commits at most 1 s apart, with room for a slow one


# -- SIGKILL -------------------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(port: int, data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`dhtscope node` as a registry on `port`, with `--data-dir`; returns the process and its 'started' line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dhtscope.tui.cli", "node", "--listen", f"127.0.0.1:{port}", "--name", "registry"]
        + ["--role", "registry", "--json-lines", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "started":
            return proc, event
    raise AssertionError(f"registry exited with {proc.wait()} before it started")


async def test_a_registry_killed_with_sigkill_comes_back_with_every_provider(make_nodes, tmp_path) -> None:
    port = free_udp_port()
    registry, started = start_registry(port, tmp_path)
    try:
        providers = await make_nodes(3, bootstrap=False)
        for i, provider in enumerate(providers):
            await provider.bootstrap([("127.0.0.1", port)])
            report = await provider.advertise("calculator", f"127.0.0.1:{9001 + i}")
            assert report.replicas >= 1
        acked = time.monotonic()
        while saved_rows(tmp_path) < 3:  # committed in the background, at most a second later
            assert time.monotonic() - acked < 10, "records never reached the data dir"
            time.sleep(0.05)
        registry.send_signal(signal.SIGKILL)
        registry.wait()
        for provider in providers:  # nobody left to republish or to answer for the registry
            await provider.stop()

        registry, again = start_registry(port, tmp_path)
        assert again["id"] == started["id"]  # the key lives in the data dir too
        (client,) = await make_nodes(1, bootstrap=False, client_mode=True, dial_timeout_s=0.3)
        await client.bootstrap([("127.0.0.1", port)])
        found = await client.find_value(KEY, quorum=None)
        assert sorted(r.value for r in found.values) == [b"127.0.0.1:9001", b"127.0.0.1:9002", b"127.0.0.1:9003"]
    finally:
        registry.kill()
        registry.wait()
        if registry.stdout:
            registry.stdout.close()


def test_cluster_members_each_get_a_data_dir_for_their_key_and_state(tmp_path) -> None:
    from dhtscope.node.cluster import Cluster, ClusterPlan

    members = ClusterPlan(providers=2, data_dir=str(tmp_path)).build()
    for m in members:
        i = m.args.index("--data-dir")
        assert m.args[i + 1] == str(tmp_path / m.name)
    cluster = Cluster(ClusterPlan(providers=1))  # none given: one for the run, gone when it stops
    own = cluster.plan.data_dir
    assert own is not None and os.path.isdir(own)
    assert all(m.args[m.args.index("--data-dir") + 1].startswith(own) for m in cluster.members)
    cluster.stop()
    assert not os.path.exists(own)


def test_tui_and_node_take_the_key_kept_in_the_data_dir(tmp_path: Path) -> None:
    """`dhtscope tui --data-dir D` is the same node across runs, as `dhtscope node --data-dir D` is."""
    import argparse

    from dhtscope.node.cli import add_node_options, service_options

    parser = argparse.ArgumentParser()
    add_node_options(parser)
    opts = service_options(parser.parse_args(["--data-dir", str(tmp_path / "d")]))
    (tmp_path / "d").mkdir()
    first = opts.identity()
    assert opts.identity().node_id == first.node_id
