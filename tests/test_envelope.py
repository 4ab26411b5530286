"""Envelope v1: seal/open round trip, the open order, and tamper resistance."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseway.protocol.encoding import b64decode
from caseway.protocol.envelope import (
    MAX_CLOCK_SKEW,
    MAX_PLAINTEXT_BYTES,
    EnvelopeLayerOnly,
    parse_header,
    seal_envelope,
)
from caseway.protocol.errors import CasewayError, ErrorCode

from envelope_helpers import NOW, Pair, SeenIds

PAIR = Pair.fixed()
VALID = PAIR.seal({"type": "note", "text": "CANARY-envelope"}).data


def error_of(data: bytes, **kw: object) -> ErrorCode:
    with pytest.raises(CasewayError) as info:
        PAIR.open(data, **kw)  # type: ignore[arg-type]
    assert "CANARY" not in str(info.value)
    return info.value.code


def test_round_trip_returns_message_and_digest() -> None:
    pair = Pair.fixed()
    sealed = pair.seal({"type": "note", "n": 7})
    opened = pair.open(sealed.data)
    assert opened.message == {"type": "note", "n": 7}
    assert opened.digest == sealed.digest
    assert opened.header.sender == "ph-embassy-kl"


def test_cleartext_header_holds_no_message_content() -> None:
    outer = json.loads(VALID)
    header = json.loads(b64decode(outer["protected"]))
    assert set(header) == {"v", "id", "created", "expires", "sender", "sender_key", "recipient",
                           "recipient_key", "ciphertext"}
    assert b"CANARY" not in VALID and b"note" not in b64decode(header["ciphertext"])


def test_sender_cannot_decrypt_its_own_envelope() -> None:
    # The sealed box uses an ephemeral key: the sender's own keys do not open it.
    pair = Pair.fixed()
    sealed = pair.seal()
    with pytest.raises(CasewayError) as info:
        from caseway.protocol import crypto

        crypto.sealed_box_open(sealed.header.ciphertext, pair.alice.encryption)
    assert info.value.code is ErrorCode.DECRYPT_FAILED


def test_open_order_signature_before_addressing_and_time() -> None:
    # An expired envelope for another node with a bad signature: the signature is checked
    # first, so an attacker learns nothing about our addressing or clock from forgeries.
    outer = json.loads(VALID)
    outer["signature"] = outer["signature"][:10] + ("A" if outer["signature"][10] != "A" else "B") \
        + outer["signature"][11:]
    forged = json.dumps(outer, separators=(",", ":")).encode()
    assert error_of(forged, now=NOW + 10**6) is ErrorCode.BAD_SIGNATURE


def test_replay_checked_after_time_window_and_before_decrypt() -> None:
    pair = Pair.fixed()
    sealed = pair.seal()
    seen = SeenIds({(sealed.header.sender, sealed.header.message_id)})
    with pytest.raises(CasewayError) as info:
        pair.open(sealed.data, seen=seen)
    assert info.value.code is ErrorCode.REPLAYED
    with pytest.raises(CasewayError) as info:
        pair.open(sealed.data, seen=seen, now=NOW + 3600)
    assert info.value.code is ErrorCode.EXPIRED


def test_clock_skew_boundary() -> None:
    pair = Pair.fixed()
    sealed = pair.seal(created=NOW, expires=NOW + 3600)
    assert pair.open(sealed.data, now=NOW - MAX_CLOCK_SKEW).message
    with pytest.raises(CasewayError) as info:
        pair.open(sealed.data, now=NOW - MAX_CLOCK_SKEW - 1)
    assert info.value.code is ErrorCode.NOT_YET_VALID


@pytest.mark.parametrize(("created", "expires"), [(NOW, NOW), (NOW, NOW - 1),
                                                  (NOW, NOW + 31 * 24 * 3600)])
def test_seal_refuses_bad_lifetimes(created: int, expires: int) -> None:
    with pytest.raises(CasewayError) as info:
        PAIR.seal(created=created, expires=expires)
    assert info.value.code is ErrorCode.HEADER_INVALID


def test_seal_refuses_oversized_message() -> None:
    with pytest.raises(CasewayError) as info:
        PAIR.seal({"type": "note", "text": "x" * MAX_PLAINTEXT_BYTES})
    assert info.value.code is ErrorCode.TOO_LARGE


def test_seal_refuses_bad_participant_ids() -> None:
    with pytest.raises(CasewayError) as info:
        seal_envelope({}, sender=PAIR.alice.sender, recipient="Not An Id",
                      recipient_public_key=PAIR.bob.encryption.public_key,
                      message_id=bytes(16), created=NOW, expires=NOW + 60,
                      ephemeral_secret=bytes([5]) * 32, policy=EnvelopeLayerOnly())
    assert info.value.code is ErrorCode.HEADER_INVALID


def test_policy_refusal_on_seal_and_open_propagates() -> None:
    class RefuseAll(EnvelopeLayerOnly):
        def check_outgoing(self, message, *, sender, recipient, now):  # type: ignore[no-untyped-def]
            raise CasewayError(ErrorCode.CONSENT_VIOLATION, section="health")

        check_incoming = check_outgoing

    with pytest.raises(CasewayError) as info:
        seal_envelope({}, sender=PAIR.alice.sender, recipient=PAIR.bob.participant,
                      recipient_public_key=PAIR.bob.encryption.public_key,
                      message_id=bytes(16), created=NOW, expires=NOW + 60,
                      ephemeral_secret=bytes([5]) * 32, policy=RefuseAll())
    assert info.value.code is ErrorCode.CONSENT_VIOLATION and info.value.section == "health"


def test_every_single_byte_flip_is_rejected_exhaustively() -> None:
    for index in range(len(VALID)):
        mutated = bytearray(VALID)
        mutated[index] ^= 0x01
        error_of(bytes(mutated))


@settings(max_examples=400)
@given(st.data())
def test_any_byte_change_is_rejected_with_a_typed_error(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(VALID) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != VALID[index]))
    mutated = VALID[:index] + bytes([value]) + VALID[index + 1:]
    error_of(mutated)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_escape_as_untyped_errors(data: bytes) -> None:
    with pytest.raises(CasewayError):
        PAIR.open(data)


def test_header_parser_agrees_with_schema_on_vectors() -> None:
    from pathlib import Path

    from caseway import schemas

    validator = schemas.validator("protected-header")
    root = Path(__file__).parent.parent / "examples" / "vectors" / "envelope"
    checked = 0
    for path in sorted(root.glob("*.json")):
        vector = json.loads(path.read_text())
        protected_b64 = vector.get("intermediate", {}).get("protected_b64")
        if protected_b64 is None:
            continue
        raw = b64decode(protected_b64)
        try:
            header = json.loads(raw)
        except ValueError:
            continue
        try:
            parse_header(raw)
            code_ok = True
        except CasewayError as exc:
            if exc.code is ErrorCode.MALFORMED:
                continue  # strict-JSON failures sit below the schema level
            code_ok = False
        assert validator.is_valid(header) == code_ok, path.name
        checked += 1
    assert checked >= 25


def test_protected_header_that_is_not_an_object_is_header_invalid() -> None:
    from caseway.protocol.encoding import b64encode, dump_json
    from caseway.protocol.envelope import parse_header

    for protected in (b"[1]", b'"x"', b"1"):
        with pytest.raises(CasewayError) as info:
            parse_header(protected)
        assert info.value.code is ErrorCode.HEADER_INVALID
    with pytest.raises(CasewayError) as info:
        parse_header(dump_json({"id": b64encode(bytes(16))}))
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
