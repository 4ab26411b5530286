"""The message policy a node plugs into ``seal_envelope`` and ``open_envelope``.

Rules of this module (SPEC.md "Message policy"):

1. The same checks run on both sides: ``check_outgoing`` when sealing (``now`` is the
   envelope's ``created``) and ``check_incoming`` when opening (``now`` is the receiver's
   clock). A sender that skips them is caught by the receiver.
2. Order: the message schema for its ``type``; then, by kind of message:

   - data messages (``referral``, ``onward_referral``, ``info_response``):
     :func:`~caseway.protocol.consent.check_consent` against the message's own consent
     record, or the thread's for an info response (none known: ``consent_violation``);
   - feedback (``update``, ``close``): :func:`~caseway.protocol.consent.check_feedback`
     against the thread's consent;
   - control messages (``accept``, ``decline``, ``info_request``, ``cancel``,
     ``consent_withdrawal``, ``erasure_confirmation``) carry no case data: schema only.
     A withdrawal and its erasure confirmation must always get through.

3. An onward referral carries the consent of the thread it continues; when this node knows
   that thread, the two consent ids must match (a new consent needs a new referral).
4. Context comes through two small interfaces: :class:`ParticipantSectors` (the trust
   directory) and :class:`ConsentState` (the node's consent and withdrawal records). The
   policy itself holds no state and does no I/O.

The lifecycle (:mod:`caseway.protocol.lifecycle`) is applied by the node after opening,
because it needs the thread state, which the node persists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .consent import ConsentRecord, check_consent, check_feedback
from .errors import CasewayError, ErrorCode
from .messages import CONSENT_CARRYING, DATA_MESSAGES, FEEDBACK_MESSAGES, validate_message


class ParticipantSectors(Protocol):
    """The sectors a participant is listed under in the trust directory.

    Raises ``unknown_sender`` for a participant the directory does not know.
    """

    def sectors(self, participant: str) -> frozenset[str]: ...


class ConsentState(Protocol):
    """What the node knows about consent: withdrawals, and the consent behind each thread."""

    def is_withdrawn(self, consent_id: str) -> bool: ...

    def consent_for_thread(self, thread_id: str) -> ConsentRecord | None: ...


class _Withdrawn:
    """Adapts ``ConsentState.is_withdrawn`` to the ``Container`` that consent.py takes."""

    __slots__ = ("_state",)

    def __init__(self, state: ConsentState):
        self._state = state

    def __contains__(self, consent_id: object) -> bool:
        return isinstance(consent_id, str) and self._state.is_withdrawn(consent_id)


class ReferralPolicy:
    """:class:`~caseway.protocol.envelope.MessagePolicy` for referral messages."""

    __slots__ = ("_consents", "_participants")

    def __init__(self, participants: ParticipantSectors, consents: ConsentState):
        self._participants = participants
        self._consents = consents

    def check_outgoing(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None:
        self.check(message, recipient=recipient, now=now)

    def check_incoming(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None:
        self.check(message, recipient=recipient, now=now)

    def check(self, message: Mapping[str, Any], *, recipient: str, now: int) -> None:
        message_type = validate_message(message)
        if message_type in DATA_MESSAGES:
            consent = self._consent_of(message)
            check_consent(message, consent=consent, recipient=recipient,
                          recipient_sectors=self._participants.sectors(recipient), now=now,
                          withdrawn=_Withdrawn(self._consents))
        elif message_type in FEEDBACK_MESSAGES:
            consent = self._thread_consent(message["thread_id"])
            check_feedback(message, consent=consent, now=now,
                           withdrawn=_Withdrawn(self._consents))

    def _consent_of(self, message: Mapping[str, Any]) -> ConsentRecord:
        if message["type"] not in CONSENT_CARRYING:
            return self._thread_consent(message["thread_id"])
        consent = ConsentRecord.from_json(message["consent"])
        if message["type"] == "onward_referral":
            earlier = self._consents.consent_for_thread(message["previous_thread"])
            if earlier is not None and earlier.consent_id != consent.consent_id:
                raise CasewayError(ErrorCode.CONSENT_VIOLATION, "onward referral must carry "
                                   "the consent of the previous thread", section="consent")
        return consent

    def _thread_consent(self, thread_id: str) -> ConsentRecord:
        consent = self._consents.consent_for_thread(thread_id)
        if consent is None:
            raise CasewayError(ErrorCode.CONSENT_VIOLATION, "no consent record known for "
                               "this thread", section="consent")
        return consent


class StaticSectors:
    """In-memory :class:`ParticipantSectors` (tests, vectors); a node uses its trust store."""

    def __init__(self, sectors: Mapping[str, Iterable[str]]):
        self._sectors = {p: frozenset(s) for p, s in sectors.items()}

    def sectors(self, participant: str) -> frozenset[str]:
        try:
            return self._sectors[participant]
        except KeyError:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "participant not in the directory") \
                from None


class InMemoryConsentState:
    """In-memory :class:`ConsentState` (tests, vectors); a node keeps this in its store."""

    def __init__(self) -> None:
        self._threads: dict[str, ConsentRecord] = {}
        self._withdrawn: set[str] = set()

    def record_thread(self, thread_id: str, consent: ConsentRecord) -> None:
        self._threads[thread_id] = consent

    def withdraw(self, consent_id: str) -> None:
        self._withdrawn.add(consent_id)

    def is_withdrawn(self, consent_id: str) -> bool:
        return consent_id in self._withdrawn

    def consent_for_thread(self, thread_id: str) -> ConsentRecord | None:
        return self._threads.get(thread_id)
