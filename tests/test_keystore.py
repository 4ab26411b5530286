"""Keystore: round trip, typed errors for wrong passphrase and damaged files, mode 0600,
atomic writes that never clobber."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from caseway.keys.keystore import (
    MEMLIMIT_MIN,
    OPSLIMIT_MIN,
    KeystoreContents,
    create_keystore,
    keystore_limits,
    open_keystore,
    read_passphrase,
    save_keystore,
)
from caseway.keys.lifecycle import rotate_encryption_key
from caseway.protocol.crypto import EncryptionKeyPair
from caseway.protocol.errors import CasewayError, ErrorCode

FAST = {"opslimit": OPSLIMIT_MIN, "memlimit": MEMLIMIT_MIN}
PASS = b"correct horse battery staple"
NOW = 1_768_435_200


@pytest.fixture
def contents() -> KeystoreContents:
    return KeystoreContents.generate("ph-shelter-manila", now=NOW)


@pytest.fixture
def keystore(tmp_path: Path, contents: KeystoreContents) -> Path:
    path = tmp_path / "node.keystore"
    create_keystore(path, PASS, contents, **FAST)
    return path


def test_round_trip(keystore: Path, contents: KeystoreContents) -> None:
    opened = open_keystore(keystore, PASS)
    assert opened.identity.participant == "ph-shelter-manila"
    assert opened.identity.signing.seed == contents.identity.signing.seed
    assert [k.secret for k in opened.identity.encryption_keys] == [
        k.secret for k in contents.identity.encryption_keys]
    assert opened.storage_key == contents.storage_key
    assert opened.created == NOW and opened.signing_created == NOW
    assert opened.encryption_times == contents.encryption_times


def test_round_trip_keeps_rotation_metadata(tmp_path: Path,
                                            contents: KeystoreContents) -> None:
    new = rotate_encryption_key(contents, now=NOW + 10, new_key=EncryptionKeyPair(b"\x11" * 32),
                                grace_seconds=100)
    path = tmp_path / "k"
    create_keystore(path, PASS, contents, **FAST)
    opened = open_keystore(path, PASS)
    assert opened.identity.encryption.key_id == new.key_id
    old_id = opened.identity.encryption_keys[1].key_id
    assert opened.encryption_times[old_id].retired_at == NOW + 10
    assert opened.encryption_times[old_id].destroy_at == NOW + 110


def test_file_mode_is_0600(keystore: Path) -> None:
    assert stat.S_IMODE(os.stat(keystore).st_mode) == 0o600


def test_saved_file_mode_is_0600_even_with_permissive_umask(tmp_path: Path,
                                                            contents: KeystoreContents) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "k"
        create_keystore(path, PASS, contents, **FAST)
        save_keystore(path, PASS, contents, **FAST)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_file_contains_no_secret_in_clear(keystore: Path, contents: KeystoreContents) -> None:
    data = keystore.read_bytes()
    from caseway.protocol.encoding import b64encode

    for secret in (contents.identity.signing.seed, contents.storage_key,
                   contents.identity.encryption.secret):
        assert secret not in data and b64encode(secret).encode() not in data
    assert b"ph-shelter-manila" not in data  # even the participant id is inside the box


def test_wrong_passphrase_is_keystore_locked(keystore: Path) -> None:
    before = keystore.read_bytes()
    with pytest.raises(CasewayError) as info:
        open_keystore(keystore, b"wrong passphrase")
    assert info.value.code is ErrorCode.KEYSTORE_LOCKED
    assert keystore.read_bytes() == before


def test_empty_passphrase_is_keystore_locked(keystore: Path) -> None:
    with pytest.raises(CasewayError) as info:
        open_keystore(keystore, b"")
    assert info.value.code is ErrorCode.KEYSTORE_LOCKED


@pytest.mark.parametrize("keep", [0, 1, 10, 100, -2, -1])
def test_truncated_file_is_keystore_corrupt(keystore: Path, keep: int) -> None:
    data = keystore.read_bytes().rstrip(b"\n")
    keystore.write_bytes(data[:keep])
    with pytest.raises(CasewayError) as info:
        open_keystore(keystore, PASS)
    assert info.value.code is ErrorCode.KEYSTORE_CORRUPT


def test_every_truncation_is_corrupt_not_locked(keystore: Path) -> None:
    data = keystore.read_bytes().rstrip(b"\n")
    from caseway.keys.keystore import open_secret

    for keep in range(len(data)):
        with pytest.raises(CasewayError) as info:
            open_secret(data[:keep], PASS)
        assert info.value.code is ErrorCode.KEYSTORE_CORRUPT, keep


def test_edited_ciphertext_is_keystore_corrupt(keystore: Path) -> None:
    outer = json.loads(keystore.read_bytes())
    text = outer["ciphertext"]
    outer["ciphertext"] = ("A" if text[0] != "A" else "B") + text[1:]
    keystore.write_text(json.dumps(outer))
    with pytest.raises(CasewayError) as info:
        open_keystore(keystore, PASS)
    assert info.value.code is ErrorCode.KEYSTORE_CORRUPT


def test_missing_file_is_keystore_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CasewayError) as info:
        open_keystore(tmp_path / "absent", PASS)
    assert info.value.code is ErrorCode.KEYSTORE_CORRUPT


def test_absurd_kdf_limits_are_refused_before_deriving(keystore: Path) -> None:
    outer = json.loads(keystore.read_bytes())
    outer["memlimit"] = 2**50
    keystore.write_text(json.dumps(outer))
    with pytest.raises(CasewayError) as info:
        open_keystore(keystore, PASS)
    assert info.value.code is ErrorCode.KEYSTORE_CORRUPT


def test_create_refuses_to_overwrite(keystore: Path, contents: KeystoreContents) -> None:
    before = keystore.read_bytes()
    with pytest.raises(CasewayError) as info:
        create_keystore(keystore, b"other", contents, **FAST)
    assert info.value.code is ErrorCode.CONFLICT
    assert keystore.read_bytes() == before
    assert sorted(p.name for p in keystore.parent.iterdir()) == ["node.keystore"]  # no temp


def test_save_replaces_atomically_and_keeps_limits(keystore: Path,
                                                   contents: KeystoreContents) -> None:
    rotate_encryption_key(contents, now=NOW + 1)
    save_keystore(keystore, PASS, contents, **FAST)
    assert keystore_limits(keystore) == (OPSLIMIT_MIN, MEMLIMIT_MIN)
    assert len(open_keystore(keystore, PASS).identity.encryption_keys) == 2
    assert sorted(p.name for p in keystore.parent.iterdir()) == ["node.keystore"]


def test_each_save_uses_fresh_salt_and_nonce(keystore: Path,
                                             contents: KeystoreContents) -> None:
    first = json.loads(keystore.read_bytes())
    save_keystore(keystore, PASS, contents, **FAST)
    second = json.loads(keystore.read_bytes())
    assert first["salt"] != second["salt"] and first["nonce"] != second["nonce"]


def test_repr_hides_secrets(contents: KeystoreContents) -> None:
    assert contents.storage_key.hex() not in repr(contents)


def test_read_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEWAY_PASSPHRASE", "from env")
    assert read_passphrase(prompt=False) == b"from env"
    file = tmp_path / "pass"
    file.write_bytes(b"from file\n")
    assert read_passphrase(file=file, prompt=False) == b"from file"  # file wins
    monkeypatch.delenv("CASEWAY_PASSPHRASE")
    with pytest.raises(CasewayError) as info:
        read_passphrase(prompt=False)
    assert info.value.code is ErrorCode.KEYSTORE_LOCKED
    file.write_bytes(b"\n")
    with pytest.raises(CasewayError) as info:
        read_passphrase(file=file)
    assert info.value.code is ErrorCode.KEYSTORE_LOCKED
