"""Receipt vectors (kind "receipt"): sign, verify, and the ways a receipt is not a receipt."""

from __future__ import annotations

from typing import Any

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json
from caseway.protocol.errors import ErrorCode
from caseway.protocol.receipt import sign_receipt

from fixtures import NOW, PARTICIPANTS, message_id

RECIPIENT, SENDER = "ph-shelter-manila", "ph-embassy-kl"


def _vector(name: str, description: str, fields: dict[str, Any], receipt: bytes,
            expected: dict[str, Any], *, expected_digest: bytes, operation: str = "verify",
            expected_recipient: str = RECIPIENT) -> dict[str, Any]:
    signer = crypto.SigningKeyPair(bytes.fromhex(PARTICIPANTS[RECIPIENT][0]))
    outer_protected = b64decode(_outer(receipt)["protected"]) if receipt.startswith(b"{") else b""
    return {
        "name": name, "kind": "receipt", "description": description,
        "inputs": {"operation": operation,
                   "signer": {"participant": RECIPIENT,
                              "signing_seed_hex": PARTICIPANTS[RECIPIENT][0],
                              "signing_public_key": b64encode(signer.public_key),
                              "signing_key_id": signer.key_id},
                   "fields": fields,
                   "expected_recipient": expected_recipient,
                   "expected_envelope_digest_hex": expected_digest.hex()},
        "intermediate": {"protected": outer_protected.decode(),
                         "signing_input_hex": (crypto.RECEIPT_LABEL + outer_protected).hex(),
                         # Added for debugging (issue 7).
                         **_more_intermediate(receipt, fields)},
        "receipt": receipt.decode(),
        "expected": expected,
        "spec": SPEC_STEPS.get(name, "§6.4"),
    } | _digest_sources(fields, expected_digest)


#: The SPEC.md step that decides each vector's expected result.
SPEC_STEPS = {
    "accepted": "§6.1, §6.4", "rejected": "§6.1, §6.4", "rejected-unreadable": "§6.1, §6.4",
    "tampered-outcome": "§6.4 step 4", "wrong-envelope-digest": "§6.4 step 2",
    "wrong-signer": "§6.4 step 2", "envelope-label-signature": "§4 (labels), §6.4 step 4",
}
#: The envelope bytes behind the digests these vectors use (ASCII text, so text = bytes).
DIGEST_SOURCES = {crypto.digest(text.encode()).hex(): text
                  for text in ("example envelope bytes", "other bytes")}


def _more_intermediate(receipt: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    outer = _outer(receipt)
    signature = b64decode(outer["signature"])
    return {"protected_b64": outer["protected"], "signature_b64": outer["signature"],
            "signature_hex": signature.hex(),
            "envelope_digest_b64": b64encode(bytes.fromhex(fields["envelope_digest_hex"])),
            "receipt_length": len(receipt)}


def _digest_sources(fields: dict[str, Any], expected_digest: bytes) -> dict[str, Any]:
    """Where each digest comes from: ``envelope_digest = BLAKE2b-256(text as bytes)``."""
    return {"digest_sources": {
        "inputs.fields.envelope_digest_hex": DIGEST_SOURCES.get(fields["envelope_digest_hex"]),
        "inputs.expected_envelope_digest_hex": DIGEST_SOURCES.get(expected_digest.hex())}}


def _outer(receipt: bytes) -> dict[str, Any]:
    import json

    outer: dict[str, Any] = json.loads(receipt)
    return outer


def generate() -> list[dict[str, Any]]:
    signer = crypto.SigningKeyPair(bytes.fromhex(PARTICIPANTS[RECIPIENT][0]))
    digest = crypto.digest(b"example envelope bytes")
    mid = b64encode(bytes.fromhex(message_id(1)))
    accepted_fields = {"message_id": mid, "envelope_digest_hex": digest.hex(), "sender": SENDER,
                       "received_at": NOW, "error": None}
    accepted = sign_receipt(signer=signer, recipient=RECIPIENT, envelope_digest=digest,
                            message_id=mid, sender=SENDER, received_at=NOW)
    rejected_fields = {**accepted_fields, "error": "bad_signature"}
    rejected = sign_receipt(signer=signer, recipient=RECIPIENT, envelope_digest=digest,
                            message_id=mid, sender=SENDER, received_at=NOW,
                            error=ErrorCode.BAD_SIGNATURE)
    unreadable_fields = {"message_id": None, "envelope_digest_hex": digest.hex(), "sender": None,
                         "received_at": NOW, "error": "malformed"}
    unreadable = sign_receipt(signer=signer, recipient=RECIPIENT, envelope_digest=digest,
                              message_id=None, sender=None, received_at=NOW,
                              error=ErrorCode.MALFORMED)
    outer = _outer(accepted)
    protected = b64decode(outer["protected"])
    tampered = dump_json({"protected": b64encode(protected.replace(b'"accepted"', b'"rejected"')
                                                  .replace(b'"error":null',
                                                           b'"error":"expired"')),
                          "signature": outer["signature"]})
    envelope_label_sig = dump_json({
        "protected": outer["protected"],
        "signature": b64encode(signer.sign(crypto.ENVELOPE_LABEL, protected))})
    return [
        _vector("accepted", "An accepted receipt: re-signing reproduces it; it verifies.",
                accepted_fields, accepted, {"result": "ok", "outcome": "accepted"},
                expected_digest=digest, operation="sign-and-verify"),
        _vector("rejected", "A rejection receipt naming the error code.", rejected_fields,
                rejected, {"result": "ok", "outcome": "rejected", "receipt_error": "bad_signature"},
                expected_digest=digest, operation="sign-and-verify"),
        _vector("rejected-unreadable",
                "Rejection of bytes too broken to read: message_id and sender are null.",
                unreadable_fields, unreadable,
                {"result": "ok", "outcome": "rejected", "receipt_error": "malformed"},
                expected_digest=digest, operation="sign-and-verify"),
        _vector("tampered-outcome", "'accepted' changed to 'rejected' after signing.",
                accepted_fields, tampered, {"error": "bad_signature"}, expected_digest=digest),
        _vector("wrong-envelope-digest", "A valid receipt, but for other envelope bytes.",
                accepted_fields, accepted, {"error": "not_for_me"},
                expected_digest=crypto.digest(b"other bytes")),
        _vector("wrong-signer", "A valid receipt from another participant than the addressee.",
                accepted_fields, accepted, {"error": "not_for_me"}, expected_digest=digest,
                expected_recipient="ph-legal-cebu"),
        _vector("envelope-label-signature",
                "Signed under the envelope label instead of the receipt label.",
                accepted_fields, envelope_label_sig, {"error": "bad_signature"},
                expected_digest=digest),
    ]
