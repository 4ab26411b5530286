"""The append-only, hash-chained audit log: every send, receipt, view and erasure.

Rules of this module (SPEC.md "Audit log"):

1. An entry records *that* something happened to identifiers (message id, case id,
   participant), never *what* a message said. ``detail`` holds codes and counts only.
2. Entry ``n`` stores ``prev_hash`` (the hash of entry ``n-1``; 32 zero bytes for the first)
   and ``hash = BLAKE2b-256(prev_hash || canonical bytes of the entry)``. The canonical bytes
   are the compact JSON array ``[seq, at, event, actor, subject, detail]``.
3. :func:`verify_chain` walks the entries in ``seq`` order and reports the first entry whose
   sequence number, link or hash is wrong. That catches an edited entry (its hash changes),
   a deleted entry (a gap in ``seq`` and a broken link) and reordered entries (broken links).
4. A chain alone cannot reveal that its *newest* entries were cut off, nor a forger who
   rewrites every later hash. Operators anchor it: ``verify`` reports the head (count and
   hash), which can be written down or sent elsewhere and compared later.

This module is pure; :mod:`caseway.node.storage` writes the rows (inside the same
transaction as the event they record) and reads them back for verification.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from caseway.protocol.encoding import b64encode, dump_json

GENESIS = bytes(32)

# Event names (SPEC.md lists them).
SEND = "send"  # an envelope entered the outbox
RECEIVE = "receive"  # an envelope was accepted and stored
RECEIPT = "receipt"  # a verified receipt came back for an envelope we sent
DEAD_LETTER = "dead_letter"  # an outgoing envelope was given up (rejected or expired)
VIEW = "view"  # someone read case content through the node
ERASE = "erase"  # case contents were erased; a tombstone remains


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: int
    event: str
    actor: str
    subject: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: bytes = GENESIS
    hash: bytes = GENESIS


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int
    head: bytes  # hash of the last entry that verified
    first_bad_seq: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.entries} entries, head {b64encode(self.head)}"
        return (f"audit chain broken at entry {self.first_bad_seq}: {self.problem} "
                f"({self.entries} entries verified before it)")


def canonical_bytes(seq: int, at: int, event: str, actor: str, subject: str,
                    detail: Mapping[str, Any]) -> bytes:
    return dump_json([seq, at, event, actor, subject, dict(detail)])


def entry_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.blake2b(prev_hash + canonical, digest_size=32).digest()


def chain_entry(prev: AuditEntry | None, *, at: int, event: str, actor: str, subject: str,
                detail: Mapping[str, Any] | None = None) -> AuditEntry:
    """The entry that follows ``prev`` (``None``: the first entry)."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    detail = dict(detail or {})
    digest = entry_hash(prev_hash, canonical_bytes(seq, at, event, actor, subject, detail))
    return AuditEntry(seq, at, event, actor, subject, detail, prev_hash, digest)


class ChainVerifier:
    """Checks entries one at a time, so a long log is verified without loading it whole."""

    def __init__(self) -> None:
        self._expected_seq = 1
        self._prev_hash = GENESIS
        self._count = 0
        self._failure: ChainReport | None = None

    def add(self, entry: AuditEntry) -> bool:
        """Check the next entry (rule 3); ``False`` once the chain is found broken."""
        if self._failure is not None:
            return False
        problem = None
        if entry.seq != self._expected_seq:
            problem = (f"sequence number {entry.seq} where {self._expected_seq} was expected "
                       "(an entry was deleted or reordered)")
        elif entry.prev_hash != self._prev_hash:
            problem = "link to the previous entry is wrong (deleted or reordered)"
        else:
            digest = entry_hash(self._prev_hash, canonical_bytes(
                entry.seq, entry.at, entry.event, entry.actor, entry.subject, entry.detail))
            if digest != entry.hash:
                problem = "entry content does not match its hash (edited)"
        if problem is not None:
            self._failure = ChainReport(False, self._count, self._prev_hash, entry.seq, problem)
            return False
        self._prev_hash, self._expected_seq = entry.hash, self._expected_seq + 1
        self._count += 1
        return True

    def report(self) -> ChainReport:
        return self._failure or ChainReport(True, self._count, self._prev_hash)


def verify_chain(entries: Iterable[AuditEntry]) -> ChainReport:
    """Check every link (rule 3). ``entries`` must come in ascending ``seq`` order."""
    verifier = ChainVerifier()
    for entry in entries:
        if not verifier.add(entry):
            break
    return verifier.report()


async def verify_entries(entries: AsyncIterable[AuditEntry]) -> ChainReport:
    """:func:`verify_chain` over an async source, e.g. ``storage.audit_entries()``
    (what ``caseway audit verify`` runs)."""
    verifier = ChainVerifier()
    async for entry in entries:
        if not verifier.add(entry):
            break
    return verifier.report()
