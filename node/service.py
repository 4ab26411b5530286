"""The node's domain operations: receive an envelope, send a message, read and erase a case.

Rules of this module:

1. HTTP handlers stay thin: they check transport limits and call one method here. Every
   protocol decision (open order, duplicate handling, lifecycle, what is stored together)
   is made here, so the same behaviour is reachable from tests, benchmarks and the CLI.
2. :meth:`NodeService.receive` never raises. Every outcome, including an unexpected
   failure, is a :class:`ReceiveResult` carrying a *signed* receipt and its HTTP status.
3. Nothing from a rejected envelope is stored: the storage transaction is the last step and
   runs only when every check passed. A rejection is counted in metrics and logged with
   its code and identifiers; it leaves no row (SPEC.md "Federation endpoint").
4. A duplicate (same sender, id and bytes) gets the original receipt bytes back; the same
   id with other bytes is ``replayed``, decided only after the new bytes' signature has
   verified, in the documented open order.
5. Time and randomness come from the injected :class:`~caseway.node.clock.Clock` and
   :class:`~caseway.node.clock.RandomSource`, never from the system directly.
6. The consent store is written in the transaction of the message that changes it (a
   referral records its thread's consent, a withdrawal the withdrawn id, an erasure
   confirmation its tombstone), and the in-memory :class:`~caseway.node.threads.
   NodeConsents` the policy reads is updated right after that transaction commits. That
   view is bounded: a thread's consent it does not hold is read from storage and pinned
   for the operation (:meth:`NodeService._consent_loads`) before the synchronous policy
   runs again; the policy is never run on a guess.
7. An accepted ``consent_withdrawal`` hands over to ``on_withdrawal`` (the withdrawal
   cascade of :mod:`caseway.node.cases`) after its receipt is durable; a failure there is
   logged by type and resumed at the next start, and never changes the receipt.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from caseway.keys.identity import Identity
from caseway.protocol import crypto
from caseway.protocol.consent import ConsentRecord
from caseway.protocol.encoding import dump_json, parse_json
from caseway.protocol.envelope import (
    MAX_PLAINTEXT_BYTES,
    Header,
    KeyResolver,
    MessagePolicy,
    new_message_id,
    open_read_envelope,
    read_envelope,
    seal_envelope,
)
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import sign_receipt

from . import audit
from .clock import Clock, RandomSource
from .metrics import NodeMetrics
from .ratelimit import RateLimiter
from .storage import (
    ConsentEffects,
    InboundWrite,
    OutboundWrite,
    Storage,
    StoredConsent,
    StoredContent,
    Tombstone,
)
from .storage_crypto import NONCE_BYTES, StorageCipher, StorageCipherError, content_row_id
from .threads import ConsentNotLoaded, NodeConsents, ThreadRules, ThreadState, erased_consent

WithdrawalHook = Callable[[ThreadState, Mapping[str, Any], int], Awaitable[None]]

log = structlog.get_logger("caseway.node")

DUPLICATE = "duplicate"
ACCEPTED = "accepted"
#: Retry-After seconds sent with a retryable rejection (SPEC.md "Federation endpoint").
RETRY_AFTER: dict[ErrorCode, int] = {
    ErrorCode.RATE_LIMITED: 1,
    ErrorCode.UNAVAILABLE: 5,
    ErrorCode.INTERNAL_ERROR: 30,
}
DEFAULT_RETRY_AFTER = 60  # unknown_sender, unknown_key, not_yet_valid, sequence_gap, ...


class PeerDirectory(KeyResolver, Protocol):
    """What the node needs to know about other participants. The signed trust directory
    (``caseway.keys.trust``) provides exactly this; tests use a static one."""

    def encryption_key(self, participant: str, at: int) -> tuple[bytes, str]:
        """The participant's current X25519 public key and its key id at time ``at``."""
        ...

    def endpoint(self, participant: str) -> str | None:
        """Base URL of the participant's federation listener; ``None``: information only."""
        ...

    def sectors(self, participant: str) -> Collection[str]: ...


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    status: int
    receipt: bytes
    outcome: str  # "accepted", "duplicate", or the rejection code's value
    code: ErrorCode | None = None
    message_id: str | None = None
    sender: str | None = None

    @property
    def retry_after(self) -> int | None:
        if self.code is None or not self.code.retry:
            return None
        return RETRY_AFTER.get(self.code, DEFAULT_RETRY_AFTER)


@dataclass(frozen=True, slots=True)
class SentMessage:
    outbox_id: int
    message_id: str
    digest: bytes
    thread_id: str
    case_id: str
    expires: int
    seq: int = 0
    kind: str | None = None
    destination: str = ""
    consent_id: str | None = None


@dataclass(frozen=True, slots=True)
class CaseMessage:
    """One decrypted message of a case, as shown to staff (reading it is audited)."""

    direction: str
    peer: str
    message_id: str
    thread_id: str
    at: int
    message: dict[str, Any]


#: Thread consents one operation may load (a message names at most two threads).
_MAX_CONSENT_LOADS = 8


class _KnownReplay:
    """A :class:`ReplayGuard` answering from the lookup already made in this request."""

    def __init__(self, seen: bool) -> None:
        self._seen = seen

    def seen(self, sender: str, message_id: str) -> bool:
        return self._seen


class NodeService:
    def __init__(
        self,
        *,
        identity: Identity,
        peers: PeerDirectory,
        storage: Storage,
        cipher: StorageCipher,
        policy: MessagePolicy,
        threads: ThreadRules,
        clock: Clock,
        random: RandomSource,
        metrics: NodeMetrics | None = None,
        sender_limiter: RateLimiter | None = None,
        envelope_lifetime: int = 7 * 24 * 3600,
        on_enqueued: Callable[[str], None] | None = None,
        consents: NodeConsents | None = None,
    ) -> None:
        self.identity = identity
        self.peers = peers
        self.storage = storage
        self.clock = clock
        self.metrics = metrics or NodeMetrics()
        self._cipher = cipher
        self._policy = policy
        self._threads = threads
        self._random = random
        self._sender_limiter = sender_limiter
        self._lifetime = envelope_lifetime
        self.on_enqueued = on_enqueued
        self.consents = NodeConsents() if consents is None else consents
        self.on_withdrawal: WithdrawalHook | None = None

    @property
    def participant(self) -> str:
        return self.identity.participant

    # ------------------------------------------------------------------ receiving

    def reject(self, code: ErrorCode, *, data: bytes = b"", now: int,
               header: Header | None = None) -> ReceiveResult:
        """A signed rejection receipt for ``data`` (the bytes received; empty if the body
        was refused before it was read). Stores nothing."""
        receipt = sign_receipt(
            signer=self.identity.signing, recipient=self.participant,
            envelope_digest=crypto.digest(data),
            message_id=None if header is None else header.message_id,
            sender=None if header is None else header.sender,
            received_at=now, error=code)
        self.metrics.messages_in.inc(code.value)
        structlog.contextvars.bind_contextvars(outcome=code.value)
        return ReceiveResult(code.http_status, receipt, code.value, code,
                             None if header is None else header.message_id,
                             None if header is None else header.sender)

    async def receive(self, data: bytes, now: int) -> ReceiveResult:
        """Open, check and durably store one envelope; answer with a signed receipt."""
        header: Header | None = None
        try:
            # Steps 1–4, once: the ids serve the duplicate lookup, then the same read is
            # opened. A duplicate is answered before the signature check: equal digests
            # mean the very bytes that already passed every check.
            read = read_envelope(data)
            header = read.header
            sender, mid = header.sender, header.message_id
            structlog.contextvars.bind_contextvars(message_id=mid, sender=sender)
            digest = crypto.digest(data)
            stored = await self.storage.inbound(sender, mid)
            if stored is not None and stored.digest == digest:
                return self._accepted(stored.receipt, header, duplicate=True)
            # Steps 5–11 here (opening releases the signed bytes and the ciphertext as it
            # goes, and only the message is kept); steps 12–13, the policy, just below,
            # because it may need a thread's consent from storage: an await (rule 6).
            message = open_read_envelope(data, read, me=self.identity, keys=self.peers,
                                         replay=_KnownReplay(stored is not None),
                                         now=now).message
            async with self._consent_loads() as load:
                await self._settle(load, lambda: self._policy.check_incoming(
                    message, sender=sender, recipient=self.participant, now=now))
            # Keyed by the *authenticated* sender: a forger naming someone else's
            # participant id cannot spend that participant's budget.
            if self._sender_limiter is not None and not self._sender_limiter.allow(sender):
                raise CasewayError(ErrorCode.RATE_LIMITED)
            ref = self._threads.locate(message, message_id=mid)

            def build(current: ThreadState | None) -> InboundWrite:
                thread = self._threads.apply(current, message, ref=ref, direction="in",
                                             peer=sender, now=now)
                receipt = sign_receipt(signer=self.identity.signing,
                                       recipient=self.participant, envelope_digest=digest,
                                       message_id=mid, sender=sender, received_at=now)
                content = self._seal_content(message, "in", sender, mid, thread.case_id)
                built["thread"] = thread
                return InboundWrite(sender, mid, digest, data, now, receipt, thread, content,
                                    _kind(message), self._consent_effects(message, thread))

            built: dict[str, ThreadState] = {}
            result = await self.storage.record_inbound(
                sender=sender, message_id=mid, digest=digest, thread_id=ref.thread_id,
                build=build)
            if not result.duplicate:
                self._note_consent(message, built["thread"], now)
        except CasewayError as exc:
            return self.reject(exc.code, data=data, now=now, header=header)
        except Exception as exc:
            # Rule 2. The exception text may quote data; log its type only.
            log.error("receive_failed", error_type=type(exc).__name__)
            return self.reject(ErrorCode.INTERNAL_ERROR, data=data, now=now, header=header)
        if not result.duplicate and _kind(message) == "consent_withdrawal" \
                and self.on_withdrawal is not None:
            try:
                await self.on_withdrawal(built["thread"], message, now)
            except Exception as exc:  # rule 7: the receipt stands; resumed at next start
                log.error("withdrawal_cascade_failed", error_type=type(exc).__name__,
                          thread_id=built["thread"].thread_id)
        return self._accepted(result.receipt, header, duplicate=result.duplicate)

    def _accepted(self, receipt: bytes, header: Header, *,
                  duplicate: bool) -> ReceiveResult:
        outcome = DUPLICATE if duplicate else ACCEPTED
        self.metrics.messages_in.inc(outcome)
        structlog.contextvars.bind_contextvars(outcome=outcome)
        return ReceiveResult(200, receipt, outcome, None, header.message_id, header.sender)

    # ------------------------------------------------------------------ sending

    async def send(self, message: Mapping[str, Any], recipient: str, now: int, *,
                   number: bool = False, actor: str | None = None) -> SentMessage:
        """Seal ``message`` for ``recipient`` and queue it durably; returns at once.

        ``number=True``: the node assigns ``seq`` (our next number in the thread, read in
        the storing transaction, so two concurrent sends cannot take the same number).
        ``actor`` (a staff pseudonym) is recorded in the audit entry.

        Refuses (``CasewayError``) before anything is stored: unknown recipient, no
        endpoint, a policy violation at sealing, or a lifecycle refusal.
        """
        if self.peers.endpoint(recipient) is None:
            raise CasewayError(ErrorCode.NOT_FOUND, "recipient has no federation endpoint")
        public_key, _ = self.peers.encryption_key(recipient, now)
        raw_id = self._random.bytes(16)
        mid = new_message_id(raw_id)
        ref = self._threads.locate(message, message_id=mid)
        expires = now + self._lifetime
        sent: dict[str, Any] = {}

        def build(current: ThreadState | None) -> OutboundWrite:
            final = message
            if number:
                final = {**message, "seq": 1 if current is None else current.next_seq_out}
            thread = self._threads.apply(current, final, ref=ref, direction="out",
                                         peer=recipient, now=now)
            sealed = seal_envelope(final, sender=self.identity.sender, recipient=recipient,
                                   recipient_public_key=public_key, message_id=raw_id,
                                   created=now, expires=expires,
                                   ephemeral_secret=self._random.bytes(32),
                                   policy=self._policy)
            content = self._seal_content(final, "out", recipient, mid, thread.case_id)
            disclosure = self._threads.disclosure(final)
            if disclosure is not None and disclosure.consent_id is None:
                # An info_response discloses under the thread's consent.
                disclosure = replace(disclosure, consent_id=thread.consent_id)
            sent.update(digest=sealed.digest, thread=thread, message=final)
            return OutboundWrite(recipient, mid, sealed.digest, sealed.data, now, expires,
                                 thread, content, disclosure, _kind(final),
                                 self._consent_effects(final, thread), actor)

        async with self._consent_loads() as load:
            # The policy runs again when sealing, inside the storage transaction (on the
            # database thread, where nothing can be awaited): load the consents it will
            # read first, from a run on the message as given. Its refusals are left to
            # that real run, so they keep their order with the lifecycle's.
            with contextlib.suppress(CasewayError):
                await self._settle(load, lambda: self._policy.check_outgoing(
                    message, sender=self.participant, recipient=recipient, now=now))
            for _ in range(_MAX_CONSENT_LOADS):
                try:
                    outbox_id = await self.storage.enqueue(thread_id=ref.thread_id,
                                                           build=build)
                    break
                except ConsentNotLoaded as miss:  # rolled back; load it and run again
                    await load(miss.thread_id)
            else:  # pragma: no cover - each load pins one more thread
                raise CasewayError(ErrorCode.INTERNAL_ERROR, "consent lookups did not settle")
        thread: ThreadState = sent["thread"]
        final: Mapping[str, Any] = sent["message"]
        self._note_consent(final, thread, now)
        log.info("message_queued", message_id=mid, recipient=recipient, outbox_id=outbox_id)
        if self.on_enqueued is not None:
            self.on_enqueued(recipient)
        seq = final.get("seq")
        return SentMessage(outbox_id, mid, sent["digest"], thread.thread_id, thread.case_id,
                           expires, seq if type(seq) is int else 0, _kind(final), recipient,
                           thread.consent_id)

    # ------------------------------------------------------------------ consent store

    async def load_consents(self, *, warm: int | None = None) -> None:
        """Fill :attr:`consents` at start (rule 6): every withdrawn id, and the consents of
        the threads recorded last (``warm``, default: the view's capacity). Any other
        thread's consent is read from storage when a check needs it."""
        for consent_id, withdrawn_at in (await self.storage.withdrawn_consents()).items():
            self.consents.withdraw(consent_id, withdrawn_at)
        epoch = self.consents.epoch
        count = self.consents.capacity if warm is None else warm
        for row in reversed(await self.storage.recent_consents(count)):
            self.consents.cache(row.thread_id, self._consent_record(row), epoch=epoch)

    async def consent_for_thread(self, thread_id: str) -> ConsentRecord | None:
        """The consent behind a thread, from memory or from storage (``None``: none)."""
        with contextlib.suppress(ConsentNotLoaded):
            return self.consents.consent_for_thread(thread_id)
        epoch = self.consents.epoch
        row = await self.storage.consent(thread_id)
        record = None if row is None else self._consent_record(row)
        self.consents.cache(thread_id, record, epoch=epoch)
        return record

    def _consent_record(self, row: StoredConsent) -> ConsentRecord | None:
        if row.opening is None:  # erased with the case: only the ids remain
            return erased_consent(row.consent_id)
        message = self._open_content(row.opening)
        # Not a schema-valid consent (envelope-layer tests): nothing to enforce, as in
        # _note_consent.
        with contextlib.suppress(KeyError, TypeError, CasewayError):
            return ConsentRecord.from_json(message["consent"])
        return None

    @contextlib.asynccontextmanager
    async def _consent_loads(self) -> AsyncIterator[Callable[[str], Awaitable[None]]]:
        """Loads for one operation: each thread consent it misses is read from storage and
        pinned in :attr:`consents` until the operation ends (so a bounded cache cannot
        evict it between the load and the synchronous step that reads it)."""
        pinned: list[str] = []

        async def load(thread_id: str) -> None:
            if len(pinned) >= _MAX_CONSENT_LOADS:
                raise CasewayError(ErrorCode.INTERNAL_ERROR, "consent lookups did not settle")
            epoch = self.consents.epoch
            row = await self.storage.consent(thread_id)
            record = None if row is None else self._consent_record(row)
            self.consents.pin(thread_id, record, epoch=epoch)
            pinned.append(thread_id)

        try:
            yield load
        finally:
            for thread_id in pinned:
                self.consents.unpin(thread_id)

    @staticmethod
    async def _settle(load: Callable[[str], Awaitable[None]], step: Callable[[], None]) -> None:
        """Run a synchronous step that reads consents (a policy check); for each consent it
        misses, load it and run the step again. Every load pins one more thread, and the
        loader refuses after a few, so this ends."""
        while True:
            try:
                step()
                return
            except ConsentNotLoaded as miss:
                await load(miss.thread_id)

    def _consent_effects(self, message: Mapping[str, Any],
                         thread: ThreadState) -> ConsentEffects | None:
        kind = _kind(message)
        consent = message.get("consent")
        if kind in ("referral", "onward_referral") and isinstance(consent, Mapping) \
                and isinstance(consent.get("consent_id"), str):
            return ConsentEffects(opening=True, consent_id=consent["consent_id"])
        consent_id = message.get("consent_id")
        if kind == "consent_withdrawal" and isinstance(consent_id, str) \
                and type(message.get("withdrawn_at")) is int:
            return ConsentEffects(withdrawn=(consent_id, message["withdrawn_at"]))
        tombstone = message.get("tombstone")
        if kind == "erasure_confirmation" and isinstance(tombstone, Mapping):
            return ConsentEffects(tombstone=dict(tombstone))
        return None

    def _note_consent(self, message: Mapping[str, Any], thread: ThreadState, now: int) -> None:
        """Rule 6: the in-memory view follows the committed write."""
        effects = self._consent_effects_view(message)
        if effects is None:
            return
        kind, value = effects
        if kind == "record":
            # Not a schema-valid consent (envelope-layer tests): nothing to enforce.
            with contextlib.suppress(KeyError, TypeError, CasewayError):
                self.consents.record_thread(thread.thread_id, ConsentRecord.from_json(value))
        elif kind == "withdrawn":
            self.consents.withdraw(value["consent_id"], value["withdrawn_at"])

    @staticmethod
    def _consent_effects_view(message: Mapping[str, Any]) -> tuple[str, Any] | None:
        kind = _kind(message)
        consent = message.get("consent")
        if kind in ("referral", "onward_referral") and isinstance(consent, Mapping):
            return "record", consent
        if kind == "consent_withdrawal" and isinstance(message.get("consent_id"), str) \
                and type(message.get("withdrawn_at")) is int:
            return "withdrawn", message
        return None

    # ------------------------------------------------------------------ cases

    async def read_case(self, case_id: str, *, actor: str, now: int) -> list[CaseMessage]:
        """Decrypt a case's messages for ``actor``; the read is audited (BRIEF §6)."""
        stored = await self.storage.case_contents(case_id)
        messages = [CaseMessage(row.direction, row.peer, row.message_id, row.thread_id,
                                row.at, self._open_content(row)) for row in stored]
        await self.storage.append_audit(at=now, event=audit.VIEW, actor=actor,
                                        subject=case_id, detail={"messages": len(messages)})
        return messages

    async def erase_case(self, case_id: str, *, actor: str, reason: str,
                         now: int) -> Tombstone:
        """Erase a case's contents, keep a tombstone (consent withdrawal, BRIEF §4)."""
        tombstone = await self.storage.erase_case(case_id, at=now, actor=actor, reason=reason)
        log.info("case_erased", case_id=case_id, contents=tombstone.contents_erased)
        return tombstone

    def _open_content(self, row: StoredContent) -> dict[str, Any]:
        try:
            plain = self._cipher.open(row.blob, row_id=content_row_id(
                row.direction, row.peer, row.message_id, row.case_id))
        except StorageCipherError:
            raise CasewayError(ErrorCode.INTERNAL_ERROR,
                               "stored case content does not open") from None
        value = parse_json(plain, max_bytes=MAX_PLAINTEXT_BYTES)
        if not isinstance(value, dict):
            raise CasewayError(ErrorCode.INTERNAL_ERROR, "stored case content is not a message")
        return value

    def forget_consent(self, thread_id: str, consent_id: str) -> None:
        """After erasure only the consent's ids remain (the record was erased with it)."""
        self.consents.record_erased(thread_id, consent_id)

    def _seal_content(self, message: Mapping[str, Any], direction: str, peer: str,
                      message_id: str, case_id: str) -> bytes:
        return self._cipher.seal(dump_json(dict(message)),
                                 row_id=content_row_id(direction, peer, message_id, case_id),
                                 nonce=self._random.bytes(NONCE_BYTES))


def _kind(message: Mapping[str, Any]) -> str | None:
    kind = message.get("type")
    return kind if isinstance(kind, str) and len(kind) <= 64 else None
