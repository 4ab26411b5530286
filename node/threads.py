"""The seam between the node and the case lifecycle: what a message does to its thread.

Rules of this module:

1. The node does not decide which transitions are legal; the sans-I/O lifecycle machine
   does (``caseway.protocol.lifecycle``). The node asks a :class:`ThreadRules` three things
   about a message: which thread and case it belongs to (:meth:`ThreadRules.locate`), what
   the thread's state becomes (:meth:`ThreadRules.apply`, raising ``CasewayError`` such as
   ``invalid_transition`` or ``sequence_gap`` to refuse) and which data categories it
   discloses under which consent (:meth:`ThreadRules.disclosure`).
2. ``apply`` is pure and is called by storage *inside* the transaction that stores the
   message, with the state read in that same transaction, so two messages of one thread
   arriving together cannot both be judged against the same old state.
3. :class:`NoLifecycle` allows every message: the thread state is ``"open"`` and sequence
   counters just count (envelope-layer tests, benchmarks). :class:`CaseLifecycle` runs
   the transition table of :mod:`caseway.protocol.lifecycle` and is what a node uses.
4. Roles: ``ThreadState.role`` is *our* role (``initiator`` if we sent the thread's first
   message). The lifecycle wants the role of the message's *sender*: the referrer is the
   initiator, so the sender is the referrer exactly when (we sent it) == (we initiated).
5. A withdrawal cancels the queued messages of its case on the node that learns of it
   (SPEC.md "Withdrawal cascade"), so a ``consent_withdrawal`` or an
   ``erasure_confirmation`` may skip sequence numbers used by cancelled messages; that
   rule is the protocol's (``lifecycle.MAY_SKIP_SEQUENCE``, SPEC.md §12.8), not the node's.
6. :class:`NodeConsents` is the node's :class:`~caseway.protocol.policy.ConsentState`: a
   synchronous, bounded in-memory view of the persisted consent store (all withdrawn ids;
   an LRU of thread consents, loaded from storage on demand), updated by the service right
   after each transaction that writes it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from caseway.protocol import lifecycle
from caseway.protocol.consent import ConsentRecord, ConsentScope

Direction = Literal["in", "out"]
MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class ThreadRef:
    thread_id: str
    case_id: str


@dataclass(frozen=True, slots=True)
class ThreadState:
    """One thread as this node sees it. ``role`` is ours: ``initiator`` if we sent its
    first message, ``responder`` if we received it. ``next_seq_out``/``next_seq_in`` are the
    sequence numbers the next message in each direction must carry."""

    thread_id: str
    case_id: str
    role: str
    peer: str
    state: str
    next_seq_out: int
    next_seq_in: int
    consent_id: str | None
    updated: int
    #: The lifecycle machine's own serialised state (opaque to storage; stored as JSON).
    machine: Mapping[str, Any] | None = None
    #: For an onward referral: the thread it continues.
    previous_thread: str | None = None


@dataclass(frozen=True, slots=True)
class Disclosure:
    """Which data categories a message gives the recipient, under which consent."""

    consent_id: str | None
    categories: tuple[str, ...]


class ThreadRules(Protocol):
    def locate(self, message: Mapping[str, Any], *, message_id: str) -> ThreadRef: ...

    def apply(self, current: ThreadState | None, message: Mapping[str, Any], *,
              ref: ThreadRef, direction: Direction, peer: str, now: int) -> ThreadState: ...

    def disclosure(self, message: Mapping[str, Any]) -> Disclosure | None: ...


def _identifier(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
        return value
    return None


class NoLifecycle:
    """Rule 3: allow everything, remember the thread, count messages."""

    def locate(self, message: Mapping[str, Any], *, message_id: str) -> ThreadRef:
        thread_id = _identifier(message.get("thread_id")) or message_id
        case_id = _identifier(message.get("case_id")) or thread_id
        return ThreadRef(thread_id, case_id)

    def apply(self, current: ThreadState | None, message: Mapping[str, Any], *,
              ref: ThreadRef, direction: Direction, peer: str, now: int) -> ThreadState:
        if current is None:
            current = ThreadState(ref.thread_id, ref.case_id,
                                  "initiator" if direction == "out" else "responder", peer,
                                  "open", 1, 1, self._consent_id(message), now)
        if direction == "out":
            return replace(current, next_seq_out=current.next_seq_out + 1, updated=now)
        return replace(current, next_seq_in=current.next_seq_in + 1, updated=now)

    def disclosure(self, message: Mapping[str, Any]) -> Disclosure | None:
        sections = message.get("sections")
        if not isinstance(sections, Mapping) or not sections:
            return None
        categories = tuple(sorted(str(name) for name in sections))
        return Disclosure(self._consent_id(message), categories)

    @staticmethod
    def _consent_id(message: Mapping[str, Any]) -> str | None:
        consent = message.get("consent")
        if isinstance(consent, Mapping):
            return _identifier(consent.get("consent_id")) or _identifier(consent.get("id"))
        return _identifier(message.get("consent_id"))


class CaseLifecycle:
    """:class:`ThreadRules` over the case lifecycle machine (rules 1, 2 and 4)."""

    def __init__(self) -> None:
        self._fallback = NoLifecycle()

    def locate(self, message: Mapping[str, Any], *, message_id: str) -> ThreadRef:
        return self._fallback.locate(message, message_id=message_id)

    def apply(self, current: ThreadState | None, message: Mapping[str, Any], *,
              ref: ThreadRef, direction: Direction, peer: str, now: int) -> ThreadState:
        ours = ("initiator" if direction == "out" else "responder") if current is None \
            else current.role
        machine = (lifecycle.ThreadState() if current is None or current.machine is None
                   else lifecycle.ThreadState.from_json(current.machine))
        sender_is_referrer = (direction == "out") == (ours == "initiator")
        role = lifecycle.Role.REFERRER if sender_is_referrer else lifecycle.Role.RECEIVER
        after = machine.apply(message, role=role)
        our_role = lifecycle.Role.REFERRER if ours == "initiator" else lifecycle.Role.RECEIVER
        their_role = (lifecycle.Role.RECEIVER if our_role is lifecycle.Role.REFERRER
                      else lifecycle.Role.REFERRER)
        previous = (current.previous_thread if current is not None
                    else _identifier(message.get("previous_thread")))
        return ThreadState(ref.thread_id, ref.case_id, ours, peer, after.state.value,
                           after.next_seq(our_role), after.next_seq(their_role),
                           after.consent_id, now, after.to_json(), previous)

    def disclosure(self, message: Mapping[str, Any]) -> Disclosure | None:
        return self._fallback.disclosure(message)


#: What a thread's consent becomes once the case is erased: the ids stay (so that C2,
#: "withdrawn", keeps answering) and nothing else does.
def erased_consent(consent_id: str) -> ConsentRecord:
    empty: frozenset[str] = frozenset()
    return ConsentRecord(consent_id=consent_id, given_at=0, method="verbal", language="und",
                         interpreter_used=False, recorded_by="erased",
                         scope=ConsentScope(participants=empty, sectors=empty, purposes=empty,
                                            data_categories=empty,
                                            onward_referral_allowed=False,
                                            feedback_allowed=False),
                         expires_at=1)


_erased_consent = erased_consent

#: Thread consents kept in memory (a parsed record is ~2.6 kB): ~2.6 MB at most.
DEFAULT_CONSENT_CACHE = 1024


class ConsentNotLoaded(Exception):
    """:meth:`NodeConsents.consent_for_thread` does not hold that thread's consent in memory.

    Deliberately not a ``CasewayError``: a cache miss must never read as "no consent" (the
    policy would refuse a valid message, or skip the onward-referral check). The service
    catches it, loads the record from storage (:meth:`NodeConsents.pin`) and runs the
    synchronous step again. The text carries no identifier."""

    def __init__(self, thread_id: str) -> None:
        super().__init__("thread consent not loaded")
        self.thread_id = thread_id


class NodeConsents:
    """The node's consent state (rule 6), bounded in memory.

    - Withdrawn consent ids: all of them, always (one short entry per withdrawal).
    - The consent behind each thread: a bounded LRU of records (``capacity``), filled by
      the service after each transaction that records one and from storage on demand,
      plus the records *pinned* by operations in flight (loaded for that operation; a
      pin holds until the operation ends, so eviction cannot undo a load mid-operation).

    :meth:`consent_for_thread` is synchronous (the policy runs inside ``seal``/``open``):
    for a thread it does not hold it raises :class:`ConsentNotLoaded` rather than guess.
    ``None`` is a held answer: storage has no consent for that thread.

    Thread-safe (one lock): ``seal_envelope`` runs inside the storage transaction, on the
    database thread, while the event loop updates the view.
    """

    def __init__(self, capacity: int = DEFAULT_CONSENT_CACHE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, ConsentRecord | None] = OrderedDict()
        self._pinned: dict[str, list[Any]] = {}  # thread id -> [pins, record]
        self._withdrawn: dict[str, int] = {}
        self._epoch = 0  # bumped by every update of a thread's record

    @property
    def capacity(self) -> int:
        return self._capacity

    # ConsentState
    def is_withdrawn(self, consent_id: str) -> bool:
        return consent_id in self._withdrawn

    def consent_for_thread(self, thread_id: str) -> ConsentRecord | None:
        with self._lock:
            pinned = self._pinned.get(thread_id)
            if pinned is not None:
                return pinned[1]  # type: ignore[no-any-return]
            try:
                record = self._cache[thread_id]
            except KeyError:
                raise ConsentNotLoaded(thread_id) from None
            self._cache.move_to_end(thread_id)
            return record

    def holds(self, thread_id: str) -> bool:
        with self._lock:
            return thread_id in self._pinned or thread_id in self._cache

    def held(self) -> int:
        """Thread records held (cached and pinned): bounded by capacity + operations."""
        with self._lock:
            return len(self._cache.keys() | self._pinned.keys())

    # updates (called after the transaction that persisted them)
    def record_thread(self, thread_id: str, consent: ConsentRecord) -> None:
        """The thread's opening consent (the first one recorded stays, as in storage)."""
        with self._lock:
            pinned = self._pinned.get(thread_id)
            current = pinned[1] if pinned is not None else self._cache.get(thread_id)
            if current is None:
                self._set(thread_id, consent)

    def record_erased(self, thread_id: str, consent_id: str) -> None:
        with self._lock:
            self._set(thread_id, erased_consent(consent_id))

    def withdraw(self, consent_id: str, withdrawn_at: int) -> None:
        self._withdrawn.setdefault(consent_id, withdrawn_at)

    def withdrawn_at(self, consent_id: str) -> int | None:
        return self._withdrawn.get(consent_id)

    # loads from storage
    @property
    def epoch(self) -> int:
        """Read before starting a load; pass to :meth:`pin` / :meth:`cache`."""
        return self._epoch

    def cache(self, thread_id: str, record: ConsentRecord | None, *, epoch: int) -> None:
        """A record read from storage (at start): cached unless the view changed since."""
        with self._lock:
            if epoch == self._epoch and thread_id not in self._cache:
                self._put(thread_id, record)

    def pin(self, thread_id: str, record: ConsentRecord | None, *, epoch: int) -> None:
        """Hold a record read from storage until :meth:`unpin`. If the view was updated
        while it was read, what the view holds now wins over what was read."""
        with self._lock:
            pinned = self._pinned.get(thread_id)
            if pinned is not None:
                pinned[0] += 1
                return
            if epoch != self._epoch and thread_id in self._cache:
                record = self._cache[thread_id]
            elif epoch == self._epoch:
                self._put(thread_id, record)
            self._pinned[thread_id] = [1, record]

    def unpin(self, thread_id: str) -> None:
        with self._lock:
            pinned = self._pinned.get(thread_id)
            if pinned is None:
                return
            pinned[0] -= 1
            if pinned[0] <= 0:
                del self._pinned[thread_id]

    def _set(self, thread_id: str, record: ConsentRecord | None) -> None:
        self._epoch += 1
        pinned = self._pinned.get(thread_id)
        if pinned is not None:
            pinned[1] = record
        self._put(thread_id, record)

    def _put(self, thread_id: str, record: ConsentRecord | None) -> None:
        self._cache[thread_id] = record
        self._cache.move_to_end(thread_id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
