"""Trust store: pinning, successor rotation, serial, expiry grace, key lookups, firewall."""

from __future__ import annotations

from typing import Any

import pytest
from directory_helpers import (
    AUTHORITY,
    EXPIRES,
    ISSUED,
    NOW,
    OTHER_AUTHORITY,
    participants,
    sample_bytes,
    signed,
)

from caseway.keys.trust import DIRECTORY_GRACE_SECONDS, TrustStore, sign_successor
from caseway.protocol.crypto import SigningKeyPair
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.firewall import check_firewall


def _error(action: Any) -> CasewayError:
    with pytest.raises(CasewayError) as info:
        action()
    return info.value


def _store(**kwargs: Any) -> TrustStore:
    return TrustStore([AUTHORITY.public_key], **kwargs)


def test_load_sample_and_lookups() -> None:
    store = _store()
    directory = store.load(sample_bytes(), NOW)
    assert store.directory is directory and store.held_serial == 1
    assert not store.expired_warning
    assert store.sectors("ph-embassy-kl") == {"embassy_consular", "labour_attache"}
    assert store.endpoint("ph-hotline-migrants") is None
    assert (store.endpoint("ph-shelter-manila") or "").startswith("https://")
    assert store.participant("th-oscc-bangkok").country == "TH"


def test_lookups_before_any_directory_are_unknown_sender() -> None:
    assert _error(lambda: _store().participant("ph-embassy-kl")).code is ErrorCode.UNKNOWN_SENDER


def test_unknown_participant_key_and_use() -> None:
    store = _store()
    store.load(sample_bytes(), NOW)
    assert _error(lambda: store.signing_key("xx-nobody", "A" * 22, NOW)).code is (
        ErrorCode.UNKNOWN_SENDER)
    assert _error(lambda: store.signing_key("ph-embassy-kl", "A" * 22, NOW)).code is (
        ErrorCode.UNKNOWN_KEY)
    _, enc_id = store.encryption_key("ph-embassy-kl", NOW)
    # An encryption key id is never accepted as a signing key.
    assert _error(lambda: store.signing_key("ph-embassy-kl", enc_id, NOW)).code is (
        ErrorCode.UNKNOWN_KEY)
    assert _error(lambda: store.encryption_key("ph-hotline-migrants", NOW)).code is (
        ErrorCode.UNKNOWN_KEY)


def test_sample_revoked_key_both_ways() -> None:
    store = _store()
    store.load(sample_bytes(), NOW)
    legal = store.participant("ph-legal-cebu")
    revoked = next(k for k in legal.keys if k.status == "revoked")
    assert revoked.revoked_at is not None
    before = revoked.revoked_at - 1
    assert store.signing_key("ph-legal-cebu", revoked.key_id, before) == revoked.public_key
    for at in (revoked.revoked_at, revoked.revoked_at + 1, NOW):
        assert _error(lambda at=at: store.signing_key("ph-legal-cebu", revoked.key_id,
                                                      at)).code is ErrorCode.REVOKED_KEY


def test_key_validity_window() -> None:
    store = _store()
    store.load(sample_bytes(), NOW)
    key = next(k for k in store.participant("ph-embassy-kl").keys if k.use == "signing")
    assert store.signing_key("ph-embassy-kl", key.key_id, key.valid_from) == key.public_key
    assert _error(lambda: store.signing_key("ph-embassy-kl", key.key_id,
                                            key.valid_from - 1)).code is ErrorCode.UNKNOWN_KEY


def test_encryption_key_prefers_newest_active() -> None:
    entry = participants("ph-shelter-manila")[0]
    old = entry["keys"][1]
    from caseway.protocol.crypto import EncryptionKeyPair
    from caseway.protocol.encoding import b64encode

    newer = EncryptionKeyPair(b"\x77" * 32)
    old_retired = dict(old, status="retired", valid_until=NOW - 10)
    entry["keys"] = [entry["keys"][0], old_retired,
                     {"use": "encryption", "key": b64encode(newer.public_key),
                      "key_id": newer.key_id, "valid_from": NOW - 10, "valid_until": None,
                      "status": "active", "revoked_at": None}]
    store = _store()
    store.load(signed([entry]), NOW)
    assert store.encryption_key("ph-shelter-manila", NOW) == (newer.public_key, newer.key_id)
    # Before the new key's window there is no active key to seal to (the old one is retired).
    assert _error(lambda: store.encryption_key("ph-shelter-manila", NOW - 20)).code is (
        ErrorCode.UNKNOWN_KEY)


# --------------------------------------------------------------------------- firewall


def test_firewall_refuses_the_sample_immigration_office() -> None:
    store = _store()
    store.load(sample_bytes(), NOW)
    assert "immigration_enforcement" in store.sectors("my-immigration-kl")
    # It has a valid key, so only the firewall stands between it and case data.
    store.encryption_key("my-immigration-kl", NOW)
    for purposes in ((), ("reporting",), ("protection", "legal_assistance")):
        error = _error(lambda p=purposes: check_firewall(store.sectors("my-immigration-kl"), p))
        assert error.code is ErrorCode.FIREWALL
        assert _error(lambda p=purposes: store.check_recipient("my-immigration-kl",
                                                               p)).code is ErrorCode.FIREWALL
    store.check_recipient("ph-shelter-manila")  # a shelter is fine


# --------------------------------------------------------------------------- serial


def test_lower_serial_is_stale_and_nothing_changes() -> None:
    store = _store()
    store.load(signed(serial=5), NOW)
    held = store.directory
    assert _error(lambda: store.load(signed(serial=4), NOW)).code is ErrorCode.STALE_DIRECTORY
    assert store.directory is held and store.held_serial == 5


def test_same_serial_same_bytes_is_idempotent_different_bytes_stale() -> None:
    store = _store()
    data = signed(serial=5)
    store.load(data, NOW)
    store.load(data, NOW)
    other = signed(participants("ph-embassy-kl"), serial=5)
    assert _error(lambda: store.load(other, NOW)).code is ErrorCode.STALE_DIRECTORY


def test_held_serial_survives_restart() -> None:
    store = _store(held_serial=7)
    assert _error(lambda: store.load(signed(serial=6), NOW)).code is ErrorCode.STALE_DIRECTORY
    store.load(signed(serial=8), NOW)
    assert store.held_serial == 8


def test_directory_from_the_future_is_not_yet_valid() -> None:
    data = signed(issued=NOW + 3600, expires=NOW + 7200)
    assert _error(lambda: _store().load(data, NOW)).code is ErrorCode.NOT_YET_VALID


# --------------------------------------------------------------------------- expiry


def test_expiry_grace_period() -> None:
    data = signed()
    store = _store()
    store.load(data, EXPIRES - 1)
    assert not store.expired_warning
    store = _store()
    store.load(data, EXPIRES)
    assert store.expired_warning
    store = _store()
    store.load(data, EXPIRES + DIRECTORY_GRACE_SECONDS - 1)
    assert store.expired_warning
    assert _error(lambda: _store().load(data, EXPIRES + DIRECTORY_GRACE_SECONDS)).code is (
        ErrorCode.DIRECTORY_EXPIRED)


def test_check_fresh_rejudges_the_held_directory() -> None:
    store = _store()
    store.load(signed(), NOW)
    assert store.check_fresh(NOW) is False
    assert store.check_fresh(EXPIRES + 1) is True and store.expired_warning
    assert _error(lambda: store.check_fresh(EXPIRES + DIRECTORY_GRACE_SECONDS)).code is (
        ErrorCode.DIRECTORY_EXPIRED)


def test_grace_is_configurable() -> None:
    data = signed()
    assert _error(lambda: _store(grace_seconds=0).load(data, EXPIRES)).code is (
        ErrorCode.DIRECTORY_EXPIRED)


# --------------------------------------------------------------------------- authority rotation


def test_successor_chain_in_the_directory() -> None:
    statement = sign_successor(AUTHORITY, OTHER_AUTHORITY.public_key, issued=ISSUED)
    store = _store()
    store.load(signed(serial=1), NOW)
    store.load(signed(serial=2, authority=OTHER_AUTHORITY, chain=[statement]), NOW)
    assert set(store.pinned_keys) == {OTHER_AUTHORITY.key_id}
    # The predecessor is unpinned: a later directory signed by it is refused.
    assert _error(lambda: store.load(signed(serial=3), NOW)).code is (
        ErrorCode.UNTRUSTED_AUTHORITY)
    # Without the chain the new authority is not trusted by a fresh node.
    assert _error(lambda: _store().load(signed(serial=2, authority=OTHER_AUTHORITY),
                                        NOW)).code is ErrorCode.UNTRUSTED_AUTHORITY


def test_chain_of_two_rotations() -> None:
    third = SigningKeyPair(b"\xa2" * 32)
    chain = [sign_successor(AUTHORITY, OTHER_AUTHORITY.public_key, issued=ISSUED),
             sign_successor(OTHER_AUTHORITY, third.public_key, issued=ISSUED + 1)]
    store = _store()
    store.load(signed(authority=third, chain=chain), NOW)
    assert set(store.pinned_keys) == {third.key_id}


def test_successor_signed_by_an_unpinned_key_does_not_help() -> None:
    intruder = SigningKeyPair(b"\xbb" * 32)
    statement = sign_successor(intruder, intruder.public_key, issued=ISSUED)
    data = signed(authority=intruder, chain=[statement])
    assert _error(lambda: _store().load(data, NOW)).code is ErrorCode.UNTRUSTED_AUTHORITY


def test_forged_successor_statement_is_bad_signature_and_pins_unchanged() -> None:
    intruder = SigningKeyPair(b"\xbb" * 32)
    statement = sign_successor(AUTHORITY, intruder.public_key, issued=ISSUED)
    forged = dict(statement, signature=sign_successor(intruder, intruder.public_key,
                                                      issued=ISSUED)["signature"])
    store = _store()
    assert _error(lambda: store.load(signed(authority=intruder, chain=[forged]), NOW)).code is (
        ErrorCode.BAD_SIGNATURE)
    assert set(store.pinned_keys) == {AUTHORITY.key_id}


def test_pins_change_only_if_the_directory_is_accepted() -> None:
    statement = sign_successor(AUTHORITY, OTHER_AUTHORITY.public_key, issued=ISSUED)
    store = _store(held_serial=9)
    data = signed(serial=2, authority=OTHER_AUTHORITY, chain=[statement])
    assert _error(lambda: store.load(data, NOW)).code is ErrorCode.STALE_DIRECTORY
    assert set(store.pinned_keys) == {AUTHORITY.key_id}


def test_accept_successor_out_of_band() -> None:
    store = _store()
    new_id = store.accept_successor(sign_successor(AUTHORITY, OTHER_AUTHORITY.public_key,
                                                   issued=ISSUED))
    assert new_id == OTHER_AUTHORITY.key_id
    store.load(signed(authority=OTHER_AUTHORITY), NOW)
    stranger = sign_successor(SigningKeyPair(b"\xcc" * 32), AUTHORITY.public_key,
                              issued=ISSUED)
    assert _error(lambda: store.accept_successor(stranger)).code is (
        ErrorCode.UNTRUSTED_AUTHORITY)


def test_overlong_chain_refused_before_signature_work() -> None:
    statement = sign_successor(AUTHORITY, OTHER_AUTHORITY.public_key, issued=ISSUED)
    from caseway.keys.directory import read_signed
    from caseway.protocol import crypto
    from caseway.protocol.encoding import b64encode, dump_json

    data = signed(serial=1)
    document = dict(read_signed(data).document, authority_chain=[statement] * 17)
    protected = dump_json(document)
    forged = dump_json({"protected": b64encode(protected), "signature": b64encode(
        AUTHORITY.sign(crypto.DIRECTORY_LABEL, protected))})
    assert _error(lambda: _store().load(forged, NOW)).code is ErrorCode.HEADER_INVALID


def _statement(fields: Any) -> dict[str, str]:
    from caseway.protocol.encoding import b64encode, dump_json

    return {"protected": b64encode(dump_json(fields)), "signature": b64encode(bytes(64))}


@pytest.mark.parametrize(("fields", "code"), [
    ([1], ErrorCode.HEADER_INVALID),
    ({"predecessor": "x", "successor": "y", "issued": 1}, ErrorCode.UNSUPPORTED_VERSION),
    ({"v": 2, "predecessor": "x"}, ErrorCode.UNSUPPORTED_VERSION),
    ({"v": True, "predecessor": "x", "successor": "y", "issued": 1},
     ErrorCode.UNSUPPORTED_VERSION),
    ({"v": 1, "predecessor": AUTHORITY.key_id, "issued": 1}, ErrorCode.HEADER_INVALID),
    ({"v": 1, "predecessor": AUTHORITY.key_id, "successor": "y", "issued": -1},
     ErrorCode.HEADER_INVALID),
    ({"v": 1, "predecessor": 5, "successor": "AAAA", "issued": 1}, ErrorCode.BAD_ENCODING),
    ({"v": 1, "predecessor": AUTHORITY.key_id, "successor": "AAAA", "issued": 1},
     ErrorCode.BAD_ENCODING),
])
def test_malformed_successor_statement_codes(fields: Any, code: ErrorCode) -> None:
    """§11.6.1: a statement is checked like every signed document (§5.5 steps 2–4)."""
    data = signed(serial=1, chain=[_statement(fields)])
    assert _error(lambda: _store().load(data, NOW)).code is code


def test_same_serial_different_bytes_is_stale() -> None:
    store = _store()
    store.load(signed(serial=2), NOW)
    store.load(signed(serial=2), NOW)  # the very same bytes: accepted again
    assert _error(lambda: store.load(signed(serial=2, issued=ISSUED + 1), NOW)).code is (
        ErrorCode.STALE_DIRECTORY)
