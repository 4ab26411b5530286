"""Casework: what the agency's staff do with cases, on top of :class:`NodeService`.

Rules of this module (SPEC.md "Local API", "Withdrawal cascade"):

1. Staff give content; the node gives ids and numbers. A referral gets a fresh
   ``case_id`` and ``thread_id`` (and ``consent_id`` if the consent has none); every
   message gets ``sent_at`` = now and its ``seq`` inside the storing transaction. Consent,
   firewall and lifecycle are enforced by :meth:`NodeService.send` (seal with the policy):
   a refusal is a typed error and stores nothing.
2. Every operation takes the staff member's name (``actor``): it is the audit actor.
   Reading case content (the timeline) is audited as a ``view``; listings show metadata
   only (ids, states, times, delivery status) and are not content reads.
3. Withdrawal cascade. When she withdraws consent (recorded here by staff, or learnt from
   the referrer's ``consent_withdrawal``) the node, in this order: records the withdrawal
   (persisted and in the policy's view, so nothing under it can be sealed or opened from
   now on); cancels every queued outbox row of the consent's cases except withdrawals and
   erasure confirmations (they must not deliver data after withdrawal); sends
   ``consent_withdrawal`` in every thread it opened under that consent whose referral left
   the node (its disclosure chain, onward threads included); erases its own copy of the
   case contents, keeping tombstones; and, in each thread in which it *received* the
   withdrawal, answers with a signed ``erasure_confirmation`` carrying its tombstone.
4. The cascade is idempotent and resumable: a receiving node whose thread is still
   ``withdrawn`` (confirmation not yet queued) runs it again at start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from caseway.keys.directory import Directory
from caseway.keys.search import Query, as_json, search
from caseway.protocol import lifecycle
from caseway.protocol.encoding import b64encode, parse_json
from caseway.protocol.envelope import parse_signed
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import MAX_RECEIPT_BYTES

from .clock import Clock, RandomSource
from .service import NodeService, SentMessage
from .storage import OutboxItem, Storage
from .threads import ThreadState

log = structlog.get_logger("caseway.cases")

DEFAULT_RESPOND_WITHIN = 14 * 24 * 3600
#: Queued rows that still go out after a withdrawal (rule 3): they carry no case data.
KEEP_AFTER_WITHDRAWAL = ("consent_withdrawal", "erasure_confirmation")
OPENING = ("referral", "onward_referral")
WITHDRAWN_REASON = "consent_withdrawn"
INITIATOR, RESPONDER = "initiator", "responder"
#: Which side of a thread may send each staff action (clear 409 before sealing).
ACTION_ROLE = {
    "accept": RESPONDER, "decline": RESPONDER, "info_request": RESPONDER,
    "update": RESPONDER, "close": RESPONDER, "info_response": INITIATOR, "cancel": INITIATOR,
}

DirectorySource = Callable[[], Directory | None]
DirectoryRefresh = Callable[[int], Directory]


@dataclass(frozen=True, slots=True)
class Fields:
    """A request body's expected members (checked at the API edge)."""

    required: frozenset[str]
    optional: frozenset[str]


REQUESTS: dict[str, Fields] = {
    "referral": Fields(frozenset({"to", "purposes", "consent", "survivor_ref", "sections"}),
                       frozenset({"respond_by", "attachments"})),
    "onward_referral": Fields(frozenset({"to", "purposes", "survivor_ref", "sections"}),
                              frozenset({"respond_by", "attachments"})),
    "accept": Fields(frozenset(), frozenset({"receiver_ref", "note"})),
    "decline": Fields(frozenset({"reason"}), frozenset({"note"})),
    "info_request": Fields(frozenset({"categories"}), frozenset({"note"})),
    "info_response": Fields(frozenset(), frozenset({"sections", "attachments"})),
    "update": Fields(frozenset({"kind"}), frozenset({"at", "service", "note"})),
    "close": Fields(frozenset({"outcome"}), frozenset({"services_delivered", "note"})),
    "cancel": Fields(frozenset({"reason"}), frozenset({"note"})),
    "withdrawal": Fields(frozenset(), frozenset({"withdrawn_at"})),
}


def check_fields(body: Any, fields: Fields) -> dict[str, Any]:
    """The body as a dict with exactly the expected members (``schema_invalid`` naming the
    member otherwise; never quoting a value)."""
    if not isinstance(body, dict):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "/: request body must be a JSON object")
    for name in sorted(fields.required - set(body)):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, f"/{name}: required", section=name)
    if set(body) - fields.required - fields.optional:
        # The unknown name itself is request data: never echoed.
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "/: unknown member; expected "
                           + ", ".join(sorted(fields.required | fields.optional)),
                           section="request")
    return body


def typeable_id(random16: bytes) -> str:
    """A case, thread or consent id: 16 random bytes in base64url, never starting with "-".

    Staff type these ids on command lines, where "-…" would be read as an option. Instead
    of drawing again (which would shift the random stream), a first character "-" (the
    first byte's top six bits = 62) becomes "_" (63).
    """
    if random16[0] >> 2 == 62:
        random16 = bytes([random16[0] | 0x04]) + random16[1:]
    return b64encode(random16)


class Casework:
    """The domain operations behind the local API (module rules)."""

    def __init__(self, *, service: NodeService, storage: Storage, clock: Clock,
                 random: RandomSource, directory: DirectorySource | None = None,
                 refresh: DirectoryRefresh | None = None) -> None:
        self.service = service
        self.storage = storage
        self.clock = clock
        self._random = random
        self._directory = directory
        self._refresh = refresh

    def _new_id(self) -> str:
        return typeable_id(self._random.bytes(16))

    def _check_recipient(self, participant: Any) -> str:
        if not isinstance(participant, str) or not 0 < len(participant) <= 128:
            raise CasewayError(ErrorCode.SCHEMA_INVALID, "/to: must be a participant id",
                               section="to")
        try:
            endpoint = self.service.peers.endpoint(participant)
        except CasewayError:
            endpoint = None
        if endpoint is None:
            raise CasewayError(ErrorCode.NOT_FOUND, "recipient is not a node in the "
                               "directory", section="to")
        return participant

    # ------------------------------------------------------------------ referrals

    async def create_referral(self, body: Any, *, actor: str, now: int) -> SentMessage:
        request = check_fields(body, REQUESTS["referral"])
        to = self._check_recipient(request["to"])
        consent = request["consent"]
        if not isinstance(consent, dict):
            raise CasewayError(ErrorCode.SCHEMA_INVALID, "/consent: must be an object",
                               section="consent")
        consent = {"consent_id": self._new_id(), "recorded_by": actor, **consent}
        message = self._opening("referral", request, consent, case_id=self._new_id(),
                                now=now)
        return await self.service.send(message, to, now, number=True, actor=actor)

    async def refer_onward(self, thread_id: str, body: Any, *, actor: str,
                           now: int) -> SentMessage:
        request = check_fields(body, REQUESTS["onward_referral"])
        previous = await self._thread(thread_id)
        if previous.role != RESPONDER:
            raise CasewayError(ErrorCode.INVALID_TRANSITION, "only a thread this node "
                               "received can be referred onward")
        consent = await self.service.consent_for_thread(thread_id)
        if consent is None or previous.machine is None:
            raise CasewayError(ErrorCode.CONSENT_VIOLATION, "no consent record known for "
                               "this thread", section="consent")
        lifecycle.check_onward(lifecycle.ThreadState.from_json(previous.machine),
                               consent_onward_allowed=consent.scope.onward_referral_allowed)
        to = self._check_recipient(request["to"])
        message = self._opening("onward_referral", request, consent.to_json(),
                                case_id=previous.case_id, now=now)
        message["previous_thread"] = thread_id
        return await self.service.send(message, to, now, number=True, actor=actor)

    def _opening(self, kind: str, request: Mapping[str, Any], consent: Mapping[str, Any], *,
                 case_id: str, now: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": kind, "case_id": case_id, "thread_id": self._new_id(), "seq": 1,
            "sent_at": now, "respond_by": request.get("respond_by",
                                                      now + DEFAULT_RESPOND_WITHIN),
            "purposes": request["purposes"], "consent": dict(consent),
            "survivor_ref": request["survivor_ref"], "sections": request["sections"],
        }
        if "attachments" in request:
            message["attachments"] = request["attachments"]
        return message

    # ------------------------------------------------------------------ thread actions

    async def act(self, thread_id: str, kind: str, body: Any, *, actor: str,
                  now: int) -> SentMessage:
        """accept, decline, info_request, info_response, update, close, cancel."""
        request = check_fields(body, REQUESTS[kind])
        thread = await self._thread(thread_id)
        if ACTION_ROLE[kind] != thread.role:
            side = "receiver" if ACTION_ROLE[kind] == RESPONDER else "referrer"
            raise CasewayError(ErrorCode.INVALID_TRANSITION, f"{kind} is sent by the "
                               f"{side} of a thread")
        message = {"type": kind, "case_id": thread.case_id, "thread_id": thread.thread_id,
                   "seq": 1, "sent_at": now, **request}
        return await self.service.send(message, thread.peer, now, number=True, actor=actor)

    async def _thread(self, thread_id: str) -> ThreadState:
        thread = await self.storage.thread(thread_id) if len(thread_id) <= 128 else None
        if thread is None:
            raise CasewayError(ErrorCode.NOT_FOUND, "no such thread")
        return thread

    # ------------------------------------------------------------------ withdrawal

    async def withdraw_consent(self, consent_id: str, body: Any, *, actor: str,
                               now: int) -> dict[str, Any]:
        """Staff record her withdrawal (rule 3); returns the erasure status."""
        request = check_fields(body, REQUESTS["withdrawal"])
        withdrawn_at = request.get("withdrawn_at", now)
        if type(withdrawn_at) is not int or not 0 <= withdrawn_at <= now:
            raise CasewayError(ErrorCode.SCHEMA_INVALID, "/withdrawn_at: must be Unix "
                               "seconds, not in the future", section="withdrawn_at")
        threads = await self.storage.threads(consent_id=consent_id)
        if not threads:
            raise CasewayError(ErrorCode.NOT_FOUND, "no thread under that consent")
        if self.service.consents.is_withdrawn(consent_id):
            raise CasewayError(ErrorCode.CONFLICT, "consent already withdrawn")
        await self.storage.record_withdrawal(consent_id, withdrawn_at=withdrawn_at, at=now,
                                             actor=actor)
        self.service.consents.withdraw(consent_id, withdrawn_at)
        await self._cascade(consent_id, withdrawn_at=withdrawn_at, actor=actor, now=now)
        return await self.erasure_status(consent_id)

    async def withdrawal_received(self, thread: ThreadState, message: Mapping[str, Any],
                                  now: int) -> None:
        """``NodeService.on_withdrawal``: the referrer told us; cascade and confirm."""
        await self._cascade(str(message["consent_id"]), withdrawn_at=int(
            message["withdrawn_at"]), actor=thread.peer, now=now)

    async def resume_withdrawals(self, now: int) -> None:
        """Rule 4: finish cascades cut short by a crash."""
        pending = await self.storage.threads(role=RESPONDER, state="withdrawn")
        for consent_id in sorted({t.consent_id for t in pending if t.consent_id}):
            withdrawn_at = self.service.consents.withdrawn_at(consent_id) or now
            await self._cascade(consent_id, withdrawn_at=withdrawn_at, actor="node",
                                now=now)

    async def _cascade(self, consent_id: str, *, withdrawn_at: int, actor: str,
                       now: int) -> None:
        threads = await self.storage.threads(consent_id=consent_id)
        cases = sorted({t.case_id for t in threads})
        cancelled_openings: set[str] = set()
        for case_id in cases:
            for item in await self.storage.cancel_queued(
                    case_id, keep_kinds=KEEP_AFTER_WITHDRAWAL, at=now,
                    reason=WITHDRAWN_REASON):
                if item.kind is None or item.kind in OPENING:
                    cancelled_openings.add(item.thread_id)
        # Tell everyone we disclosed to (our own threads as referrer), onward ones included.
        for thread in threads:
            if (thread.role != INITIATOR or thread.thread_id in cancelled_openings
                    or thread.state in ("new", "withdrawn", "erased")
                    or await self._never_sent(thread)):
                continue
            await self.service.send(
                {"type": "consent_withdrawal", "case_id": thread.case_id,
                 "thread_id": thread.thread_id, "seq": 1, "sent_at": now,
                 "consent_id": consent_id, "withdrawn_at": withdrawn_at},
                thread.peer, now, number=True, actor=actor)
        # Erase our own copy; the consent's ids stay so the withdrawal keeps applying.
        for case_id in cases:
            if (await self.storage.case_contents(case_id)
                    or await self.storage.tombstone(case_id) is None):
                await self.service.erase_case(case_id, actor=actor, reason=WITHDRAWN_REASON,
                                              now=now)
        for thread in threads:
            self.service.forget_consent(thread.thread_id, consent_id)
        # Confirm in every thread in which we received the withdrawal.
        for thread in threads:
            if thread.role == RESPONDER and thread.state == "withdrawn":
                await self._confirm(thread, consent_id, now=now)

    async def _never_sent(self, thread: ThreadState) -> bool:
        """True when the thread's referral was dead-lettered without a receipt: the
        recipient never received data, so there is nobody to tell."""
        for item in await self.storage.case_outbox(thread.case_id):
            if item.thread_id == thread.thread_id and item.kind in OPENING:
                return item.state == "dead" and item.receipt is None \
                    and item.last_error in (WITHDRAWN_REASON, "expired")
        return False

    async def _confirm(self, thread: ThreadState, consent_id: str, *, now: int) -> None:
        received = await self.storage.inbound_items(thread_id=thread.thread_id)
        machine = (lifecycle.ThreadState() if thread.machine is None
                   else lifecycle.ThreadState.from_json(thread.machine))
        withdrawal_at = max((i.received_at for i in received
                             if i.kind == "consent_withdrawal"), default=now)
        tombstone = lifecycle.tombstone(
            machine, message_ids=[i.message_id for i in received],
            first_received_at=min((i.received_at for i in received), default=now),
            withdrawn_at=withdrawal_at, erased_at=now)
        await self.service.send(
            {"type": "erasure_confirmation", "case_id": thread.case_id,
             "thread_id": thread.thread_id, "seq": 1, "sent_at": now,
             "consent_id": consent_id, "tombstone": tombstone},
            thread.peer, now, number=True, actor="node")

    async def erasure_status(self, consent_id: str) -> dict[str, Any]:
        threads = await self.storage.threads(consent_id=consent_id)
        withdrawn_at = self.service.consents.withdrawn_at(consent_id)
        if not threads and withdrawn_at is None:
            raise CasewayError(ErrorCode.NOT_FOUND, "no thread under that consent")
        confirmations = {c.thread_id: c
                         for c in await self.storage.erasure_confirmations(consent_id)}
        recipients, upstream, local = [], [], []
        for case_id in sorted({t.case_id for t in threads}):
            outbox = await self.storage.case_outbox(case_id)
            tombstone = await self.storage.tombstone(case_id)
            if tombstone is not None:
                local.append({"case_id": case_id, "erased_at": tombstone.erased_at,
                              "reason": tombstone.reason,
                              "contents_erased": tombstone.contents_erased,
                              "envelopes_erased": tombstone.envelopes_erased})
            for thread in (t for t in threads if t.case_id == case_id):
                rows = [i for i in outbox if i.thread_id == thread.thread_id]
                if thread.role == INITIATOR:
                    recipients.append(_recipient_status(
                        thread, rows, confirmations.get(thread.thread_id)))
                else:
                    sent = next((i for i in rows if i.kind == "erasure_confirmation"), None)
                    upstream.append({
                        "thread_id": thread.thread_id, "participant": thread.peer,
                        "state": thread.state,
                        "confirmation_message_id": None if sent is None else sent.message_id,
                        "confirmation_delivery": None if sent is None else sent.state})
        return {"consent_id": consent_id, "withdrawn": withdrawn_at is not None,
                "withdrawn_at": withdrawn_at, "recipients": recipients, "local": local,
                "upstream": upstream}

    # ------------------------------------------------------------------ listings

    async def list_cases(self, *, limit: int, now: int) -> list[dict[str, Any]]:
        cases = []
        for case_id in await self.storage.case_ids(limit=limit):
            threads = await self.storage.threads(case_id=case_id)
            cases.append({"case_id": case_id,
                          "threads": [thread_json(t, now) for t in threads],
                          "erased": await self.storage.tombstone(case_id) is not None})
        return cases

    async def inbox(self, *, state: str | None, limit: int, now: int) -> list[dict[str, Any]]:
        threads = await self.storage.threads(role=RESPONDER, limit=limit)
        shown = [thread_json(t, now) for t in threads]
        return [t for t in shown if state is None or t["state"] == state]

    async def outbox(self, *, state: str | None, destination: str | None,
                     limit: int) -> list[dict[str, Any]]:
        items = await self.storage.outbox_items(state=state, destination=destination,
                                                limit=limit)
        return [outbox_json(item) for item in items]

    async def timeline(self, case_id: str, *, actor: str, now: int) -> dict[str, Any]:
        """Every message of a case in and out, with states, delivery and receipts. Reading
        it is audited as a ``view`` (rule 2)."""
        threads = await self.storage.threads(case_id=case_id) if len(case_id) <= 128 else []
        if not threads:
            raise CasewayError(ErrorCode.NOT_FOUND, "no such case")
        stored = await self.service.read_case(case_id, actor=actor, now=now)
        contents = {(m.direction, m.message_id): m.message for m in stored}
        # Within one second, the order in which this node stored the messages is the causal
        # order (a request is stored before the answer to it); read_case returns that order.
        stored_order = {(m.direction, m.message_id): index for index, m in enumerate(stored)}
        entries: list[dict[str, Any]] = []
        for item in await self.storage.case_outbox(case_id):
            entries.append({
                "direction": "out", "peer": item.destination, "message_id": item.message_id,
                "thread_id": item.thread_id, "at": item.created, "type": item.kind,
                "message": contents.get(("out", item.message_id)),
                "delivery": {"state": item.state, "attempts": item.attempts,
                             "next_attempt_at": (item.next_attempt_at
                                                 if item.state == "queued" else None),
                             "last_error": item.last_error, "finished_at": item.finished_at,
                             "receipt": receipt_fields(item.receipt)},
                "receipt": None})
        for inbound in await self.storage.inbound_items(case_id=case_id):
            entries.append({
                "direction": "in", "peer": inbound.sender, "message_id": inbound.message_id,
                "thread_id": inbound.thread_id, "at": inbound.received_at,
                "type": inbound.kind, "message": contents.get(("in", inbound.message_id)),
                "delivery": None, "receipt": receipt_fields(inbound.receipt)})
        entries.sort(key=lambda e: (e["at"],
                                    stored_order.get((e["direction"], e["message_id"]),
                                                     len(stored_order)),
                                    e["direction"] == "in"))
        tombstone = await self.storage.tombstone(case_id)
        return {"case_id": case_id, "threads": [thread_json(t, now) for t in threads],
                "messages": entries,
                "tombstone": None if tombstone is None else {
                    "erased_at": tombstone.erased_at, "reason": tombstone.reason,
                    "contents_erased": tombstone.contents_erased,
                    "envelopes_erased": tombstone.envelopes_erased}}

    # ------------------------------------------------------------------ directory

    def search_directory(self, query: Query) -> list[dict[str, Any]]:
        directory = None if self._directory is None else self._directory()
        if directory is None:
            raise CasewayError(ErrorCode.UNAVAILABLE, "no trusted directory loaded")
        return as_json(search(directory.participants, query))

    def refresh_directory(self, now: int) -> dict[str, int]:
        if self._refresh is None:
            raise CasewayError(ErrorCode.UNAVAILABLE, "this node has no directory file")
        directory = self._refresh(now)
        return {"serial": directory.serial, "issued": directory.issued,
                "expires": directory.expires, "participants": len(directory.participants)}


# --------------------------------------------------------------------------- views


def thread_json(thread: ThreadState, now: int) -> dict[str, Any]:
    state = thread.state
    if thread.machine is not None and state in ("sent", "info_requested"):
        # The local expiry timer is a view (SPEC.md §12.9).
        state = lifecycle.ThreadState.from_json(thread.machine).expire(now).state.value
    return {"thread_id": thread.thread_id, "case_id": thread.case_id,
            "role": "referrer" if thread.role == INITIATOR else "receiver",
            "peer": thread.peer, "state": state, "consent_id": thread.consent_id,
            "updated": thread.updated, "previous_thread": thread.previous_thread}


def outbox_json(item: OutboxItem) -> dict[str, Any]:
    return {"id": item.id, "destination": item.destination, "message_id": item.message_id,
            "case_id": item.case_id, "thread_id": item.thread_id, "type": item.kind,
            "created": item.created, "expires": item.expires, "state": item.state,
            "attempts": item.attempts, "next_attempt_at": item.next_attempt_at,
            "last_error": item.last_error, "finished_at": item.finished_at}


def receipt_fields(receipt: bytes | None) -> dict[str, Any] | None:
    """The protected fields of a stored receipt (verified when it was stored)."""
    if receipt is None:
        return None
    try:
        protected, _ = parse_signed(receipt, max_bytes=MAX_RECEIPT_BYTES)
        fields = parse_json(protected, max_bytes=MAX_RECEIPT_BYTES)
    except CasewayError:
        return None
    return fields if isinstance(fields, dict) else None


def _recipient_status(thread: ThreadState, rows: Iterable[OutboxItem],
                      confirmation: Any) -> dict[str, Any]:
    rows = list(rows)
    withdrawal = next((i for i in rows if i.kind == "consent_withdrawal"), None)
    opening = next((i for i in rows if i.kind in OPENING), None)
    if confirmation is not None:
        status = "confirmed"
    elif withdrawal is None:
        never = opening is not None and opening.state == "dead" and opening.receipt is None
        status = "not_sent" if never else "pending"
    else:
        status = {"queued": "pending", "delivered": "delivered"}.get(withdrawal.state,
                                                                      "failed")
    return {"thread_id": thread.thread_id, "participant": thread.peer, "status": status,
            "withdrawal_message_id": None if withdrawal is None else withdrawal.message_id,
            "withdrawal_delivery": None if withdrawal is None else withdrawal.state,
            "confirmation_message_id": (None if confirmation is None
                                        else confirmation.message_id),
            "confirmed_at": None if confirmation is None else confirmation.confirmed_at,
            "tombstone": None if confirmation is None else confirmation.tombstone}
