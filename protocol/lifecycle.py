"""The case lifecycle: one referral thread as a state machine both sides run (BRIEF §5).

Rules of this module (SPEC.md "Lifecycle"):

1. Everything that moves a thread is in :data:`TRANSITIONS`, keyed by (state, role of the
   sender, message type). Anything not in the table is ``invalid_transition``, naming the
   role, state and type. SPEC.md reproduces the table line by line.
2. Roles: ``referrer`` sent the referral (or onward referral) that opened the thread;
   ``receiver`` is the other side. A thread has exactly these two participants.
3. Each side numbers its own messages 1, 2, 3, ...; the thread tracks the next number it
   expects from each. A lower number (duplicate or reordered) is ``invalid_transition``; a
   higher one is ``sequence_gap`` (retryable: the missing message is still on its way).
   Sequence numbers are checked before the table, since a gap hides the true state.
4. Expiry: a thread waiting for the receiver's decision (``sent``, ``info_requested``)
   expires at the referral's ``respond_by``. A message is judged by its own ``sent_at``: an
   answer sent at or after ``respond_by`` meets the thread ``expired``, one sent before
   meets the thread as it was, even if a local timer (:meth:`ThreadState.expire`) already
   marked it expired. So both sides reach the same state from the same messages, whatever
   their clocks and delivery delays.
5. "delivered" is not a state: only the referrer learns of delivery (from the signed
   receipt), so it is the referrer's local annotation and never changes the table.
6. A ``consent_withdrawal`` or ``erasure_confirmation`` must name the thread's consent.

Theory of operation: :class:`ThreadState` is immutable; :meth:`ThreadState.apply` returns
the next state or raises. The node persists the state (``to_json``) and applies each
message it sends or accepts, with the role of that message's sender.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .errors import CasewayError, ErrorCode


class State(StrEnum):
    NEW = "new"  # no message yet
    SENT = "sent"
    INFO_REQUESTED = "info_requested"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    DECLINED = "declined"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    ERASED = "erased"


class Role(StrEnum):
    REFERRER = "referrer"
    RECEIVER = "receiver"


S, R = State, Role
REF, RCV = R.REFERRER, R.RECEIVER

#: The one transition table. (state, role of the sender, message type) -> next state.
TRANSITIONS: dict[tuple[State, Role, str], State] = {
    (S.NEW, REF, "referral"): S.SENT,
    (S.NEW, REF, "onward_referral"): S.SENT,
    (S.SENT, RCV, "accept"): S.ACCEPTED,
    (S.SENT, RCV, "decline"): S.DECLINED,
    (S.SENT, RCV, "info_request"): S.INFO_REQUESTED,
    (S.SENT, REF, "cancel"): S.CANCELLED,
    (S.SENT, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.INFO_REQUESTED, REF, "info_response"): S.SENT,
    (S.INFO_REQUESTED, RCV, "accept"): S.ACCEPTED,
    (S.INFO_REQUESTED, RCV, "decline"): S.DECLINED,
    (S.INFO_REQUESTED, REF, "cancel"): S.CANCELLED,
    (S.INFO_REQUESTED, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.ACCEPTED, RCV, "update"): S.IN_PROGRESS,
    (S.ACCEPTED, RCV, "info_request"): S.ACCEPTED,
    (S.ACCEPTED, REF, "info_response"): S.ACCEPTED,
    (S.ACCEPTED, RCV, "close"): S.CLOSED,
    (S.ACCEPTED, REF, "cancel"): S.CANCELLED,
    (S.ACCEPTED, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.IN_PROGRESS, RCV, "update"): S.IN_PROGRESS,
    (S.IN_PROGRESS, RCV, "info_request"): S.IN_PROGRESS,
    (S.IN_PROGRESS, REF, "info_response"): S.IN_PROGRESS,
    (S.IN_PROGRESS, RCV, "close"): S.CLOSED,
    (S.IN_PROGRESS, REF, "cancel"): S.CANCELLED,
    (S.IN_PROGRESS, REF, "consent_withdrawal"): S.WITHDRAWN,
    # The receiver of a declined, closed, cancelled or expired referral still holds what it
    # was sent: a withdrawal reaches it too.
    (S.DECLINED, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.CLOSED, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.CANCELLED, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.EXPIRED, REF, "consent_withdrawal"): S.WITHDRAWN,
    (S.WITHDRAWN, RCV, "erasure_confirmation"): S.ERASED,
}
del S, R, REF, RCV

#: States in which the referrer waits for the receiver's decision; they expire.
AWAITING = frozenset({State.SENT, State.INFO_REQUESTED})
TERMINAL = frozenset({State.ERASED})
#: States from which a receiver may refer the case onward (it has accepted it).
ONWARD_FROM = frozenset({State.ACCEPTED, State.IN_PROGRESS, State.CLOSED})


#: Messages whose ``seq`` may skip ahead (SPEC.md §12.8): a withdrawal cancels the messages
#: its sender had queued for the thread, and those had already taken sequence numbers that
#: will never arrive. Without this, the withdrawal (or the erasure confirmation answering
#: it) would wait forever behind a gap that cannot close.
MAY_SKIP_SEQUENCE = frozenset({"consent_withdrawal", "erasure_confirmation"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadState:
    """One thread as both sides see it. ``ThreadState()`` is a thread with no message yet.

    ``expired_from`` remembers the waiting state when a local timer expired the thread
    (rule 4); it is ``None`` otherwise.
    """

    state: State = State.NEW
    case_id: str | None = None
    thread_id: str | None = None
    consent_id: str | None = None
    respond_by: int | None = None
    next_seq_referrer: int = 1
    next_seq_receiver: int = 1
    expired_from: State | None = None

    def apply(self, message: Mapping[str, Any], *, role: Role) -> ThreadState:
        """The state after ``message``, sent by the side playing ``role``.

        ``message`` has passed its schema (the policy ran first). Raises
        ``invalid_transition`` or ``sequence_gap``; never changes ``self``.
        """
        role = Role(role)
        message_type, seq, sent_at = message["type"], message["seq"], message["sent_at"]
        if self.state is not State.NEW and (message["case_id"] != self.case_id
                                            or message["thread_id"] != self.thread_id):
            raise CasewayError(ErrorCode.INVALID_TRANSITION, "message belongs to another "
                               "thread or case")
        # Rule 3: sequence before table.
        expected = self.next_seq(role)
        if seq < expected:
            raise CasewayError(ErrorCode.INVALID_TRANSITION, f"{role.value} seq already "
                               f"used (expected {expected}): duplicate or reordered")
        if seq > expected and message_type not in MAY_SKIP_SEQUENCE:
            raise CasewayError(ErrorCode.SEQUENCE_GAP, f"{role.value} seq skips ahead "
                               f"(expected {expected})")
        # Rule 4: judge expiry by the message's own time.
        current = self.state
        if current is State.EXPIRED and self.expired_from is not None \
                and self.respond_by is not None and sent_at < self.respond_by:
            current = self.expired_from
        elif current in AWAITING and self.respond_by is not None \
                and sent_at >= self.respond_by:
            current = State.EXPIRED
        next_state = TRANSITIONS.get((current, role, message_type))
        if next_state is None:
            raise CasewayError(ErrorCode.INVALID_TRANSITION, f"{message_type} from "
                               f"{role.value} not allowed in state {current.value}")
        # Rule 6
        if message_type in ("consent_withdrawal", "erasure_confirmation") \
                and message["consent_id"] != self.consent_id:
            raise CasewayError(ErrorCode.INVALID_TRANSITION, f"{message_type} names another "
                               "consent than the thread's")
        changes: dict[str, Any] = {"state": next_state, "expired_from": None}
        if self.state is State.NEW:
            changes.update(case_id=message["case_id"], thread_id=message["thread_id"],
                           consent_id=message["consent"]["consent_id"],
                           respond_by=message["respond_by"])
        if role is Role.REFERRER:
            changes["next_seq_referrer"] = seq + 1
        else:
            changes["next_seq_receiver"] = seq + 1
        return replace(self, **changes)

    def next_seq(self, role: Role) -> int:
        """The sequence number expected next from ``role`` (and the one it must use)."""
        return self.next_seq_referrer if Role(role) is Role.REFERRER else \
            self.next_seq_receiver

    def expire(self, now: int) -> ThreadState:
        """The local view at ``now``: a waiting thread past ``respond_by`` is ``expired``."""
        if self.state in AWAITING and self.respond_by is not None and now >= self.respond_by:
            return replace(self, state=State.EXPIRED, expired_from=self.state)
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "case_id": self.case_id,
            "thread_id": self.thread_id,
            "consent_id": self.consent_id,
            "respond_by": self.respond_by,
            "next_seq": {"referrer": self.next_seq_referrer,
                         "receiver": self.next_seq_receiver},
            "expired_from": None if self.expired_from is None else self.expired_from.value,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ThreadState:
        expired_from = obj.get("expired_from")
        return cls(state=State(obj["state"]), case_id=obj["case_id"],
                   thread_id=obj["thread_id"], consent_id=obj["consent_id"],
                   respond_by=obj["respond_by"],
                   next_seq_referrer=obj["next_seq"]["referrer"],
                   next_seq_receiver=obj["next_seq"]["receiver"],
                   expired_from=None if expired_from is None else State(expired_from))


def check_onward(previous: ThreadState, *, consent_onward_allowed: bool) -> None:
    """An onward referral continues a thread this node *received* and took on.

    The consent rule (C9) is enforced again by the policy on the message itself.
    """
    if previous.state not in ONWARD_FROM:
        raise CasewayError(ErrorCode.INVALID_TRANSITION, "onward_referral not allowed from "
                           f"state {previous.state.value}")
    if not consent_onward_allowed:
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "consent does not allow onward "
                           "referral", section="onward_referral")


def withdrawal_targets(threads: Iterable[tuple[ThreadState, Role]], consent_id: str
                       ) -> list[str]:
    """Thread ids in which this node must send ``consent_withdrawal`` for ``consent_id``:
    every thread it opened as referrer under that consent (onward ones included) that has
    not been withdrawn already. ``threads`` pairs each thread with this node's role in it.
    """
    return sorted(
        str(thread.thread_id) for thread, role in threads
        if Role(role) is Role.REFERRER and thread.consent_id == consent_id
        and thread.state not in (State.NEW, State.WITHDRAWN, State.ERASED)
    )


def tombstone(thread: ThreadState, *, message_ids: Iterable[str], first_received_at: int,
              withdrawn_at: int, erased_at: int) -> dict[str, Any]:
    """What a recipient keeps after erasure: ids and dates, never content."""
    return {
        "case_id": thread.case_id,
        "thread_id": thread.thread_id,
        "consent_id": thread.consent_id,
        "message_ids": sorted(message_ids),
        "first_received_at": first_received_at,
        "withdrawn_at": withdrawn_at,
        "erased_at": erased_at,
    }
