"""Message-layer vectors (kind ``message``): full envelopes carrying referral messages.

Every vector lists all its inputs: the sender's signing seed and the recipient's encryption
secret (from ``fixtures.py``), the message id and ephemeral secret, the envelope times, the
receiver's clock (``now``), the directory sectors the policy looks up, the consent state
(thread consents and withdrawn consent ids), and for lifecycle vectors the thread state
before the message and the role of its sender. Intermediate values: the inner plaintext
and the protected header, as UTF-8 text; then the envelope bytes.

A checker must (1) re-seal the message with the inputs and get the same bytes (the
envelope of a negative vector was sealed without the message policy, as a careless sender
would), (2) seal with the message policy and (3) open with it, applying the lifecycle
transition when ``thread`` is given: both must give ``expected`` (``{"result": "ok",
"message": ..., "thread": ...}`` or ``{"error": code, "section": ...}``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import nacl.bindings as sodium

from caseway.protocol.crypto import (
    ENVELOPE_LABEL,
    EncryptionKeyPair,
    SigningKeyPair,
    seal_nonce,
    x25519,
)
from caseway.protocol.encoding import b64decode, b64encode
from caseway.protocol.envelope import EnvelopeLayerOnly, Sender, seal_envelope
from caseway.protocol.errors import CasewayError
from caseway.protocol.lifecycle import Role, ThreadState
from caseway.protocol.policy import ReferralPolicy

import fixtures as fx

HERE = Path(__file__).resolve().parent
SAMPLE: dict[str, Any] = json.loads(
    (HERE.parent / "referrals" / "ph-return-full.json").read_text("utf-8"))

EMBASSY, SHELTER, IMMIGRATION, LEGAL = (
    "ph-embassy-kl", "ph-shelter-manila", "my-immigration-kl", "ph-legal-cebu")
DIRECTORY = {
    EMBASSY: ["embassy_consular", "labour_attache"],
    SHELTER: ["shelter", "social_services"],
    IMMIGRATION: ["immigration_enforcement"],
    LEGAL: ["legal_aid"],
}
CASE, THREAD = SAMPLE["case_id"], SAMPLE["thread_id"]
CONSENT = SAMPLE["consent"]
ONWARD_THREAD = b64encode(bytes.fromhex("7b" * 16))
REF, RCV = Role.REFERRER, Role.RECEIVER


def message(mtype: str, seq: int, *, sent_at: int = fx.CREATED, thread: str = THREAD,
            **fields: Any) -> dict[str, Any]:
    return {"type": mtype, "case_id": CASE, "thread_id": thread, "seq": seq,
            "sent_at": sent_at, **fields}


def referral(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(SAMPLE)
    out.update(changes)
    return out


def with_consent(msg: dict[str, Any], **scope_or_fields: Any) -> dict[str, Any]:
    msg = copy.deepcopy(msg)
    for key, value in scope_or_fields.items():
        if key in ("participants", "sectors"):
            msg["consent"]["scope"]["recipients"][key] = value
        elif key in msg["consent"]["scope"]:
            msg["consent"]["scope"][key] = value
        else:
            msg["consent"][key] = value
    return msg


def consent_with(**scope: Any) -> dict[str, Any]:
    return with_consent({"consent": CONSENT}, **scope)["consent"]


# Thread states on the way through a typical thread.
T_NEW = ThreadState()
T_SENT = T_NEW.apply(SAMPLE, role=REF)
T_INFO = T_SENT.apply(message("info_request", 1, categories=["health"]), role=RCV)
T_ACCEPTED = T_SENT.apply(message("accept", 1), role=RCV)
T_PROGRESS = T_ACCEPTED.apply(message("update", 2, kind="note", note="First session held."),
                              role=RCV)
T_CLOSED = T_PROGRESS.apply(message("close", 3, outcome="services_completed"), role=RCV)
T_WITHDRAWN = T_PROGRESS.apply(message("consent_withdrawal", 2, consent_id=CONSENT["consent_id"],
                                       withdrawn_at=fx.CREATED), role=REF)

TOMBSTONE = {"case_id": CASE, "thread_id": THREAD, "consent_id": CONSENT["consent_id"],
             "message_ids": [b64encode(bytes.fromhex(fx.message_id(n))) for n in (1, 2)],
             "first_received_at": fx.CREATED - 86400, "withdrawn_at": fx.CREATED - 3600,
             "erased_at": fx.CREATED - 600}


def onward(**changes: Any) -> dict[str, Any]:
    out = referral(type="onward_referral", thread_id=ONWARD_THREAD, previous_thread=THREAD,
                   purposes=["legal_assistance"])
    out["sections"] = {k: out["sections"][k] for k in ("identity", "communication",
                                                        "contact_safety", "legal")}
    out["attachments"] = [a for a in out["attachments"] if a["category"] == "legal"]
    out.update(changes)
    return out


class _Sectors:
    def __init__(self, sectors: dict[str, list[str]]):
        self._s = sectors

    def sectors(self, participant: str) -> frozenset[str]:
        return frozenset(self._s[participant])


def build(n: int, name: str, description: str, msg: dict[str, Any], *,
          sender: str = EMBASSY, recipient: str = SHELTER,
          thread: tuple[ThreadState, Role] | None = None,
          threads: dict[str, dict[str, Any]] | None = None, withdrawn: tuple[str, ...] = (),
          created: int = fx.CREATED, now: int = fx.NOW, expected: dict[str, Any] | None = None,
          ) -> dict[str, Any]:
    signing_seed = fx.PARTICIPANTS[sender][0]
    encryption_secret = fx.PARTICIPANTS[recipient][1]
    signing = SigningKeyPair(bytes.fromhex(signing_seed))
    recipient_key = EncryptionKeyPair(bytes.fromhex(encryption_secret))
    sealed = seal_envelope(
        msg, sender=Sender(sender, signing), recipient=recipient,
        recipient_public_key=recipient_key.public_key,
        message_id=bytes.fromhex(fx.message_id(n)), created=created,
        expires=created + 7 * 86400, ephemeral_secret=bytes.fromhex(fx.ephemeral_secret(n)),
        policy=EnvelopeLayerOnly())
    outer = json.loads(sealed.data)
    protected = b64decode(outer["protected"], field="protected")
    plaintext = _plaintext(protected, recipient_key)
    inputs: dict[str, Any] = {
        "sender": sender,
        "recipient": recipient,
        "sender_signing_seed": signing_seed,
        "recipient_encryption_secret": encryption_secret,
        "message_id": fx.message_id(n),
        "ephemeral_secret": fx.ephemeral_secret(n),
        "created": created,
        "expires": created + 7 * 86400,
        "now": now,
        "directory": {p: DIRECTORY[p] for p in (sender, recipient)},
        "consent_state": {"threads": threads or {}, "withdrawn": list(withdrawn)},
        "message": msg,
    }
    if thread is not None:
        inputs["thread"] = {"prior": thread[0].to_json(), "role": thread[1].value}
    if expected is None:
        expected = _outcome(msg, inputs)
    # Added for debugging (issue 7): public keys, and every step of seal and sign.
    inputs.update({
        "sender_signing_public_key": b64encode(signing.public_key),
        "sender_signing_key_id": signing.key_id,
        "recipient_encryption_public_key": b64encode(recipient_key.public_key),
        "recipient_encryption_key_id": recipient_key.key_id,
        "message_id_b64": sealed.header.message_id,
        "policy": "referral",
    })
    ciphertext = sealed.header.ciphertext
    esk = bytes.fromhex(fx.ephemeral_secret(n))
    signature = b64decode(outer["signature"], field="signature")
    return {
        "name": name,
        "kind": "message",
        "description": description,
        "inputs": inputs,
        "intermediate": {
            "plaintext": plaintext, "protected": protected.decode("utf-8"),
            "plaintext_length": len(plaintext.encode("utf-8")),
            "ephemeral_public_key_hex": ciphertext[:32].hex(),
            "nonce_hex": seal_nonce(ciphertext[:32], recipient_key.public_key).hex(),
            "shared_secret_hex": x25519(esk, recipient_key.public_key).hex(),
            "box_key_hex": sodium.crypto_box_beforenm(recipient_key.public_key, esk).hex(),
            "mac_hex": ciphertext[32:48].hex(),
            "ciphertext_length": len(ciphertext),
            "signing_input_hex": (ENVELOPE_LABEL + protected).hex(),
            "signature_hex": signature.hex(),
            "envelope_digest_hex": sealed.digest.hex(),
        },
        "envelope": sealed.data.decode("utf-8"),
        "expected": expected,
        "spec": SPEC_RULES.get(expected.get("error", "ok"), "§12"),
    }


#: The SPEC.md rules that decide a vector's expected result, by result or error code.
SPEC_RULES = {
    "ok": "§12.2 (schema), §12.5 (consent), §12.8 (lifecycle)",
    "schema_invalid": "§5.5 step 12, §12.2, §12.7", "consent_violation": "§12.5 (C4-C9, F1)",
    "consent_expired": "§12.5 rule C3", "consent_withdrawn": "§12.5 rule C2, §12.10",
    "firewall": "§12.6, §12.5 rule C1", "invalid_transition": "§12.8, §12.9",
    "sequence_gap": "§12.8 (sequence numbers)",
}


def _plaintext(protected: bytes, key: EncryptionKeyPair) -> str:
    from caseway.protocol.crypto import sealed_box_open

    header = json.loads(protected)
    return sealed_box_open(b64decode(header["ciphertext"], field="ciphertext"),
                           key).decode("utf-8")


def _outcome(msg: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """What the reference implementation says (the checker recomputes it independently)."""
    from caseway.protocol.consent import ConsentRecord
    from caseway.protocol.policy import InMemoryConsentState

    state = InMemoryConsentState()
    for thread_id, record in inputs["consent_state"]["threads"].items():
        state.record_thread(thread_id, ConsentRecord.from_json(record))
    for consent_id in inputs["consent_state"]["withdrawn"]:
        state.withdraw(consent_id)
    policy = ReferralPolicy(_Sectors(DIRECTORY), state)
    try:
        policy.check_incoming(msg, sender=inputs["sender"], recipient=inputs["recipient"],
                              now=inputs["now"])
        result: dict[str, Any] = {"result": "ok", "message": msg}
        if "thread" in inputs:
            prior = ThreadState.from_json(inputs["thread"]["prior"])
            after = prior.apply(msg, role=Role(inputs["thread"]["role"]))
            result["thread"] = after.to_json()
        return result
    except CasewayError as exc:
        error: dict[str, Any] = {"error": exc.code.value}
        if exc.section is not None:
            error["section"] = exc.section
        return error


INTENDED = {
    **{f"{t}-ok": "ok" for t in ("referral", "accept", "decline", "info-request",
                                 "info-response", "update", "close", "cancel",
                                 "consent-withdrawal", "erasure-confirmation",
                                 "onward-referral")},
    **{name: "schema_invalid" for name in (
        "referral-no-consent", "accept-unknown-field", "decline-unknown-reason",
        "info-request-no-categories", "info-response-empty", "update-appointment-no-time",
        "close-unknown-outcome", "cancel-no-reason", "consent-withdrawal-bad-id",
        "erasure-confirmation-tombstone-mismatch", "onward-referral-no-link",
        "referral-seq-zero")},
    **{name: "consent_violation" for name in (
        "referral-category-outside-scope", "referral-attachment-outside-scope",
        "referral-refused-service", "referral-purpose-outside-scope",
        "referral-recipient-outside-scope", "update-feedback-not-allowed",
        "close-feedback-not-allowed", "info-response-category-outside-scope",
        "onward-referral-not-allowed")},
    "close-outcome-not-shared": "ok",
    "referral-consent-expired": "consent_expired",
    "referral-consent-withdrawn": "consent_withdrawn",
    "referral-firewall-immigration": "firewall",
    "update-after-close": "invalid_transition",
    "accept-sequence-gap": "sequence_gap",
    "update-duplicate-seq": "invalid_transition",
    "accept-after-respond-by": "invalid_transition",
    "cancel-by-receiver": "invalid_transition",
    # Clarified rules (SPEC.md §12.5, §12.7, §12.8).
    "onward-referral-other-consent-firewalled": "consent_violation",
    "info-response-no-consent": "consent_violation",
    "update-no-consent": "consent_violation",
    "accept-other-thread-before-seq": "invalid_transition",
    "accept-after-timer-expired": "ok",
    "referral-consent-expires-before-given": "schema_invalid",
    "consent-withdrawal-skips-seq": "ok",
    "update-skips-seq": "sequence_gap",
}


def generate() -> list[dict[str, Any]]:
    cid = CONSENT["consent_id"]
    consent_threads = {THREAD: CONSENT}
    no_feedback = {THREAD: consent_with(feedback_allowed=False)}
    v: list[dict[str, Any]] = []
    n = 100

    def add(name: str, description: str, msg: dict[str, Any], **kw: Any) -> None:
        # The intended outcome is stated by the name's table below, not taken on trust
        # from the implementation: generation fails if the two disagree.
        nonlocal n
        vector = build(n, f"message-{name}", description, msg, **kw)
        got = vector["expected"].get("error", "ok")
        if got != INTENDED[name]:
            raise AssertionError(f"{name}: intended {INTENDED[name]}, implementation {got}")
        v.append(vector)
        n += 1

    back = {"sender": SHELTER, "recipient": EMBASSY, "threads": consent_threads}

    # --- one valid vector per message type ---------------------------------------------
    add("referral-ok", "full referral, Malaysia to Philippines return corridor, all in scope",
        SAMPLE, thread=(T_NEW, REF))
    add("accept-ok", "receiver accepts the referral", message(
        "accept", 1, receiver_ref="SHM-2026-117", note="Airport pick-up arranged."),
        thread=(T_SENT, RCV), **back)
    add("decline-ok", "receiver declines with a reason code",
        message("decline", 1, reason="no_capacity"), thread=(T_SENT, RCV), **back)
    add("info-request-ok", "receiver asks for health information",
        message("info_request", 1, categories=["health"], note="Medication details?"),
        thread=(T_SENT, RCV), **back)
    add("info-response-ok", "referrer answers with an in-scope section", message(
        "info_response", 2, sections={"health": {"medication": "None at present."}}),
        thread=(T_INFO, REF), threads=consent_threads)
    add("update-ok", "receiver reports a delivered service (feedback allowed)", message(
        "update", 2, kind="service_delivered", service="safe_shelter"),
        thread=(T_ACCEPTED, RCV), **back)
    add("close-ok", "receiver closes with an outcome (feedback allowed)", message(
        "close", 3, outcome="services_completed", services_delivered=["safe_shelter"]),
        thread=(T_PROGRESS, RCV), **back)
    add("cancel-ok", "referrer cancels before a decision",
        message("cancel", 2, reason="survivor_request"), thread=(T_SENT, REF))
    add("consent-withdrawal-ok", "referrer passes on the survivor's withdrawal", message(
        "consent_withdrawal", 2, consent_id=cid, withdrawn_at=fx.CREATED - 3600),
        thread=(T_PROGRESS, REF), threads=consent_threads)
    add("erasure-confirmation-ok", "receiver confirms erasure; the tombstone keeps ids and "
        "dates only", message("erasure_confirmation", 3, consent_id=cid, tombstone=TOMBSTONE),
        thread=(T_WITHDRAWN, RCV), sender=SHELTER, recipient=EMBASSY,
        threads=consent_threads, withdrawn=(cid,))
    add("onward-referral-ok", "shelter refers the case onward to legal aid, same consent",
        onward(seq=1), thread=(T_NEW, REF), sender=SHELTER, recipient=LEGAL,
        threads=consent_threads)

    # --- schema-invalid: at least one per message type -----------------------------------
    bad_referral = referral()
    del bad_referral["consent"]
    add("referral-no-consent", "referral without its consent record", bad_referral)
    add("accept-unknown-field", "accept with a field the schema does not define",
        message("accept", 1, survivor_name="x"), **back)
    add("decline-unknown-reason", "decline reason not in the code list",
        message("decline", 1, reason="busy"), **back)
    add("info-request-no-categories", "info request naming no category",
        message("info_request", 1, categories=[]), **back)
    add("info-response-empty", "info response with neither sections nor attachments",
        message("info_response", 2), threads=consent_threads)
    add("update-appointment-no-time", "appointment update without its time",
        message("update", 2, kind="appointment"), **back)
    add("close-unknown-outcome", "close outcome not in the code list",
        message("close", 3, outcome="done"), **back)
    add("cancel-no-reason", "cancel without a reason", message("cancel", 2))
    add("consent-withdrawal-bad-id", "withdrawal whose consent id is not a 16-byte id",
        message("consent_withdrawal", 2, consent_id="abc", withdrawn_at=fx.CREATED),
        threads=consent_threads)
    add("erasure-confirmation-tombstone-mismatch", "tombstone names another thread",
        message("erasure_confirmation", 3, consent_id=cid,
                tombstone={**TOMBSTONE, "thread_id": ONWARD_THREAD}),
        sender=SHELTER, recipient=EMBASSY, threads=consent_threads)
    no_link = onward(seq=1)
    del no_link["previous_thread"]
    add("onward-referral-no-link", "onward referral without previous_thread", no_link,
        sender=SHELTER, recipient=LEGAL)
    add("referral-seq-zero", "sequence numbers start at 1", referral(seq=0))

    # --- consent and firewall ------------------------------------------------------------
    add("referral-category-outside-scope", "health section sent without consent for it",
        with_consent(SAMPLE, data_categories=[c for c in CONSENT["scope"]["data_categories"]
                                              if c != "health"]))
    add("referral-attachment-outside-scope", "attachment of a category outside the scope",
        with_consent(referral(sections={"needs": SAMPLE["sections"]["needs"]}),
                     data_categories=["needs"]))
    add("referral-refused-service", "requests police/justice, which she refused",
        referral(sections={**SAMPLE["sections"], "needs": {
            **SAMPLE["sections"]["needs"], "services_requested": ["police_justice"]}}))
    add("referral-purpose-outside-scope", "purpose she did not choose",
        referral(purposes=["reporting"]))
    add("referral-recipient-outside-scope", "recipient neither listed nor in a listed sector",
        with_consent(SAMPLE, participants=[], sectors=["health"]))
    expired = with_consent(SAMPLE, given_at=fx.CREATED - 90 * 86400,
                           expires_at=fx.CREATED - 86400)
    add("referral-consent-expired", "consent expired before sending", expired)
    add("referral-consent-withdrawn", "consent already withdrawn", SAMPLE, withdrawn=(cid,))
    add("referral-firewall-immigration", "immigration enforcement never receives case data, "
        "even when the consent names it", with_consent(SAMPLE, participants=[IMMIGRATION]),
        recipient=IMMIGRATION)
    add("update-feedback-not-allowed", "update to the referrer when feedback is not allowed",
        message("update", 2, kind="note", note="Attended."), sender=SHELTER,
        recipient=EMBASSY, threads=no_feedback)
    add("close-feedback-not-allowed", "close with an outcome when feedback is not allowed",
        message("close", 2, outcome="services_completed"), sender=SHELTER,
        recipient=EMBASSY, threads=no_feedback)
    add("close-outcome-not-shared", "close without feedback: only outcome_not_shared",
        message("close", 2, outcome="outcome_not_shared"), sender=SHELTER,
        recipient=EMBASSY, threads=no_feedback, thread=(T_ACCEPTED, RCV))
    add("info-response-category-outside-scope", "info response section outside the "
        "thread's consent", message("info_response", 2, sections={
            "migration_status": {"status": "unknown"}}),
        threads={THREAD: consent_with(data_categories=["health"])})
    add("onward-referral-not-allowed", "consent does not allow onward referral",
        with_consent(onward(seq=1), onward_referral_allowed=False), sender=SHELTER,
        recipient=LEGAL)

    # --- lifecycle -----------------------------------------------------------------------
    add("update-after-close", "no update once the thread is closed", message(
        "update", 4, kind="note", note="Late note."), thread=(T_CLOSED, RCV), **back)
    add("accept-sequence-gap", "receiver's seq 3 when 1 is expected",
        message("accept", 3), thread=(T_SENT, RCV), **back)
    add("update-duplicate-seq", "receiver's seq 1 again after it was used",
        message("update", 1, kind="note", note="Again."), thread=(T_ACCEPTED, RCV), **back)
    late = SAMPLE["respond_by"] + 60
    add("accept-after-respond-by", "an answer sent after respond_by meets an expired thread",
        message("accept", 1, sent_at=late), thread=(T_SENT, RCV), created=late,
        now=late + 60, **back)
    add("cancel-by-receiver", "only the referrer cancels",
        message("cancel", 1, reason="other"), thread=(T_SENT, RCV), **back)

    # --- clarified rules -----------------------------------------------------------------
    other_consent = b64encode(bytes.fromhex("6d" * 16))
    assert other_consent != cid
    add("onward-referral-other-consent-firewalled", "onward referral under another consent "
        "than the previous thread's, to a firewalled recipient: the consent in play is "
        "determined before C1, so consent_violation (consent), not firewall",
        with_consent(onward(seq=1), consent_id=other_consent), sender=SHELTER,
        recipient=IMMIGRATION, threads=consent_threads)
    add("info-response-no-consent", "info response in a thread with no recorded consent",
        message("info_response", 2, sections={"health": {"medication": "None at present."}}))
    add("update-no-consent", "feedback in a thread with no recorded consent",
        message("update", 2, kind="note", note="Attended."), sender=SHELTER,
        recipient=EMBASSY)
    add("accept-other-thread-before-seq", "another thread id with a seq that would also be a "
        "gap: the ids are checked first (invalid_transition, not sequence_gap)",
        message("accept", 3, thread=ONWARD_THREAD), thread=(T_SENT, RCV), **back)
    add("accept-after-timer-expired", "the receiver's timer expired the thread "
        "(expired_from: sent), but the accept was sent before respond_by: it meets the "
        "thread as sent; expired_from is reset to null",
        message("accept", 1), thread=(T_SENT.expire(SAMPLE["respond_by"]), RCV), **back)
    add("referral-consent-expires-before-given", "consent record whose expires_at equals "
        "given_at: schema_invalid (section consent), before any consent rule",
        with_consent(SAMPLE, expires_at=CONSENT["given_at"]))
    # A withdrawal cancels the referrer's queued messages, whose numbers never arrive
    # (SPEC.md §12.8): only a withdrawal or erasure confirmation may skip ahead.
    add("consent-withdrawal-skips-seq", "the referrer's seq 2 and 3 were cancelled by the "
        "withdrawal; the withdrawal itself carries seq 4 and is accepted", message(
            "consent_withdrawal", 4, consent_id=cid, withdrawn_at=fx.CREATED - 3600),
        thread=(T_PROGRESS, REF), threads=consent_threads)
    add("update-skips-seq", "any other message that skips ahead is still a gap",
        message("update", 4, kind="note", note="Attended."), thread=(T_PROGRESS, RCV), **back)
    return v
