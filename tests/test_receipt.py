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


def _signed_receipt(pair: Pair, protected: bytes) -> bytes:
    from caseway.protocol.encoding import b64encode, dump_json

    signature = pair.bob.signing.sign(crypto.RECEIPT_LABEL, protected)
    return dump_json({"protected": b64encode(protected), "signature": b64encode(signature)})


def _fields(pair: Pair, digest: bytes, **changes: object) -> dict[str, object]:
    from caseway.protocol.encoding import b64encode

    fields: dict[str, object] = {
        "v": 1, "message_id": None, "envelope_digest": b64encode(digest),
        "sender": None, "recipient": pair.bob.participant,
        "recipient_key": pair.bob.signing.key_id, "received_at": NOW,
        "outcome": "rejected", "error": "malformed"}
    fields.update(changes)
    return fields


def test_receipt_field_order_matches_spec() -> None:
    import json

    pair = Pair.fixed()
    digest = crypto.digest(b"x")

    def code(protected: bytes) -> ErrorCode:
        with pytest.raises(CasewayError) as info:
            verify_receipt(_signed_receipt(pair, protected), keys=pair.keys,
                           expected_recipient=pair.bob.participant, expected_digest=digest)
        return info.value.code

    assert code(b"[1]") is ErrorCode.HEADER_INVALID
    no_v = {k: v for k, v in _fields(pair, digest).items() if k != "v"}
    assert code(json.dumps(no_v).encode()) is ErrorCode.UNSUPPORTED_VERSION
    assert code(json.dumps(_fields(pair, digest, v=2, extra=1)).encode()) \
        is ErrorCode.UNSUPPORTED_VERSION
    # A bad participant id is reported before a bad base64url field.
    assert code(json.dumps(_fields(pair, digest, sender="Bad Id", message_id="!")).encode()) \
        is ErrorCode.HEADER_INVALID


def test_unknown_but_well_formed_error_code_is_accepted() -> None:
    # SPEC §8: codes may be added within v1; an older sender must still count the receipt.
    import json

    pair = Pair.fixed()
    digest = crypto.digest(b"x")
    protected = json.dumps(_fields(pair, digest, error="some_future_code")).encode()
    receipt = verify_receipt(_signed_receipt(pair, protected), keys=pair.keys,
                             expected_recipient=pair.bob.participant, expected_digest=digest)
    assert receipt.error == "some_future_code" and not receipt.accepted
