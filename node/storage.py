"""The node's durable state. All SQL of the node lives in this module.

Rules of this module (SPEC.md "Node storage"):

1. The rest of the node sees only :class:`Storage`, a narrow, domain-shaped interface
   (record an inbound envelope, enqueue an outbound one, mark a delivery, erase a case...).
   :class:`SqliteStorage` is the embedded implementation; a PostgreSQL one for national
   hubs implements the same protocol and nothing else changes.
2. Every change that touches more than one row is one transaction: a crash leaves either
   all of it or none of it, never a half-written row. Each transaction that records an
   event appends its audit entry in the same transaction.
3. Durable before answering: WAL with ``synchronous=FULL`` makes a commit survive power
   loss once ``COMMIT`` returns, so a receipt is released only for a stored envelope.
4. Storage never sees plaintext case contents. It is handed blobs already sealed with the
   storage key (:mod:`caseway.node.storage_crypto`); the raw inbound envelope is stored as
   received (it is end-to-end encrypted to our key).
5. Erasure overwrites: ``secure_delete`` zeroes deleted content in the database pages, and
   the WAL is checkpointed and truncated afterwards so no old page copy stays in it.
6. The lifecycle decision about a thread (:class:`~caseway.node.threads.ThreadRules`) runs
   inside the transaction, on the state read in that transaction (the ``build`` callbacks).

Theory of operation: one aiosqlite connection. Each operation (a whole write transaction,
or a read) is one synchronous function run on aiosqlite's worker thread
(:meth:`SqliteStorage._run`): one thread hop per operation instead of one per statement.
That thread runs one function at a time, so two operations never interleave inside a
transaction. SQLite has a single writer anyway.

Group commit (inbound only): :meth:`SqliteStorage.record_inbound` calls that arrive while
an earlier group is being written are stored together in ONE transaction (one fsync), each
inside its own ``SAVEPOINT``, in arrival order. A member that fails (``replayed``, a
lifecycle refusal, any exception) is rolled back to its savepoint alone; its neighbours are
kept. No member's call returns before the group's ``COMMIT`` has returned; if ``BEGIN`` or
``COMMIT`` fails, every member fails and nothing of the group is stored (rule 3 holds for
each member).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from caseway.protocol.encoding import dump_json
from caseway.protocol.errors import CasewayError, ErrorCode

from . import audit
from .threads import Disclosure, ThreadState

_T = TypeVar("_T")

QUEUED, DELIVERED, DEAD = "queued", "delivered", "dead"
#: At most this many inbound envelopes share one transaction (group commit).
INBOUND_GROUP_MAX = 64
#: Audit events added with the local API (audit.py keeps the original six).
AUDIT_WITHDRAW = "withdraw"  # a consent was recorded as withdrawn (by staff or a peer)
AUDIT_TOKEN = "token"  # an API token was created or revoked


class StorageError(Exception):
    """The database cannot be used by this version of the node (never carries data)."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class StoredInbound:
    sender: str
    message_id: str
    digest: bytes
    receipt: bytes
    received_at: int
    case_id: str
    thread_id: str
    erased: bool


@dataclass(frozen=True, slots=True)
class ConsentEffects:
    """Consent-store rows written with a message, in the message's own transaction.

    ``consent_id`` with ``opening``: the message opens the thread (a referral or an onward
    referral) and carries its consent record; the record itself is read back from the
    message's sealed contents, so it is stored once, encrypted, and erased with them.
    ``withdrawn``: (consent id, when she withdrew), for a
    ``consent_withdrawal``. ``tombstone``: the tombstone a peer's ``erasure_confirmation``
    carries (ids and times only).
    """

    opening: bool = False
    consent_id: str | None = None
    withdrawn: tuple[str, int] | None = None
    tombstone: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class InboundWrite:
    """Everything stored when an envelope is accepted (one transaction)."""

    sender: str
    message_id: str
    digest: bytes
    envelope: bytes
    received_at: int
    receipt: bytes
    thread: ThreadState
    content: bytes  # the message, sealed with the storage key
    kind: str | None = None  # the message type (local metadata; never in a cleartext header)
    consent: ConsentEffects | None = None


@dataclass(frozen=True, slots=True)
class InboundResult:
    receipt: bytes
    duplicate: bool  # True: the same bytes were already stored; this is the original receipt


@dataclass(frozen=True, slots=True)
class OutboundWrite:
    """Everything stored when a message is sent: the outbox row and its side rows."""

    destination: str
    message_id: str
    digest: bytes
    envelope: bytes
    created: int
    expires: int
    thread: ThreadState
    content: bytes  # the message, sealed with the storage key
    disclosure: Disclosure | None
    kind: str | None = None
    consent: ConsentEffects | None = None
    actor: str | None = None  # the staff member who sent it (audit detail ``by``)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    destination: str
    message_id: str
    digest: bytes
    envelope: bytes
    case_id: str
    thread_id: str
    created: int
    expires: int
    state: str
    attempts: int
    next_attempt_at: int
    last_error: str | None
    receipt: bytes | None
    finished_at: int | None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class InboundItem:
    """Metadata of one accepted envelope (no contents)."""

    sender: str
    message_id: str
    received_at: int
    case_id: str
    thread_id: str
    kind: str | None
    receipt: bytes
    erased: bool


@dataclass(frozen=True, slots=True)
class StoredConsent:
    thread_id: str
    case_id: str
    consent_id: str
    opening: StoredContent | None  # the message carrying the record; None once erased


@dataclass(frozen=True, slots=True)
class ErasureConfirmation:
    thread_id: str
    consent_id: str
    participant: str
    message_id: str
    confirmed_at: int
    tombstone: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CancelledItem:
    id: int
    destination: str
    message_id: str
    thread_id: str
    kind: str | None


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class StoredContent:
    direction: str
    peer: str
    message_id: str
    case_id: str
    thread_id: str
    at: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class DisclosureRecord:
    participant: str
    case_id: str
    consent_id: str | None
    categories: tuple[str, ...]
    message_id: str
    at: int


@dataclass(frozen=True, slots=True)
class Tombstone:
    case_id: str
    erased_at: int
    reason: str
    contents_erased: int
    envelopes_erased: int


# ----------------------------------------------------------------------------- interface


class Storage(Protocol):
    """What the node needs from a database (rule 1). Implementations keep rules 2–6."""

    async def close(self) -> None: ...

    # inbound
    async def inbound(self, sender: str, message_id: str) -> StoredInbound | None: ...

    async def record_inbound(
        self, *, sender: str, message_id: str, digest: bytes, thread_id: str,
        build: Callable[[ThreadState | None], InboundWrite],
    ) -> InboundResult: ...

    # outbound
    async def enqueue(
        self, *, thread_id: str, build: Callable[[ThreadState | None], OutboundWrite],
    ) -> int: ...

    async def outbox_head(self, destination: str) -> OutboxItem | None: ...

    async def outbox_destinations(self) -> list[str]: ...

    async def outbox_next_wake(self, destination: str) -> int | None: ...

    async def outbox_item(self, item_id: int) -> OutboxItem | None: ...

    async def outbox_items(self, *, state: str | None = None, destination: str | None = None,
                           limit: int = 100) -> list[OutboxItem]: ...

    async def outbox_depths(self) -> dict[str, int]: ...

    async def mark_delivered(self, item_id: int, *, receipt: bytes, at: int) -> None: ...

    async def mark_dead(self, item_id: int, *, reason: str, receipt: bytes | None,
                        at: int) -> None: ...

    async def schedule_retry(self, item_id: int, *, attempts: int, next_attempt_at: int,
                             last_error: str) -> None: ...

    # threads, contents, disclosures, erasure
    async def thread(self, thread_id: str) -> ThreadState | None: ...

    async def case_contents(self, case_id: str) -> list[StoredContent]: ...

    async def disclosures(self, case_id: str) -> list[DisclosureRecord]: ...

    async def erase_case(self, case_id: str, *, at: int, actor: str,
                         reason: str) -> Tombstone: ...

    async def tombstone(self, case_id: str) -> Tombstone | None: ...

    # audit
    async def append_audit(self, *, at: int, event: str, actor: str, subject: str,
                           detail: dict[str, Any] | None = None) -> audit.AuditEntry: ...

    def audit_entries(self, *, batch: int = 1000) -> AsyncIterator[audit.AuditEntry]: ...

    # consent store (the node's ConsentState reads these on demand)
    async def record_withdrawal(self, consent_id: str, *, withdrawn_at: int, at: int,
                                actor: str) -> bool: ...

    async def consents(self) -> list[StoredConsent]: ...

    async def consent(self, thread_id: str) -> StoredConsent | None: ...

    async def recent_consents(self, limit: int) -> list[StoredConsent]: ...

    async def withdrawn_consents(self) -> dict[str, int]: ...

    async def erasure_confirmations(self, consent_id: str) -> list[ErasureConfirmation]: ...

    async def cancel_queued(self, case_id: str, *, keep_kinds: Sequence[str], at: int,
                            reason: str) -> list[CancelledItem]: ...

    # listings for the local API (metadata only)
    async def threads(self, *, case_id: str | None = None, consent_id: str | None = None,
                      role: str | None = None, state: str | None = None,
                      limit: int = 1000) -> list[ThreadState]: ...

    async def case_ids(self, *, limit: int = 1000) -> list[str]: ...

    async def inbound_items(self, *, case_id: str | None = None,
                            thread_id: str | None = None) -> list[InboundItem]: ...

    async def case_outbox(self, case_id: str) -> list[OutboxItem]: ...

    async def audit_page(self, *, after: int, limit: int) -> list[audit.AuditEntry]: ...

    # API tokens (hashes only)
    async def add_token(self, *, name: str, role: str, token_hash: bytes, at: int,
                        actor: str) -> None: ...

    async def token_by_hash(self, token_hash: bytes) -> tuple[ApiToken, bytes] | None: ...

    async def tokens(self) -> list[ApiToken]: ...

    async def revoke_token(self, name: str, *, at: int, actor: str) -> ApiToken | None: ...

    # operations
    async def row_counts(self) -> dict[str, int]: ...

    async def checkpoint(self) -> None: ...


# ----------------------------------------------------------------------------- migrations

#: Versioned schema. Never edit a released entry: append a new version instead.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "initial schema", (
        """CREATE TABLE envelopes_in (
            sender TEXT NOT NULL,
            message_id TEXT NOT NULL,
            digest BLOB NOT NULL,
            envelope BLOB,                -- as received; NULL once the case is erased
            received_at INTEGER NOT NULL,
            receipt BLOB NOT NULL,        -- the accepted receipt, returned to duplicates
            case_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            erased_at INTEGER,
            PRIMARY KEY (sender, message_id))""",
        "CREATE INDEX envelopes_in_case ON envelopes_in (case_id)",
        # AUTOINCREMENT: ids are never reused, so "lowest id" stays FIFO after deletions.
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            destination TEXT NOT NULL,
            message_id TEXT NOT NULL UNIQUE,
            digest BLOB NOT NULL,
            envelope BLOB NOT NULL,
            case_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            created INTEGER NOT NULL,
            expires INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            last_error TEXT,
            receipt BLOB,
            finished_at INTEGER)""",
        "CREATE INDEX outbox_queue ON outbox (destination, id) WHERE state = 'queued'",
        """CREATE TABLE threads (
            thread_id TEXT PRIMARY KEY,
            case_id TEXT NOT NULL,
            role TEXT NOT NULL,
            peer TEXT NOT NULL,
            state TEXT NOT NULL,
            next_seq_out INTEGER NOT NULL,
            next_seq_in INTEGER NOT NULL,
            consent_id TEXT,
            updated INTEGER NOT NULL,
            machine TEXT)                 -- the lifecycle machine's state, JSON""",
        "CREATE INDEX threads_case ON threads (case_id)",
        """CREATE TABLE case_contents (
            id INTEGER PRIMARY KEY,
            case_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            peer TEXT NOT NULL,
            message_id TEXT NOT NULL,
            at INTEGER NOT NULL,
            content BLOB NOT NULL,        -- sealed with the storage key, never plaintext
            UNIQUE (direction, peer, message_id))""",
        "CREATE INDEX case_contents_case ON case_contents (case_id)",
        """CREATE TABLE disclosures (
            id INTEGER PRIMARY KEY,
            participant TEXT NOT NULL,
            case_id TEXT NOT NULL,
            consent_id TEXT,
            categories TEXT NOT NULL,     -- JSON array of data-category names
            message_id TEXT NOT NULL,
            at INTEGER NOT NULL)""",
        "CREATE INDEX disclosures_case ON disclosures (case_id)",
        """CREATE TABLE tombstones (
            case_id TEXT PRIMARY KEY,
            erased_at INTEGER NOT NULL,
            reason TEXT NOT NULL,
            contents_erased INTEGER NOT NULL,
            envelopes_erased INTEGER NOT NULL)""",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash BLOB NOT NULL,
            hash BLOB NOT NULL)""",
        # Append-only inside the node. Someone with the file can drop these triggers; the
        # hash chain is what catches them (audit.py rule 3).
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
    )),
    (2, "consent store, message kinds, erasure confirmations, API tokens", (
        # The message type of each row: local metadata for timelines, erasure tracking and
        # cancelling data-carrying rows after a withdrawal (NULL for rows written by v1).
        "ALTER TABLE outbox ADD COLUMN kind TEXT",
        "ALTER TABLE envelopes_in ADD COLUMN kind TEXT",
        "ALTER TABLE threads ADD COLUMN previous_thread TEXT",
        "CREATE INDEX outbox_case ON outbox (case_id)",
        "CREATE INDEX threads_consent ON threads (consent_id)",
        # The consent behind each thread: its ids and the message that carried the record.
        # The record itself stays inside that message's sealed contents (it names the
        # consent's language, staff and restrictions) and is erased with them; the ids stay
        # so that the withdrawal keeps applying.
        """CREATE TABLE consents (
            thread_id TEXT PRIMARY KEY,
            case_id TEXT NOT NULL,
            consent_id TEXT NOT NULL,
            direction TEXT NOT NULL,
            peer TEXT NOT NULL,
            message_id TEXT NOT NULL,
            recorded_at INTEGER NOT NULL)""",
        "CREATE INDEX consents_consent ON consents (consent_id)",
        """CREATE TABLE withdrawn_consents (
            consent_id TEXT PRIMARY KEY,
            withdrawn_at INTEGER NOT NULL,  -- when she withdrew
            recorded_at INTEGER NOT NULL,   -- when this node learnt it
            source TEXT NOT NULL)           -- 'local' or the participant that told us""",
        """CREATE TABLE erasure_confirmations (
            thread_id TEXT PRIMARY KEY,
            consent_id TEXT NOT NULL,
            participant TEXT NOT NULL,
            message_id TEXT NOT NULL,
            confirmed_at INTEGER NOT NULL,
            tombstone TEXT NOT NULL)        -- ids and times only (SPEC.md §12.10)""",
        """CREATE TABLE api_tokens (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            token_hash BLOB NOT NULL UNIQUE, -- BLAKE2b-256 of the secret; never the secret
            created_at INTEGER NOT NULL,
            revoked_at INTEGER)""",
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
TABLES = ("envelopes_in", "outbox", "threads", "case_contents", "disclosures", "tombstones",
          "audit", "consents", "withdrawn_consents", "erasure_confirmations", "api_tokens")

_OUTBOX_COLUMNS = ("id, destination, message_id, digest, envelope, case_id, thread_id, created, "
                   "expires, state, attempts, next_attempt_at, last_error, receipt, finished_at, "
                   "kind")
_THREAD_COLUMNS = ("thread_id, case_id, role, peer, state, next_seq_out, next_seq_in, "
                   "consent_id, updated, machine, previous_thread")
_INBOUND_COLUMNS = ("sender, message_id, received_at, case_id, thread_id, kind, receipt, "
                    "erased_at")


def _outbox_item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), row[5], row[6],
                      row[7], row[8], row[9], row[10], row[11], row[12],
                      None if row[13] is None else bytes(row[13]), row[14], row[15])


def _thread(row: Sequence[Any]) -> ThreadState:
    return ThreadState(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                       None if row[9] is None else json.loads(row[9]), row[10])


def _inbound_item(row: Sequence[Any]) -> InboundItem:
    return InboundItem(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]),
                       row[7] is not None)


def _insert_contents(db: sqlite3.Connection, t: ThreadState, direction: str, peer: str,
                     message_id: str, at: int, content: bytes) -> None:
    """A message's contents, already sealed with the storage key (never plaintext)."""
    db.execute(
        "INSERT INTO case_contents (case_id, thread_id, direction, peer, message_id, at, "
        "content) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (t.case_id, t.thread_id, direction, peer, message_id, at, content))


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T]) -> _T:
    """``BEGIN IMMEDIATE`` … ``fn`` … ``COMMIT`` on the database thread. Any exception, a
    failed ``COMMIT`` included, rolls everything back and is raised (rule 2); when this
    returns, ``COMMIT`` has returned (rule 3)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back on its own.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


@dataclass(frozen=True, slots=True)
class _InboundRequest:
    """One queued :meth:`SqliteStorage.record_inbound` call (group commit)."""

    sender: str
    message_id: str
    digest: bytes
    thread_id: str
    build: Callable[[ThreadState | None], InboundWrite]
    future: asyncio.Future[InboundResult]


class SqliteStorage:
    """:class:`Storage` on SQLite through aiosqlite (see the module rules).

    Theory of operation: aiosqlite owns one ``sqlite3.Connection`` and one worker thread that
    runs queued functions one at a time, in order. Every operation here is ONE synchronous
    function run on that thread through :meth:`_run` (a write transaction is ``BEGIN
    IMMEDIATE``, its statements and ``COMMIT`` in one function), so an operation costs one
    thread hop, and two operations can never interleave: the worker thread is the
    serialisation point (no asyncio lock is needed). The ``build`` callbacks run on that
    thread, inside their transaction.
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # Group commit of inbound envelopes (see the module docstring): callers queue their
        # arguments with a future; one writer task, started on the first call and stopped
        # by close(), stores whatever is queued in one transaction per group.
        self._inbound_queue: asyncio.Queue[_InboundRequest | None] = asyncio.Queue()
        self._inbound_writer: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    async def open(cls, path: Path | str, *, read_only: bool = False) -> SqliteStorage:
        """Open (creating if needed) and migrate the database at ``path``.

        ``read_only`` opens an existing database without writing anything (no migration,
        no pragma that writes): for auditors checking a copy, and for ``audit verify``.
        """
        if read_only:
            return await cls._open_read_only(Path(path))
        try:
            db = await aiosqlite.connect(str(path), isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the database ({type(exc).__name__})") from None
        try:
            # WAL: readers never block the writer; FULL: a commit is on disk when it returns.
            mode = await (await db.execute("PRAGMA journal_mode=WAL")).fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StorageError("the database does not support WAL mode")
            for pragma in ("PRAGMA synchronous=FULL", "PRAGMA secure_delete=ON",
                           "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"):
                await db.execute(pragma)
            storage = cls(db)
            await storage._migrate()
        except BaseException:
            await db.close()
            raise
        return storage

    @classmethod
    async def _open_read_only(cls, path: Path) -> SqliteStorage:
        if not path.exists():
            raise StorageError("no database at that path")
        try:
            db = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                         isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the database ({type(exc).__name__})") from None
        storage = cls(db)
        try:
            version = await storage.schema_version()
        except (sqlite3.Error, StorageError):
            await db.close()
            raise StorageError("not a Caseway database") from None
        if version != SCHEMA_VERSION:
            await db.close()
            raise StorageError(f"database schema version {version}; this node reads "
                               f"{SCHEMA_VERSION} (open it once with the node to migrate)")
        return storage

    async def close(self) -> None:
        # Inbound requests already queued are written (or failed) before the writer stops;
        # new ones are refused. Then the connection closes, queued after every operation
        # already submitted (the worker runs them in order).
        self._closing = True
        writer = self._inbound_writer
        if writer is not None and not writer.done():
            self._inbound_queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._fail_queued(StorageError("storage closed"))
        await self._db.close()

    # ------------------------------------------------------------------ one hop per operation

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` on the database thread and return its result.

        This is the only place that touches aiosqlite's PRIVATE API (0.20–0.22):
        ``Connection._execute(f)`` queues the zero-argument ``f`` on the connection's own
        worker thread (the only thread the ``sqlite3.Connection`` may be used from) and
        awaits its result or exception; ``Connection._conn`` is that ``sqlite3.Connection``
        (raises ``ValueError`` once closed), read only inside ``f``, i.e. on that thread.
        aiosqlite's public API costs one hop per statement; this costs one per operation.
        ``tests/test_storage.py::test_run_executes_on_the_aiosqlite_worker_thread`` fails
        loudly if either private name changes.

        If the awaiting task is cancelled, ``fn`` still runs to its end (a transaction
        commits or rolls back as a whole); only its result is dropped.
        """
        db = self._db
        return await db._execute(lambda: fn(db._conn))  # type: ignore[no-untyped-call,no-any-return]

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """One write transaction (rule 2) in one hop. ``BEGIN IMMEDIATE`` takes the write
        lock up front, so a read-then-write inside it cannot be invalidated by another
        writer; any exception (including a failed ``COMMIT``) rolls everything back. When
        this returns, ``COMMIT`` has returned (rule 3)."""

        return await self._run(functools.partial(_in_transaction, fn=fn))

    async def _migrate(self) -> None:
        def migrate(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                       "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                       "applied_at INTEGER NOT NULL DEFAULT (unixepoch()))")
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = 0 if row is None or row[0] is None else int(row[0])
            if current > SCHEMA_VERSION:
                raise StorageError(f"database schema version {current} is newer than this "
                                   f"node understands ({SCHEMA_VERSION}); upgrade the node")
            for version, description, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version, description) "
                           "VALUES (?, ?)", (version, description))

        await self._write(migrate)

    async def schema_version(self) -> int:
        row = await self._run(lambda db: db.execute(
            "SELECT MAX(version) FROM schema_version").fetchone())
        return 0 if row is None or row[0] is None else int(row[0])

    # ------------------------------------------------------------------ audit

    @staticmethod
    def _append_audit(db: sqlite3.Connection, *, at: int, event: str, actor: str,
                      subject: str, detail: dict[str, Any] | None = None) -> audit.AuditEntry:
        row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        prev = None if row is None else audit.AuditEntry(row[0], 0, "", "", "",
                                                         hash=bytes(row[1]))
        entry = audit.chain_entry(prev, at=at, event=event, actor=actor, subject=subject,
                                  detail=detail)
        db.execute(
            "INSERT INTO audit (seq, at, event, actor, subject, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.at, entry.event, entry.actor, entry.subject,
             dump_json(dict(entry.detail)).decode("utf-8"), entry.prev_hash, entry.hash))
        return entry

    async def append_audit(self, *, at: int, event: str, actor: str, subject: str,
                           detail: dict[str, Any] | None = None) -> audit.AuditEntry:
        return await self._write(lambda db: self._append_audit(
            db, at=at, event=event, actor=actor, subject=subject, detail=detail))

    async def audit_entries(self, *, batch: int = 1000) -> AsyncIterator[audit.AuditEntry]:
        """All entries in ``seq`` order, read in batches (one operation per batch)."""
        after = 0
        while True:
            entries = await self.audit_page(after=after, limit=batch)
            for entry in entries:
                yield entry
            if len(entries) < batch:
                return
            after = entries[-1].seq

    # ------------------------------------------------------------------ threads

    @staticmethod
    def _load_thread(db: sqlite3.Connection, thread_id: str) -> ThreadState | None:
        row = db.execute(f"SELECT {_THREAD_COLUMNS} FROM threads WHERE thread_id = ?",
                         (thread_id,)).fetchone()
        return None if row is None else _thread(row)

    @staticmethod
    def _save_thread(db: sqlite3.Connection, t: ThreadState) -> None:
        db.execute(
            f"INSERT INTO threads ({_THREAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (thread_id) DO UPDATE SET state = excluded.state, "
            "next_seq_out = excluded.next_seq_out, next_seq_in = excluded.next_seq_in, "
            "consent_id = excluded.consent_id, updated = excluded.updated, "
            "machine = excluded.machine",
            (t.thread_id, t.case_id, t.role, t.peer, t.state, t.next_seq_out, t.next_seq_in,
             t.consent_id, t.updated,
             None if t.machine is None else dump_json(dict(t.machine)).decode("utf-8"),
             t.previous_thread))

    async def thread(self, thread_id: str) -> ThreadState | None:
        return await self._run(lambda db: self._load_thread(db, thread_id))

    # ------------------------------------------------------------------ inbound

    async def inbound(self, sender: str, message_id: str) -> StoredInbound | None:
        return await self._run(lambda db: self._inbound(db, sender, message_id))

    @staticmethod
    def _inbound(db: sqlite3.Connection, sender: str, message_id: str) -> StoredInbound | None:
        row = db.execute(
            "SELECT digest, receipt, received_at, case_id, thread_id, erased_at "
            "FROM envelopes_in WHERE sender = ? AND message_id = ?",
            (sender, message_id)).fetchone()
        if row is None:
            return None
        return StoredInbound(sender, message_id, bytes(row[0]), bytes(row[1]), row[2], row[3],
                             row[4], row[5] is not None)

    async def record_inbound(
        self, *, sender: str, message_id: str, digest: bytes, thread_id: str,
        build: Callable[[ThreadState | None], InboundWrite],
    ) -> InboundResult:
        """Store an accepted envelope with its thread state, contents, receipt and audit
        entry, or return the original receipt if the same bytes are already stored.

        The duplicate check is repeated here, inside the write transaction, because two
        deliveries of one envelope can pass the caller's early check concurrently (or
        share one group: the second then sees the first's rows).
        Different bytes under a stored (sender, id) are ``replayed``.

        Group commit: the call is queued and written with the others pending at that
        moment in one transaction, each in its own savepoint; it returns (or raises its
        own error) only after that transaction's ``COMMIT`` returned. If the group's
        ``BEGIN``/``COMMIT`` fails, every member raises that failure and none is stored.
        A caller cancelled before its group starts is dropped (nothing stored); once the
        group started, it is written and only the answer is dropped.
        """
        if self._closing:
            raise StorageError("storage closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InboundResult] = loop.create_future()
        self._inbound_queue.put_nowait(
            _InboundRequest(sender, message_id, digest, thread_id, build, future))
        if self._inbound_writer is None or self._inbound_writer.done():
            self._inbound_writer = loop.create_task(self._write_inbound_groups())
        return await future

    async def _write_inbound_groups(self) -> None:
        """The writer task: one group (everything queued, up to INBOUND_GROUP_MAX) per
        transaction, in arrival order, until close() queues the stop marker."""
        queue = self._inbound_queue
        group: list[_InboundRequest] = []
        try:
            while True:
                first = await queue.get()
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < INBOUND_GROUP_MAX and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    group.append(item)
                members = [r for r in group if not r.future.done()]  # drop cancelled callers
                if members:
                    try:
                        outcomes = await self._run(
                            functools.partial(self._inbound_group, members=members))
                    except Exception as exc:  # BEGIN/COMMIT failed: every member fails
                        for r in members:
                            if not r.future.done():
                                r.future.set_exception(exc)
                    else:
                        for r, outcome in zip(members, outcomes, strict=True):
                            if r.future.done():
                                continue
                            if isinstance(outcome, BaseException):
                                r.future.set_exception(outcome)
                            else:
                                r.future.set_result(outcome)
                group = []
                if stop:
                    return
        finally:
            # Cancelled (or a bug): nobody may wait forever. A group cut off here may still
            # commit on the worker thread; its members are told it failed, never accepted.
            failure = StorageError("inbound writer stopped")
            for r in group:
                if not r.future.done():
                    r.future.set_exception(failure)
            self._fail_queued(failure)

    def _fail_queued(self, failure: Exception) -> None:
        while not self._inbound_queue.empty():
            item = self._inbound_queue.get_nowait()
            if item is not None and not item.future.done():
                item.future.set_exception(failure)

    def _inbound_group(self, db: sqlite3.Connection, members: Sequence[_InboundRequest],
                       ) -> list[InboundResult | Exception]:
        """One transaction for a group, on the database thread. A member's own failure is
        rolled back to its savepoint and returned as its outcome; a failure of the group
        (BEGIN, COMMIT, or a member error after which the transaction cannot continue) is
        raised, after rolling everything back, and fails every member."""

        def each_in_its_savepoint(conn: sqlite3.Connection) -> list[InboundResult | Exception]:
            outcomes: list[InboundResult | Exception] = []
            for r in members:
                conn.execute("SAVEPOINT member")
                try:
                    outcome: InboundResult | Exception = self._record_inbound(
                        conn, r.sender, r.message_id, r.digest, r.thread_id, r.build)
                except Exception as exc:
                    # Some SQLite errors (disk full, I/O) roll back the whole transaction
                    # on their own: then the members before this one are gone too, and the
                    # group must fail as a whole.
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO member")
                    outcome = exc
                conn.execute("RELEASE member")
                outcomes.append(outcome)
            return outcomes

        return _in_transaction(db, each_in_its_savepoint)

    def _record_inbound(self, db: sqlite3.Connection, sender: str, message_id: str,
                        digest: bytes, thread_id: str,
                        build: Callable[[ThreadState | None], InboundWrite]) -> InboundResult:
        """One envelope's rows (inside a transaction): duplicate check, build, inserts."""
        existing = self._inbound(db, sender, message_id)
        if existing is not None:
            if existing.digest != digest:
                raise CasewayError(ErrorCode.REPLAYED)
            return InboundResult(existing.receipt, duplicate=True)
        write = build(self._load_thread(db, thread_id))
        t = write.thread
        db.execute(
            "INSERT INTO envelopes_in (sender, message_id, digest, envelope, received_at, "
            "receipt, case_id, thread_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (write.sender, write.message_id, write.digest, write.envelope,
             write.received_at, write.receipt, t.case_id, t.thread_id, write.kind))
        self._save_thread(db, t)
        _insert_contents(db, t, "in", write.sender, write.message_id, write.received_at,
                         write.content)
        self._append_audit(db, at=write.received_at, event=audit.RECEIVE,
                           actor=write.sender, subject=write.message_id,
                           detail={"case_id": t.case_id, "thread_id": t.thread_id})
        if write.consent is not None:
            self._consent_effects(db, write.consent, t, peer=write.sender,
                                  message_id=write.message_id, at=write.received_at,
                                  source=write.sender)
        return InboundResult(write.receipt, duplicate=False)

    # ------------------------------------------------------------------ outbound

    async def enqueue(
        self, *, thread_id: str, build: Callable[[ThreadState | None], OutboundWrite],
    ) -> int:
        """Queue a sealed envelope with its thread state, contents, disclosure and audit
        entry in one transaction; returns the outbox id."""

        def enqueue(db: sqlite3.Connection) -> int:
            write = build(self._load_thread(db, thread_id))
            t = write.thread
            cursor = db.execute(
                "INSERT INTO outbox (destination, message_id, digest, envelope, case_id, "
                "thread_id, created, expires, state, attempts, next_attempt_at, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)",
                (write.destination, write.message_id, write.digest, write.envelope, t.case_id,
                 t.thread_id, write.created, write.expires, write.created, write.kind))
            item_id = cursor.lastrowid
            if item_id is None:  # pragma: no cover - SQLite always sets it after an INSERT
                raise StorageError("outbox insert returned no id")
            self._save_thread(db, t)
            _insert_contents(db, t, "out", write.destination, write.message_id,
                             write.created, write.content)
            if write.disclosure is not None:
                db.execute(
                    "INSERT INTO disclosures (participant, case_id, consent_id, categories, "
                    "message_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                    (write.destination, t.case_id, write.disclosure.consent_id,
                     dump_json(list(write.disclosure.categories)).decode("utf-8"),
                     write.message_id, write.created))
            detail: dict[str, Any] = {"case_id": t.case_id, "thread_id": t.thread_id,
                                      "outbox_id": item_id}
            if write.actor is not None:
                detail["by"] = write.actor
            self._append_audit(db, at=write.created, event=audit.SEND,
                               actor=write.destination, subject=write.message_id,
                               detail=detail)
            if write.consent is not None:
                self._consent_effects(db, write.consent, t, peer=write.destination,
                                      message_id=write.message_id, at=write.created,
                                      source="local")
            return item_id

        return await self._write(enqueue)

    async def outbox_head(self, destination: str) -> OutboxItem | None:
        """The oldest queued envelope for ``destination``: FIFO per destination."""
        row = await self._run(lambda db: db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE destination = ? AND state = 'queued' "
            "ORDER BY id LIMIT 1", (destination,)).fetchone())
        return None if row is None else _outbox_item(row)

    async def outbox_destinations(self) -> list[str]:
        rows = await self._run(lambda db: db.execute(
            "SELECT DISTINCT destination FROM outbox WHERE state = 'queued' "
            "ORDER BY destination").fetchall())
        return [row[0] for row in rows]

    async def outbox_next_wake(self, destination: str) -> int | None:
        """When the head of ``destination``'s queue next needs attention: its next attempt,
        or its expiry if that comes first. ``None`` if nothing is queued."""
        row = await self._run(lambda db: db.execute(
            "SELECT next_attempt_at, expires FROM outbox WHERE destination = ? "
            "AND state = 'queued' ORDER BY id LIMIT 1", (destination,)).fetchone())
        return None if row is None else min(row[0], row[1])

    async def outbox_item(self, item_id: int) -> OutboxItem | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (item_id,)).fetchone())
        return None if row is None else _outbox_item(row)

    async def outbox_items(self, *, state: str | None = None, destination: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        clauses, params = [], []
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if destination is not None:
            clauses.append("destination = ?")
            params.append(destination)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox {where} ORDER BY id LIMIT ?",
            (*params, limit)).fetchall())
        return [_outbox_item(row) for row in rows]

    async def outbox_depths(self) -> dict[str, int]:
        rows = await self._run(lambda db: db.execute(
            "SELECT destination, COUNT(*) FROM outbox WHERE state = 'queued' "
            "GROUP BY destination ORDER BY destination").fetchall())
        return {row[0]: row[1] for row in rows}

    async def mark_delivered(self, item_id: int, *, receipt: bytes, at: int) -> None:
        def mark(db: sqlite3.Connection) -> None:
            row = db.execute(
                "UPDATE outbox SET state = 'delivered', receipt = ?, finished_at = ?, "
                "last_error = NULL WHERE id = ? AND state = 'queued' "
                "RETURNING destination, message_id", (receipt, at, item_id)).fetchone()
            if row is not None:  # already finished (a concurrent pass): nothing to record
                self._append_audit(db, at=at, event=audit.RECEIPT, actor=row[0],
                                   subject=row[1], detail={"outcome": "accepted"})

        await self._write(mark)

    async def mark_dead(self, item_id: int, *, reason: str, receipt: bytes | None,
                        at: int) -> None:
        def mark(db: sqlite3.Connection) -> None:
            row = db.execute(
                "UPDATE outbox SET state = 'dead', receipt = ?, finished_at = ?, "
                "last_error = ? WHERE id = ? AND state = 'queued' "
                "RETURNING destination, message_id", (receipt, at, reason, item_id)).fetchone()
            if row is not None:
                if receipt is not None:
                    self._append_audit(db, at=at, event=audit.RECEIPT, actor=row[0],
                                       subject=row[1],
                                       detail={"outcome": "rejected", "error": reason})
                self._append_audit(db, at=at, event=audit.DEAD_LETTER, actor=row[0],
                                   subject=row[1], detail={"reason": reason})

        await self._write(mark)

    async def schedule_retry(self, item_id: int, *, attempts: int, next_attempt_at: int,
                             last_error: str) -> None:
        await self._write(lambda db: db.execute(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? "
            "WHERE id = ? AND state = 'queued'",
            (attempts, next_attempt_at, last_error, item_id)))

    # ------------------------------------------------------------------ contents, erasure

    async def case_contents(self, case_id: str) -> list[StoredContent]:
        rows = await self._run(lambda db: db.execute(
            "SELECT direction, peer, message_id, case_id, thread_id, at, content "
            "FROM case_contents WHERE case_id = ? ORDER BY at, id", (case_id,)).fetchall())
        return [StoredContent(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6])) for r in rows]

    async def disclosures(self, case_id: str) -> list[DisclosureRecord]:
        rows = await self._run(lambda db: db.execute(
            "SELECT participant, case_id, consent_id, categories, message_id, at "
            "FROM disclosures WHERE case_id = ? ORDER BY id", (case_id,)).fetchall())
        return [DisclosureRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5])
                for r in rows]

    async def erase_case(self, case_id: str, *, at: int, actor: str, reason: str) -> Tombstone:
        """Erase a case's contents and the inbound envelopes we could decrypt; keep ids,
        digests and receipts (so a redelivery still gets its original receipt and is not
        accepted again) and a tombstone. Then overwrite the WAL (rule 5)."""

        def erase(db: sqlite3.Connection) -> None:
            contents = db.execute(
                "DELETE FROM case_contents WHERE case_id = ?", (case_id,)).rowcount
            envelopes = db.execute(
                "UPDATE envelopes_in SET envelope = NULL, erased_at = ? "
                "WHERE case_id = ? AND envelope IS NOT NULL", (at, case_id)).rowcount
            db.execute(
                "INSERT INTO tombstones (case_id, erased_at, reason, contents_erased, "
                "envelopes_erased) VALUES (?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET "
                "contents_erased = contents_erased + excluded.contents_erased, "
                "envelopes_erased = envelopes_erased + excluded.envelopes_erased",
                (case_id, at, reason, contents, envelopes))
            self._append_audit(db, at=at, event=audit.ERASE, actor=actor, subject=case_id,
                               detail={"reason": reason, "contents": contents,
                                       "envelopes": envelopes})

        await self._write(erase)
        await self.checkpoint()
        tombstone = await self.tombstone(case_id)
        if tombstone is None:  # pragma: no cover - written in the transaction above
            raise StorageError("tombstone missing after erasure")
        return tombstone

    async def tombstone(self, case_id: str) -> Tombstone | None:
        row = await self._run(lambda db: db.execute(
            "SELECT case_id, erased_at, reason, contents_erased, envelopes_erased "
            "FROM tombstones WHERE case_id = ?", (case_id,)).fetchone())
        return None if row is None else Tombstone(row[0], row[1], row[2], row[3], row[4])

    async def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes."""
        row = await self._run(lambda db: db.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        if row is not None and row[0] != 0:
            raise StorageError("WAL checkpoint could not complete (database busy)")

    # ------------------------------------------------------------------ consent store

    def _consent_effects(self, db: sqlite3.Connection, effects: ConsentEffects,
                         t: ThreadState, *, peer: str, message_id: str, at: int,
                         source: str) -> None:
        if effects.opening and effects.consent_id is not None:
            db.execute(
                "INSERT INTO consents (thread_id, case_id, consent_id, direction, peer, "
                "message_id, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (thread_id) DO NOTHING",
                (t.thread_id, t.case_id, effects.consent_id,
                 "in" if source != "local" else "out", peer, message_id, at))
        if effects.withdrawn is not None:
            self._withdraw(db, effects.withdrawn[0], withdrawn_at=effects.withdrawn[1],
                           at=at, source=source)
        if effects.tombstone is not None and t.consent_id is not None:
            db.execute(
                "INSERT INTO erasure_confirmations (thread_id, consent_id, participant, "
                "message_id, confirmed_at, tombstone) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (thread_id) DO NOTHING",
                (t.thread_id, t.consent_id, peer, message_id, at,
                 dump_json(effects.tombstone).decode("utf-8")))

    def _withdraw(self, db: sqlite3.Connection, consent_id: str, *, withdrawn_at: int,
                  at: int, source: str, actor: str | None = None) -> bool:
        cursor = db.execute(
            "INSERT INTO withdrawn_consents (consent_id, withdrawn_at, recorded_at, source) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (consent_id) DO NOTHING",
            (consent_id, withdrawn_at, at, source))
        if cursor.rowcount:
            self._append_audit(db, at=at, event=AUDIT_WITHDRAW, actor=actor or source,
                               subject=consent_id, detail={"source": source})
        return bool(cursor.rowcount)

    async def record_withdrawal(self, consent_id: str, *, withdrawn_at: int, at: int,
                                actor: str) -> bool:
        """Staff recorded her withdrawal here; ``False`` if it was already recorded."""
        return await self._write(lambda db: self._withdraw(
            db, consent_id, withdrawn_at=withdrawn_at, at=at, source="local", actor=actor))

    async def consents(self) -> list[StoredConsent]:
        rows = await self._run(lambda db: db.execute(
            f"{_CONSENT_SELECT} ORDER BY c.thread_id").fetchall())
        return [_stored_consent(r) for r in rows]

    async def consent(self, thread_id: str) -> StoredConsent | None:
        """The consent behind one thread (``None``: the thread has no consent row)."""
        row = await self._run(lambda db: db.execute(
            f"{_CONSENT_SELECT} WHERE c.thread_id = ?", (thread_id,)).fetchone())
        return None if row is None else _stored_consent(row)

    async def recent_consents(self, limit: int) -> list[StoredConsent]:
        """The consents of the ``limit`` threads recorded last (to warm a cache at start)."""
        rows = await self._run(lambda db: db.execute(
            f"{_CONSENT_SELECT} ORDER BY c.recorded_at DESC, c.rowid DESC LIMIT ?",
            (limit,)).fetchall())
        return [_stored_consent(r) for r in rows]

    async def withdrawn_consents(self) -> dict[str, int]:
        """Withdrawn consent ids and when she withdrew."""
        rows = await self._run(lambda db: db.execute(
            "SELECT consent_id, withdrawn_at FROM withdrawn_consents").fetchall())
        return {r[0]: r[1] for r in rows}

    async def erasure_confirmations(self, consent_id: str) -> list[ErasureConfirmation]:
        rows = await self._run(lambda db: db.execute(
            "SELECT thread_id, consent_id, participant, message_id, confirmed_at, tombstone "
            "FROM erasure_confirmations WHERE consent_id = ? ORDER BY thread_id",
            (consent_id,)).fetchall())
        return [ErasureConfirmation(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]))
                for r in rows]

    async def cancel_queued(self, case_id: str, *, keep_kinds: Sequence[str], at: int,
                            reason: str) -> list[CancelledItem]:
        """Dead-letter every queued row of a case except those of ``keep_kinds`` and drop
        their envelope bytes: after a withdrawal no queued data may leave the node."""
        marks = ", ".join("?" for _ in keep_kinds) or "NULL"

        def cancel(db: sqlite3.Connection) -> list[CancelledItem]:
            rows = db.execute(
                "UPDATE outbox SET state = 'dead', envelope = x'', finished_at = ?, "
                f"last_error = ? WHERE case_id = ? AND state = 'queued' AND "
                f"(kind IS NULL OR kind NOT IN ({marks})) "
                "RETURNING id, destination, message_id, thread_id, kind",
                (at, reason, case_id, *keep_kinds)).fetchall()
            items = [CancelledItem(r[0], r[1], r[2], r[3], r[4]) for r in rows]
            for item in sorted(items, key=lambda i: i.id):
                self._append_audit(db, at=at, event=audit.DEAD_LETTER,
                                   actor=item.destination, subject=item.message_id,
                                   detail={"reason": reason})
            return items

        return await self._write(cancel)

    # ------------------------------------------------------------------ listings

    async def threads(self, *, case_id: str | None = None, consent_id: str | None = None,
                      role: str | None = None, state: str | None = None,
                      limit: int = 1000) -> list[ThreadState]:
        clauses, params = [], []
        for column, value in (("case_id", case_id), ("consent_id", consent_id),
                              ("role", role), ("state", state)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_THREAD_COLUMNS} FROM threads {where} "
            "ORDER BY updated DESC, thread_id LIMIT ?", (*params, limit)).fetchall())
        return [_thread(row) for row in rows]

    async def case_ids(self, *, limit: int = 1000) -> list[str]:
        """Cases, most recently active first."""
        rows = await self._run(lambda db: db.execute(
            "SELECT case_id FROM threads GROUP BY case_id ORDER BY MAX(updated) DESC, "
            "case_id LIMIT ?", (limit,)).fetchall())
        return [row[0] for row in rows]

    async def inbound_items(self, *, case_id: str | None = None,
                            thread_id: str | None = None) -> list[InboundItem]:
        clauses, params = [], []
        for column, value in (("case_id", case_id), ("thread_id", thread_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_INBOUND_COLUMNS} FROM envelopes_in {where} "
            "ORDER BY received_at, rowid", tuple(params)).fetchall())
        return [_inbound_item(row) for row in rows]

    async def case_outbox(self, case_id: str) -> list[OutboxItem]:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE case_id = ? ORDER BY id",
            (case_id,)).fetchall())
        return [_outbox_item(row) for row in rows]

    async def audit_page(self, *, after: int, limit: int) -> list[audit.AuditEntry]:
        rows = await self._run(lambda db: db.execute(
            "SELECT seq, at, event, actor, subject, detail, prev_hash, hash FROM audit "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall())
        return [audit.AuditEntry(r[0], r[1], r[2], r[3], r[4], _detail(r[5]), bytes(r[6]),
                                 bytes(r[7])) for r in rows]

    # ------------------------------------------------------------------ API tokens

    async def add_token(self, *, name: str, role: str, token_hash: bytes, at: int,
                        actor: str) -> None:
        """Store a token's hash; ``conflict`` if the name is taken."""

        def add(db: sqlite3.Connection) -> None:
            try:
                db.execute("INSERT INTO api_tokens (name, role, token_hash, created_at) "
                           "VALUES (?, ?, ?, ?)", (name, role, token_hash, at))
            except sqlite3.IntegrityError:
                raise CasewayError(ErrorCode.CONFLICT, "a token with that name exists",
                                   section="name") from None
            self._append_audit(db, at=at, event=AUDIT_TOKEN, actor=actor, subject=name,
                               detail={"action": "create", "role": role})

        await self._write(add)

    async def token_by_hash(self, token_hash: bytes) -> tuple[ApiToken, bytes] | None:
        row = await self._run(lambda db: db.execute(
            "SELECT name, role, created_at, revoked_at, token_hash FROM api_tokens "
            "WHERE token_hash = ?", (token_hash,)).fetchone())
        return None if row is None else (ApiToken(row[0], row[1], row[2], row[3]),
                                         bytes(row[4]))

    async def tokens(self) -> list[ApiToken]:
        rows = await self._run(lambda db: db.execute(
            "SELECT name, role, created_at, revoked_at FROM api_tokens "
            "ORDER BY name").fetchall())
        return [ApiToken(r[0], r[1], r[2], r[3]) for r in rows]

    async def revoke_token(self, name: str, *, at: int, actor: str) -> ApiToken | None:
        def revoke(db: sqlite3.Connection) -> ApiToken | None:
            row = db.execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ? "
                "RETURNING name, role, created_at, revoked_at", (at, name)).fetchone()
            if row is None:
                return None
            self._append_audit(db, at=at, event=AUDIT_TOKEN, actor=actor, subject=name,
                               detail={"action": "revoke", "role": row[1]})
            return ApiToken(row[0], row[1], row[2], row[3])

        return await self._write(revoke)

    async def row_counts(self) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            counts = {}
            for table in TABLES:
                row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                counts[table] = 0 if row is None else int(row[0])
            return counts

        return await self._run(count)


_CONSENT_SELECT = (
    "SELECT c.thread_id, c.case_id, c.consent_id, c.direction, c.peer, c.message_id, k.at, "
    "k.content FROM consents c LEFT JOIN case_contents k ON k.direction = c.direction "
    "AND k.peer = c.peer AND k.message_id = c.message_id")


def _stored_consent(r: Sequence[Any]) -> StoredConsent:
    return StoredConsent(r[0], r[1], r[2], None if r[7] is None else StoredContent(
        r[3], r[4], r[5], r[1], r[0], r[6], bytes(r[7])))


def _detail(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {"_": value}
