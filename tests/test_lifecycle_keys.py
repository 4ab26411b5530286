"""Key lifecycle: rotation with a grace period, destruction of retired encryption keys, and
the revoked-key rule both ways, exercised through real envelopes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from directory_helpers import AUTHORITY, participants, signed

from caseway.keys.directory import with_node_keys
from caseway.keys.identity import Identity
from caseway.keys.keystore import (
    MEMLIMIT_MIN,
    OPSLIMIT_MIN,
    KeystoreContents,
    create_keystore,
    open_keystore,
    save_keystore,
)
from caseway.keys.lifecycle import (
    ENCRYPTION_GRACE_SECONDS,
    destroy_expired_keys,
    public_key_entries,
    rotate_encryption_key,
    rotate_signing_key,
)
from caseway.keys.trust import TrustStore
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.encoding import b64encode
from caseway.protocol.envelope import (
    MAX_LIFETIME,
    EnvelopeLayerOnly,
    open_envelope,
    seal_envelope,
)
from caseway.protocol.errors import CasewayError, ErrorCode

T0 = 1_768_435_200
DAY = 24 * 3600
FAST = {"opslimit": OPSLIMIT_MIN, "memlimit": MEMLIMIT_MIN}
PASS = b"shelter passphrase"


@dataclass
class SeenIds:
    pairs: set[tuple[str, str]] = field(default_factory=set)

    def seen(self, sender: str, message_id: str) -> bool:
        return (sender, message_id) in self.pairs


def _embassy() -> Identity:
    return Identity("ph-embassy-kl", SigningKeyPair(b"\x01" * 32),
                    [EncryptionKeyPair(b"\x02" * 32)])


def _shelter() -> KeystoreContents:
    identity = Identity("ph-shelter-manila", SigningKeyPair(b"\x03" * 32),
                        [EncryptionKeyPair(b"\x04" * 32)])
    return KeystoreContents(identity, b"\x55" * 32, created=T0 - 30 * DAY,
                            signing_created=T0 - 30 * DAY)


def _trust(embassy: Identity, shelter: KeystoreContents, *, serial: int = 1,
           embassy_keys: list[dict[str, Any]] | None = None, now: int = T0) -> TrustStore:
    entries = participants("ph-embassy-kl", "ph-shelter-manila")
    embassy_entry = {"use": "signing", "key": b64encode(embassy.signing.public_key),
                     "key_id": embassy.signing.key_id, "valid_from": T0 - 60 * DAY,
                     "valid_until": None, "status": "active", "revoked_at": None}
    enc = {"use": "encryption", "key": b64encode(embassy.encryption.public_key),
           "key_id": embassy.encryption.key_id, "valid_from": T0 - 60 * DAY,
           "valid_until": None, "status": "active", "revoked_at": None}
    keys = embassy_keys if embassy_keys is not None else [embassy_entry, enc]
    docs = [
        with_node_keys(entries[0], keys, endpoint="http://127.0.0.1:8441/federation"),
        with_node_keys(entries[1], public_key_entries(shelter),
                       endpoint="http://127.0.0.1:8442/federation"),
    ]
    store = TrustStore([AUTHORITY.public_key])
    store.load(signed(docs, serial=serial, issued=now - 60), now)
    return store


def _seal(embassy: Identity, recipient_key: bytes, created: int, n: int = 1) -> bytes:
    return seal_envelope(
        {"type": "test", "n": n}, sender=embassy.sender, recipient="ph-shelter-manila",
        recipient_public_key=recipient_key, message_id=bytes([n]) * 16, created=created,
        expires=created + 7 * DAY, ephemeral_secret=bytes([0xE0 + n]) * 32,
        policy=EnvelopeLayerOnly(),
    ).data


def _open(data: bytes, me: Identity, store: TrustStore, now: int) -> dict[str, Any]:
    return open_envelope(data, me=me, keys=store, replay=SeenIds(), now=now,
                         policy=EnvelopeLayerOnly()).message


def test_default_grace_outlasts_the_longest_envelope() -> None:
    assert ENCRYPTION_GRACE_SECONDS > MAX_LIFETIME


def test_rotation_grace_then_destruction(tmp_path: Path) -> None:
    embassy, shelter = _embassy(), _shelter()
    path = tmp_path / "shelter.keystore"
    create_keystore(path, PASS, shelter, **FAST)
    store = _trust(embassy, shelter)
    old_key, old_id = store.encryption_key("ph-shelter-manila", T0)
    in_flight = _seal(embassy, old_key, created=T0 - 60)  # sealed before the rotation

    grace = 3600
    rotated_at = T0
    new = rotate_encryption_key(shelter, now=rotated_at, grace_seconds=grace,
                                new_key=EncryptionKeyPair(b"\x44" * 32))
    save_keystore(path, PASS, shelter, **FAST)

    # The authority publishes the rotation: peers now seal to the new key.
    store2 = _trust(embassy, shelter, serial=2, now=rotated_at + 60)
    assert store2.encryption_key("ph-shelter-manila", rotated_at + 60) == (new.public_key,
                                                                           new.key_id)
    entries = {e["key_id"]: e for e in public_key_entries(shelter)}
    assert entries[old_id]["status"] == "retired"
    assert entries[old_id]["valid_until"] == rotated_at

    # During the grace period the old key still opens what was sealed to it.
    during = open_keystore(path, PASS)
    assert destroy_expired_keys(during, now=rotated_at + grace - 1) == []
    assert _open(in_flight, during.identity, store2, rotated_at + grace - 1)["n"] == 1
    fresh = _seal(embassy, new.public_key, created=rotated_at + 120, n=2)
    assert _open(fresh, during.identity, store2, rotated_at + 180)["n"] == 2

    # After the grace period the private key is destroyed and gone from the file.
    after = open_keystore(path, PASS)
    assert destroy_expired_keys(after, now=rotated_at + grace) == [old_id]
    save_keystore(path, PASS, after, **FAST)
    reopened = open_keystore(path, PASS)
    assert [k.key_id for k in reopened.identity.encryption_keys] == [new.key_id]
    assert reopened.identity.decryption_key(old_id) is None
    with pytest.raises(CasewayError) as info:
        _open(in_flight, reopened.identity, store2, rotated_at + grace + 1)
    assert info.value.code is ErrorCode.NOT_FOR_ME
    # The new key keeps working.
    assert _open(fresh, reopened.identity, store2, rotated_at + grace + 1)["n"] == 2


def test_current_key_is_never_destroyed() -> None:
    shelter = _shelter()
    rotate_encryption_key(shelter, now=T0, grace_seconds=0)
    current = shelter.identity.encryption.key_id
    destroy_expired_keys(shelter, now=T0 + 10**6)
    assert [k.key_id for k in shelter.identity.encryption_keys] == [current]


def _revoked_keys(embassy: Identity, revoked_at: int) -> list[dict[str, Any]]:
    return [
        {"use": "signing", "key": b64encode(embassy.signing.public_key),
         "key_id": embassy.signing.key_id, "valid_from": T0 - 60 * DAY, "valid_until": None,
         "status": "revoked", "revoked_at": revoked_at},
        {"use": "encryption", "key": b64encode(embassy.encryption.public_key),
         "key_id": embassy.encryption.key_id, "valid_from": T0 - 60 * DAY,
         "valid_until": None, "status": "active", "revoked_at": None},
        {"use": "signing", "key": b64encode(SigningKeyPair(b"\x09" * 32).public_key),
         "key_id": SigningKeyPair(b"\x09" * 32).key_id, "valid_from": revoked_at,
         "valid_until": None, "status": "active", "revoked_at": None},
    ]


@pytest.mark.parametrize(("created_offset", "outcome"), [
    (-3600, None), (-1, None), (0, ErrorCode.REVOKED_KEY), (1, ErrorCode.REVOKED_KEY),
    (3600, ErrorCode.REVOKED_KEY),
])
def test_revoked_key_rule_both_ways(created_offset: int, outcome: ErrorCode | None) -> None:
    """Signed before revocation: still verifies (audit). At or after: revoked_key."""
    embassy, shelter = _embassy(), _shelter()
    revoked_at = T0 - 2 * DAY
    store = _trust(embassy, shelter, embassy_keys=_revoked_keys(embassy, revoked_at))
    data = _seal(embassy, shelter.identity.encryption.public_key,
                 created=revoked_at + created_offset)
    now = revoked_at + 2 * 3600
    if outcome is None:
        assert _open(data, shelter.identity, store, now)["n"] == 1
    else:
        with pytest.raises(CasewayError) as info:
            _open(data, shelter.identity, store, now)
        assert info.value.code is outcome


def test_signing_key_rotation_keeps_old_signatures_verifiable() -> None:
    embassy, shelter = _embassy(), _shelter()
    embassy_contents = KeystoreContents(embassy, b"\x66" * 32, created=T0 - 60 * DAY,
                                        signing_created=T0 - 60 * DAY)
    before = _seal(embassy, shelter.identity.encryption.public_key, created=T0 - 600)
    old = rotate_signing_key(embassy_contents, now=T0, new_key=SigningKeyPair(b"\x0a" * 32))
    keys = [
        {"use": "signing", "key": b64encode(old.public_key), "key_id": old.key_id,
         "valid_from": T0 - 60 * DAY, "valid_until": T0, "status": "retired",
         "revoked_at": None},
        *public_key_entries(embassy_contents),
    ]
    store = _trust(embassy, shelter, embassy_keys=keys)
    assert _open(before, shelter.identity, store, T0 + 60)["n"] == 1
    after = _seal(embassy, shelter.identity.encryption.public_key, created=T0 + 30, n=2)
    assert _open(after, shelter.identity, store, T0 + 60)["n"] == 2
    # A signature by the retired key dated after its window is unknown_key.
    late = seal_envelope(
        {"n": 3}, sender=type(embassy.sender)("ph-embassy-kl", old),
        recipient="ph-shelter-manila",
        recipient_public_key=shelter.identity.encryption.public_key,
        message_id=b"\x03" * 16, created=T0 + 30, expires=T0 + DAY,
        ephemeral_secret=b"\xe3" * 32, policy=EnvelopeLayerOnly()).data
    with pytest.raises(CasewayError) as info:
        _open(late, shelter.identity, store, T0 + 60)
    assert info.value.code is ErrorCode.UNKNOWN_KEY


def test_public_key_entries_make_a_valid_directory_entry() -> None:
    shelter = _shelter()
    rotate_encryption_key(shelter, now=T0)
    from caseway.keys.directory import parse_participant

    entry = with_node_keys(participants("ph-shelter-manila")[0], public_key_entries(shelter),
                           endpoint="http://127.0.0.1:9000/federation")
    parsed = parse_participant(entry)
    assert [k.status for k in parsed.keys] == ["active", "active", "retired"]
