"""Check a receipt vector: re-sign from its fields (byte-for-byte) and verify."""

from __future__ import annotations

from typing import Any

from caseway.keys.identity import PublicKey, StaticKeys
from caseway.node.vectorcheck import VectorMismatch, expect_outcome
from caseway.protocol.crypto import SigningKeyPair
from caseway.protocol.encoding import b64decode
from caseway.protocol.errors import ErrorCode
from caseway.protocol.receipt import sign_receipt, verify_receipt


def check(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    signer = inputs["signer"]
    fields = inputs["fields"]
    receipt = vector["receipt"].encode("utf-8")
    if inputs["operation"] == "sign-and-verify":
        resigned = sign_receipt(
            signer=SigningKeyPair(bytes.fromhex(signer["signing_seed_hex"])),
            recipient=signer["participant"],
            envelope_digest=bytes.fromhex(fields["envelope_digest_hex"]),
            message_id=fields["message_id"], sender=fields["sender"],
            received_at=fields["received_at"],
            error=None if fields["error"] is None else ErrorCode(fields["error"]))
        if resigned != receipt:
            raise VectorMismatch("re-signing from the fields gave different bytes")
    keys = StaticKeys([PublicKey(signer["participant"],
                                 b64decode(signer["signing_public_key"], length=32))])
    result = expect_outcome(vector, lambda: verify_receipt(
        receipt, keys=keys, expected_recipient=inputs["expected_recipient"],
        expected_digest=bytes.fromhex(inputs["expected_envelope_digest_hex"])))
    if result is not None:
        expected = vector["expected"]
        if result.outcome != expected["outcome"] or result.error != expected.get("receipt_error"):
            raise VectorMismatch("receipt outcome differs from the expected outcome")
