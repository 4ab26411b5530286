"""Receipts: signed proof of delivery bound to the exact envelope bytes."""

from __future__ import annotations

import pytest

from caseway.protocol import crypto
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import sign_receipt, verify_receipt

from envelope_helpers import NOW, Pair


def _receipt(pair: Pair, digest: bytes, error: ErrorCode | None = None) -> bytes:
    return sign_receipt(signer=pair.bob.signing, recipient=pair.bob.participant,
                        envelope_digest=digest, message_id="A" * 21 + "A",
                        sender=pair.alice.participant, received_at=NOW, error=error)


def test_accepted_and_rejected_receipts_verify() -> None:
    pair = Pair.fixed()
    sealed = pair.seal()
    ok = verify_receipt(_receipt(pair, sealed.digest), keys=pair.keys,
                        expected_recipient=pair.bob.participant, expected_digest=sealed.digest)
    assert ok.accepted and ok.error is None
    no = verify_receipt(_receipt(pair, sealed.digest, ErrorCode.EXPIRED), keys=pair.keys,
                        expected_recipient=pair.bob.participant, expected_digest=sealed.digest)
    assert not no.accepted and no.error == "expired"


def test_receipt_for_other_bytes_is_no_receipt() -> None:
    pair = Pair.fixed()
    receipt = _receipt(pair, crypto.digest(b"something else"))
    with pytest.raises(CasewayError) as info:
        verify_receipt(receipt, keys=pair.keys, expected_recipient=pair.bob.participant,
                       expected_digest=pair.seal().digest)
    assert info.value.code is ErrorCode.NOT_FOR_ME


def test_receipt_signed_by_sender_itself_is_refused() -> None:
    # A sender (or relay) cannot forge the recipient's receipt with its own key.
    pair = Pair.fixed()
    sealed = pair.seal()
    forged = sign_receipt(signer=pair.alice.signing, recipient=pair.bob.participant,
                          envelope_digest=sealed.digest, message_id=None, sender=None,
                          received_at=NOW)
    with pytest.raises(CasewayError) as info:
        verify_receipt(forged, keys=pair.keys, expected_recipient=pair.bob.participant,
                       expected_digest=sealed.digest)
    assert info.value.code is ErrorCode.UNKNOWN_KEY


def test_every_byte_flip_of_a_receipt_is_rejected() -> None:
    pair = Pair.fixed()
    sealed = pair.seal()
    receipt = _receipt(pair, sealed.digest)
    for index in range(len(receipt)):
        mutated = bytearray(receipt)
        mutated[index] ^= 0x01
        with pytest.raises(CasewayError):
            verify_receipt(bytes(mutated), keys=pair.keys,
                           expected_recipient=pair.bob.participant,
                           expected_digest=sealed.digest)
