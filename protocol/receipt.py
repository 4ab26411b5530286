"""Delivery receipts: the recipient's signed statement of what it did with an envelope.

Rules of this module (SPEC.md "Receipts"):

1. A receipt binds the message id, the BLAKE2b-256 digest of the *exact envelope bytes*
   received, the envelope's sender, the recipient (the signer), the time, and the outcome:
   ``accepted``, or ``rejected`` with an error code.
2. It is signed like an envelope (``protected`` bytes + Ed25519 signature) under its own
   label, so an envelope signature can never pass as a receipt or the other way round.
3. A sender counts a delivery only when the receipt verifies against the recipient's key and
   names the digest of the envelope the sender actually sent. A receipt that does not
   verify is no receipt.
4. A rejection of an envelope too broken to read its header carries ``message_id`` and
   ``sender`` as null; the digest still identifies the bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import crypto
from .encoding import b64decode, b64encode, dump_json, dump_signed, parse_json
from .envelope import VERSION, KeyResolver, _check_participant, parse_signed
from .errors import CasewayError, ErrorCode

MAX_RECEIPT_BYTES = 4096
RECEIPT_FIELDS = ("v", "message_id", "envelope_digest", "sender", "recipient", "recipient_key",
                  "received_at", "outcome", "error")
ACCEPTED = "accepted"
REJECTED = "rejected"
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: str | None
    envelope_digest: bytes
    sender: str | None
    recipient: str
    recipient_key: str
    received_at: int
    outcome: str
    error: str | None
    data: bytes  # the exact receipt bytes, kept as proof

    @property
    def accepted(self) -> bool:
        return self.outcome == ACCEPTED


def sign_receipt(
    *,
    signer: crypto.SigningKeyPair,
    recipient: str,
    envelope_digest: bytes,
    message_id: str | None,
    sender: str | None,
    received_at: int,
    error: ErrorCode | None = None,
) -> bytes:
    """Sign a receipt; ``error=None`` means accepted. Returns the receipt bytes."""
    if len(envelope_digest) != crypto.DIGEST_BYTES:
        raise CasewayError(ErrorCode.BAD_ENCODING, "envelope digest must be 32 bytes")
    protected = dump_json({
        "v": VERSION,
        "message_id": message_id,
        "envelope_digest": b64encode(envelope_digest),
        "sender": sender,
        "recipient": recipient,
        "recipient_key": signer.key_id,
        "received_at": received_at,
        "outcome": ACCEPTED if error is None else REJECTED,
        "error": None if error is None else error.value,
    })
    signature = signer.sign(crypto.RECEIPT_LABEL, protected)
    return dump_signed(protected, signature)


def parse_receipt_unverified(data: bytes) -> tuple[Receipt, bytes, bytes]:
    """Parse and schema-check a receipt without verifying it (for looking up its key)."""
    protected, signature = parse_signed(data, max_bytes=MAX_RECEIPT_BYTES)
    obj = parse_json(protected, max_bytes=MAX_RECEIPT_BYTES, max_depth=1)
    # Order as SPEC.md §6.4 step 1: shape, version, fields, field values, then encodings.
    if not isinstance(obj, dict):
        raise CasewayError(ErrorCode.HEADER_INVALID, "receipt must be an object")
    if obj.get("v") != VERSION or type(obj.get("v")) is not int:
        raise CasewayError(ErrorCode.UNSUPPORTED_VERSION, "only version 1 is supported")
    if set(obj) != set(RECEIPT_FIELDS):
        raise CasewayError(ErrorCode.HEADER_INVALID, "receipt fields wrong")
    if obj["sender"] is not None:
        _check_participant(obj["sender"], "sender")
    _check_participant(obj["recipient"], "recipient")
    if type(obj["received_at"]) is not int or obj["received_at"] < 0:
        raise CasewayError(ErrorCode.HEADER_INVALID, "received_at must be an integer")
    outcome, error = obj["outcome"], obj["error"]
    # Unknown but well-formed codes are accepted: codes may be added within v1 (SPEC §8).
    if not ((outcome == ACCEPTED and error is None)
            or (outcome == REJECTED and type(error) is str
                and _ERROR_CODE.fullmatch(error) is not None)):
        raise CasewayError(ErrorCode.HEADER_INVALID, "outcome/error inconsistent")
    if obj["message_id"] is not None:
        b64decode(obj["message_id"], length=16, field="message_id")
    digest = b64decode(obj["envelope_digest"], length=crypto.DIGEST_BYTES,
                       field="envelope_digest")
    b64decode(obj["recipient_key"], length=crypto.KEY_ID_BYTES, field="recipient_key")
    receipt = Receipt(obj["message_id"], digest, obj["sender"], obj["recipient"],
                      obj["recipient_key"], obj["received_at"], outcome, error, data)
    return receipt, protected, signature


def verify_receipt(
    data: bytes,
    *,
    keys: KeyResolver,
    expected_recipient: str,
    expected_digest: bytes,
) -> Receipt:
    """Verify a receipt for an envelope we sent (digest = BLAKE2b-256 of our bytes).

    Raises ``bad_signature`` if it does not verify, ``not_for_me`` if it names another
    recipient or another envelope.
    """
    receipt, protected, signature = parse_receipt_unverified(data)
    if receipt.recipient != expected_recipient:
        raise CasewayError(ErrorCode.NOT_FOR_ME, "receipt signed by another participant")
    if receipt.envelope_digest != expected_digest:
        raise CasewayError(ErrorCode.NOT_FOR_ME, "receipt names another envelope")
    public_key = keys.signing_key(receipt.recipient, receipt.recipient_key, receipt.received_at)
    crypto.verify(public_key, crypto.RECEIPT_LABEL, protected, signature)
    return receipt
