"""Storage: migrations, one-transaction writes, duplicates, FIFO, erasure, encryption at rest."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from caseway.node.storage import (
    SCHEMA_VERSION,
    InboundResult,
    InboundWrite,
    OutboundWrite,
    SqliteStorage,
    StorageError,
)
from caseway.node.storage_crypto import StorageCipher, StorageCipherError, content_row_id
from caseway.node.threads import Disclosure, ThreadState
from caseway.protocol.errors import CasewayError, ErrorCode

NOW = 1768435200
CANARY = "CANARY-7d1f0c2a-storage"


def thread(thread_id: str = "t1", case_id: str = "c1") -> ThreadState:
    return ThreadState(thread_id, case_id, "responder", "peer-a", "open", 1, 2, None, NOW)


def inbound(message_id: str, digest: bytes = b"d" * 32, content: bytes = b"sealed") -> InboundWrite:
    return InboundWrite("peer-a", message_id, digest, b'{"envelope":1}', NOW, b"receipt-" +
                        message_id.encode(), thread(), content)


def outbound(message_id: str, destination: str = "peer-b", *, expires: int = NOW + 3600,
             created: int = NOW) -> OutboundWrite:
    return OutboundWrite(destination, message_id, b"d" * 32, b"envelope-" + message_id.encode(),
                         created, expires, thread(f"t-{message_id}"), b"sealed",
                         Disclosure("consent-1", ("health", "identity")))


@pytest.fixture
async def storage(tmp_path: Path):
    store = await SqliteStorage.open(tmp_path / "node.db")
    try:
        yield store
    finally:
        await store.close()


async def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    store = await SqliteStorage.open(path)
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    store = await SqliteStorage.open(path)  # second open applies nothing
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await (await SqliteStorage.open(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version, description) VALUES (99, 'future')")
    with pytest.raises(StorageError, match="newer"):
        await SqliteStorage.open(path)


async def test_record_inbound_then_duplicate_then_replayed(storage: SqliteStorage) -> None:
    first = await storage.record_inbound(sender="peer-a", message_id="m1", digest=b"d" * 32,
                                         thread_id="t1", build=lambda _: inbound("m1"))
    assert not first.duplicate
    again = await storage.record_inbound(sender="peer-a", message_id="m1", digest=b"d" * 32,
                                         thread_id="t1", build=_never)
    assert again.duplicate and again.receipt == first.receipt
    with pytest.raises(CasewayError) as err:
        await storage.record_inbound(sender="peer-a", message_id="m1", digest=b"x" * 32,
                                     thread_id="t1", build=_never)
    assert err.value.code is ErrorCode.REPLAYED
    stored = await storage.inbound("peer-a", "m1")
    assert stored is not None and stored.receipt == first.receipt
    assert (await storage.row_counts())["envelopes_in"] == 1


def _never(_: ThreadState | None) -> InboundWrite:
    raise AssertionError("build must not run for a stored message")


async def test_a_refused_lifecycle_step_stores_nothing(storage: SqliteStorage) -> None:
    before = await storage.row_counts()

    def refuse(_: ThreadState | None) -> InboundWrite:
        raise CasewayError(ErrorCode.INVALID_TRANSITION)

    with pytest.raises(CasewayError):
        await storage.record_inbound(sender="peer-a", message_id="m1", digest=b"d" * 32,
                                     thread_id="t1", build=refuse)
    assert await storage.row_counts() == before


async def test_a_failing_statement_rolls_back_the_whole_transaction(
        storage: SqliteStorage) -> None:
    await storage.enqueue(thread_id="t-m1", build=lambda _: outbound("m1"))
    before = await storage.row_counts()
    # Same message id again: the outbox insert fails (UNIQUE) after nothing else was kept.
    with pytest.raises(sqlite3.IntegrityError):
        await storage.enqueue(thread_id="t-m1", build=lambda _: outbound("m1"))
    assert await storage.row_counts() == before


async def test_enqueue_writes_outbox_thread_contents_disclosure_and_audit(
        storage: SqliteStorage) -> None:
    item_id = await storage.enqueue(thread_id="t-m1", build=lambda _: outbound("m1"))
    counts = await storage.row_counts()
    assert {k: counts[k] for k in ("outbox", "threads", "case_contents", "disclosures",
                                   "audit")} == dict.fromkeys(
        ("outbox", "threads", "case_contents", "disclosures", "audit"), 1)
    item = await storage.outbox_item(item_id)
    assert item is not None and item.state == "queued" and item.next_attempt_at == NOW
    [record] = await storage.disclosures("c1")
    assert record.participant == "peer-b" and record.categories == ("health", "identity")


async def test_outbox_is_fifo_per_destination(storage: SqliteStorage) -> None:
    ids = [await storage.enqueue(thread_id=f"t-{m}", build=lambda _, m=m, d=d: outbound(m, d))
           for m, d in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b"))]
    head_a = await storage.outbox_head("a")
    assert head_a is not None and head_a.id == ids[0]
    await storage.mark_delivered(ids[0], receipt=b"r", at=NOW)
    head_a = await storage.outbox_head("a")
    assert head_a is not None and head_a.id == ids[2]
    assert await storage.outbox_depths() == {"a": 1, "b": 2}
    await storage.schedule_retry(ids[1], attempts=1, next_attempt_at=NOW + 7,
                                 last_error="network")
    assert await storage.outbox_next_wake("b") == NOW + 7
    await storage.mark_dead(ids[1], reason="expired", receipt=None, at=NOW + 8)
    dead = await storage.outbox_items(state="dead")
    assert [i.id for i in dead] == [ids[1]] and dead[0].last_error == "expired"


async def test_erasure_leaves_a_tombstone_and_no_content(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    storage = await SqliteStorage.open(path)
    cipher = StorageCipher(os.urandom(32))
    row = content_row_id("in", "peer-a", "m1", "c1")
    blob = cipher.seal(CANARY.encode(), row_id=row, nonce=os.urandom(24))
    await storage.record_inbound(sender="peer-a", message_id="m1", digest=b"d" * 32,
                                 thread_id="t1", build=lambda _: inbound("m1", content=blob))
    [stored] = await storage.case_contents("c1")
    assert cipher.open(stored.blob, row_id=row) == CANARY.encode()
    tombstone = await storage.erase_case("c1", at=NOW + 5, actor="peer-a",
                                         reason="consent_withdrawn")
    assert (tombstone.contents_erased, tombstone.envelopes_erased) == (1, 1)
    assert await storage.case_contents("c1") == []
    # The id, digest and receipt stay: a redelivery still gets its receipt, not a new row.
    kept = await storage.inbound("peer-a", "m1")
    assert kept is not None and kept.erased and kept.receipt == b"receipt-m1"
    await storage.close()
    wal = Path(str(path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert blob not in path.read_bytes()
    assert b'{"envelope":1}' not in path.read_bytes()


def test_storage_cipher_binds_a_blob_to_its_row() -> None:
    cipher = StorageCipher(os.urandom(32))
    row = content_row_id("in", "peer-a", "m1", "case-1")
    blob = cipher.seal(b"secret", row_id=row, nonce=os.urandom(24))
    assert CANARY.encode() not in blob and b"secret" not in blob
    assert cipher.open(blob, row_id=row) == b"secret"
    with pytest.raises(StorageCipherError):
        cipher.open(blob, row_id=content_row_id("in", "peer-a", "m1", "case-2"))
    with pytest.raises(StorageCipherError):
        StorageCipher(os.urandom(32)).open(blob, row_id=row)
    with pytest.raises(StorageCipherError):
        cipher.open(blob[:-1] + bytes([blob[-1] ^ 1]), row_id=row)


# ----------------------------------------------------------------------------- one hop


async def test_run_executes_on_the_aiosqlite_worker_thread(storage: SqliteStorage) -> None:
    """``SqliteStorage._run`` relies on aiosqlite's private ``Connection._execute`` and
    ``Connection._conn``. If an aiosqlite upgrade renames or changes them, this fails
    loudly here rather than somewhere in the node."""
    import threading

    import aiosqlite

    assert hasattr(aiosqlite.Connection, "_execute"), "aiosqlite private API changed"
    assert isinstance(aiosqlite.Connection.__dict__.get("_conn"), property), \
        "aiosqlite private API changed"
    loop_thread = threading.get_ident()

    def probe(db: sqlite3.Connection) -> tuple[int, int, bool]:
        assert isinstance(db, sqlite3.Connection)
        value = db.execute("SELECT 41 + 1").fetchone()[0]
        return threading.get_ident(), value, db.in_transaction

    ident, value, in_transaction = await storage._run(probe)
    assert value == 42 and not in_transaction
    assert ident != loop_thread
    # The same worker thread every time (sqlite3 connections are bound to their thread).
    assert (await storage._run(probe))[0] == ident

    def fail(db: sqlite3.Connection) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await storage._run(fail)


async def test_a_write_runs_as_one_transaction_in_one_hop(storage: SqliteStorage) -> None:
    seen: list[bool] = []

    def write(db: sqlite3.Connection) -> int:
        seen.append(db.in_transaction)
        db.execute("INSERT INTO api_tokens (name, role, token_hash, created_at) "
                   "VALUES ('a', 'staff', x'01', 1)")
        return 7

    assert await storage._write(write) == 7
    assert seen == [True]
    assert (await storage.row_counts())["api_tokens"] == 1

    def write_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO api_tokens (name, role, token_hash, created_at) "
                   "VALUES ('b', 'staff', x'02', 1)")
        raise RuntimeError("after a statement")

    with pytest.raises(RuntimeError):
        await storage._write(write_then_fail)
    assert (await storage.row_counts())["api_tokens"] == 1
    # The connection is usable afterwards (the failed transaction was rolled back).
    assert await storage._run(lambda db: db.in_transaction) is False


async def test_the_build_callback_runs_inside_the_transaction(storage: SqliteStorage) -> None:
    # `build` sees the thread state read in the same transaction, and a failure in it
    # leaves nothing behind (the lifecycle decision is atomic with the write, rule 6).
    await storage.record_inbound(sender="peer-a", message_id="m1", digest=b"d" * 32,
                                 thread_id="t1", build=lambda _: inbound("m1"))
    states: list[ThreadState | None] = []

    def build(current: ThreadState | None) -> InboundWrite:
        states.append(current)
        return inbound("m2", digest=b"e" * 32)

    await storage.record_inbound(sender="peer-a", message_id="m2", digest=b"e" * 32,
                                 thread_id="t1", build=build)
    assert states and states[0] is not None and states[0].thread_id == "t1"


async def test_concurrent_writes_are_serialised(storage: SqliteStorage) -> None:
    import asyncio

    ids = await asyncio.gather(*(
        storage.enqueue(thread_id=f"t-m{i}", build=lambda _, i=i: outbound(f"m{i}"))
        for i in range(50)))
    assert sorted(ids) == list(range(1, 51))
    entries = [e async for e in storage.audit_entries(batch=7)]
    assert [e.seq for e in entries] == list(range(1, 51))


async def test_consent_rows_read_one_thread_and_the_most_recent(
        storage: SqliteStorage) -> None:
    from caseway.node.storage import ConsentEffects

    for i in range(3):
        write = outbound(f"m{i}")
        write = OutboundWrite(write.destination, write.message_id, write.digest,
                              write.envelope, NOW + i, write.expires, write.thread,
                              write.content, write.disclosure, "referral",
                              ConsentEffects(opening=True, consent_id=f"consent-{i}"))
        await storage.enqueue(thread_id=f"t-m{i}", build=lambda _, w=write: w)
    one = await storage.consent("t-m1")
    assert one is not None and one.consent_id == "consent-1"
    assert one.opening is not None and one.opening.blob == b"sealed"
    assert await storage.consent("t-none") is None
    assert [c.thread_id for c in await storage.recent_consents(2)] == ["t-m2", "t-m1"]
    assert len(await storage.consents()) == 3


# ----------------------------------------------------------------------------- group commit


async def _trace(storage: SqliteStorage) -> list[str]:
    """Every SQL statement the connection runs from now on (to count transactions)."""
    statements: list[str] = []
    await storage._run(lambda db: db.set_trace_callback(statements.append))
    return statements


def _record(storage: SqliteStorage, message_id: str, digest: bytes = b"d" * 32,
            build: Callable[[ThreadState | None], InboundWrite] | None = None,
            ) -> Coroutine[Any, Any, InboundResult]:
    return storage.record_inbound(
        sender="peer-a", message_id=message_id, digest=digest, thread_id="t1",
        build=build or (lambda _: inbound(message_id, digest=digest)))


async def _outcomes(*calls: Coroutine[Any, Any, InboundResult]) -> list[Any]:
    import asyncio

    return await asyncio.gather(*calls, return_exceptions=True)


async def test_a_failing_member_is_rolled_back_alone_and_its_group_commits(
        storage: SqliteStorage) -> None:
    stored = await _record(storage, "m0")
    # A member that fails after its first row was written (the envelope row is inserted,
    # then its contents insert aborts): only its savepoint is rolled back.
    await storage._run(lambda db: db.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON case_contents WHEN NEW.message_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'poison'); END"))
    statements = await _trace(storage)

    def refuse(_: ThreadState | None) -> InboundWrite:
        raise CasewayError(ErrorCode.INVALID_TRANSITION)

    m1, replayed, refused, bad, m3 = await _outcomes(
        _record(storage, "m1"), _record(storage, "m0", digest=b"x" * 32),
        _record(storage, "m2", build=refuse), _record(storage, "bad"), _record(storage, "m3"))
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert not m1.duplicate and not m3.duplicate
    assert isinstance(replayed, CasewayError) and replayed.code is ErrorCode.REPLAYED
    assert isinstance(refused, CasewayError) and refused.code is ErrorCode.INVALID_TRANSITION
    assert isinstance(bad, sqlite3.IntegrityError)
    assert [i.message_id for i in await storage.inbound_items()] == ["m0", "m1", "m3"]
    counts = await storage.row_counts()
    assert (counts["envelopes_in"], counts["case_contents"], counts["audit"]) == (3, 3, 3)
    kept = await storage.inbound("peer-a", "m0")
    assert kept is not None and kept.receipt == stored.receipt and kept.digest == b"d" * 32


async def test_duplicates_in_one_group_store_once_and_share_the_receipt(
        storage: SqliteStorage) -> None:
    statements = await _trace(storage)
    first, second, other = await _outcomes(
        _record(storage, "m1"), _record(storage, "m1", build=_never),
        _record(storage, "m1", digest=b"x" * 32, build=_never))
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert not first.duplicate
    assert second.duplicate and second.receipt == first.receipt
    assert isinstance(other, CasewayError) and other.code is ErrorCode.REPLAYED
    counts = await storage.row_counts()
    assert (counts["envelopes_in"], counts["case_contents"], counts["audit"]) == (1, 1, 1)


async def test_a_failed_commit_fails_every_member_and_stores_nothing(
        storage: SqliteStorage) -> None:
    # A deferred foreign-key violation passes every statement and fails only at COMMIT.
    await storage._run(lambda db: db.executescript(
        "CREATE TABLE parent (id TEXT PRIMARY KEY);"
        "CREATE TABLE child (parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY "
        "DEFERRED);"
        "CREATE TRIGGER commit_fails AFTER INSERT ON envelopes_in "
        "WHEN NEW.message_id = 'm2' BEGIN INSERT INTO child VALUES ('missing'); END;"))
    before = await storage.row_counts()
    statements = await _trace(storage)
    outcomes = await _outcomes(*(_record(storage, f"m{i}") for i in range(1, 4)))
    assert statements.count("BEGIN IMMEDIATE") == 1 and "ROLLBACK" in statements
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert await storage.row_counts() == before
    # The connection is usable afterwards, and the failed members can be stored again.
    assert not (await _record(storage, "m1")).duplicate
    assert await storage._run(lambda db: db.in_transaction) is False


async def test_grouped_writes_keep_the_audit_chain_in_arrival_order(
        storage: SqliteStorage) -> None:
    from caseway.node import audit
    from caseway.node.storage import INBOUND_GROUP_MAX

    statements = await _trace(storage)
    n = 2 * INBOUND_GROUP_MAX + 5
    results = await _outcomes(*(_record(storage, f"m{i:03}") for i in range(n)))
    assert all(not r.duplicate for r in results)
    groups = statements.count("BEGIN IMMEDIATE")
    assert 3 <= groups < n
    entries = [e async for e in storage.audit_entries()]
    assert [e.subject for e in entries] == [f"m{i:03}" for i in range(n)]
    report = audit.verify_chain(entries)
    assert report.ok and report.entries == n


async def test_cancelled_callers_and_close_leave_the_group_consistent(tmp_path: Path) -> None:
    import asyncio

    storage = await SqliteStorage.open(tmp_path / "node.db")
    tasks = [asyncio.create_task(_record(storage, f"m{i}")) for i in range(1, 4)]
    await asyncio.sleep(0)  # all three queued; the writer has not taken them yet
    tasks[1].cancel()
    await storage.close()  # drains what is queued, then closes
    assert not tasks[0].result().duplicate and not tasks[2].result().duplicate
    assert tasks[1].cancelled()
    with pytest.raises(StorageError):
        await _record(storage, "m4")
    storage = await SqliteStorage.open(tmp_path / "node.db")
    try:
        assert [i.message_id for i in await storage.inbound_items()] == ["m1", "m3"]
    finally:
        await storage.close()
