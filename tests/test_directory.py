"""Directory document: schema and rule checks naming the field, signing, verification, and
that tampering with any byte of a signed directory is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from directory_helpers import (
    AUTHORITY,
    OTHER_AUTHORITY,
    participants,
    sample,
    sample_bytes,
    signed,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from caseway import schemas
from caseway.keys.directory import (
    MAX_DIRECTORY_BYTES,
    build_directory,
    parse_participant,
    read_signed,
    sign_directory,
    verify_directory,
)
from caseway.node.commands.vectors import load_vectors
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.firewall import SECTORS


def _error(action: Any) -> CasewayError:
    with pytest.raises(CasewayError) as info:
        action()
    return info.value


# --------------------------------------------------------------------------- sample


def test_sample_directory_file_is_reproducible_and_verifies() -> None:
    assert sample.signed_directory() == sample_bytes()
    directory = verify_directory(sample_bytes(), [AUTHORITY.public_key])
    ids = {p.id for p in directory.participants}
    assert {"ph-embassy-kl", "id-consulate-jb", "ph-shelter-manila", "ph-legal-cebu",
            "th-oscc-bangkok", "kh-shelter-phnompenh", "ph-hotline-migrants",
            "my-immigration-kl", "kh-legal-phnompenh"} <= ids
    hotline = directory.get("ph-hotline-migrants")
    assert hotline is not None and hotline.information_only and hotline.keys == ()
    assert hotline.hours.always_open


def test_sample_participant_files_match_the_directory() -> None:
    directory = verify_directory(sample_bytes(), [AUTHORITY.public_key])
    for p in directory.participants:
        path = sample.HERE / "participants" / f"{p.id}.json"
        assert json.loads(path.read_text("utf-8")) == p.document


def test_sample_keys_come_from_the_fixtures() -> None:
    directory = verify_directory(sample_bytes(), [AUTHORITY.public_key])
    for pid, (seed, secret) in sample.fixtures.PARTICIPANTS.items():
        p = directory.get(pid)
        assert p is not None
        public = {k.use: k.public_key for k in p.keys if k.status == "active"}
        assert public["signing"] == crypto.SigningKeyPair(bytes.fromhex(seed)).public_key
        assert public["encryption"] == crypto.EncryptionKeyPair(bytes.fromhex(secret)).public_key


def test_sample_names_are_multilingual() -> None:
    directory = verify_directory(sample_bytes(), [AUTHORITY.public_key])
    local = {"ph-embassy-kl": "fil", "id-consulate-jb": "id", "ph-shelter-manila": "fil",
             "th-oscc-bangkok": "th", "kh-shelter-phnompenh": "km", "my-immigration-kl": "ms"}
    for pid, tag in local.items():
        p = directory.get(pid)
        assert p is not None and "en" in p.names and tag in p.names


def test_schema_sector_vocabulary_is_the_firewall_vocabulary() -> None:
    enum = schemas.load("participant")["properties"]["sectors"]["items"]["enum"]
    assert tuple(enum) == SECTORS


def test_required_directory_vectors_exist() -> None:
    from directory_helpers import ROOT

    found = [v for _, v in load_vectors(ROOT / "examples" / "vectors")
             if v["kind"] == "directory"]
    codes = {v["expected"].get("error", "ok") for v in found}
    assert {"ok", "bad_signature", "untrusted_authority", "stale_directory",
            "directory_expired"} <= codes


# --------------------------------------------------------------------------- validation


def _participant(**changes: Any) -> dict[str, Any]:
    entry = participants("ph-legal-cebu")[0]
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return entry


@pytest.mark.parametrize(("changes", "where"), [
    ({"country": "ph"}, "participant.country"),
    ({"country": None}, "missing required field 'country'"),
    ({"names": {"fil": "Walang Ingles"}}, "missing required field 'en'"),
    ({"languages": ["english"]}, "participant.languages[0]"),
    ({"sectors": ["lawyers"]}, "participant.sectors[0]"),
    ({"sectors": []}, "participant.sectors"),
    ({"services": ["haircut"]}, "participant.services[0]"),
    ({"endpoint": "ftp://example"}, "participant.endpoint"),
    ({"favourite_colour": "blue"}, "unknown field 'favourite_colour'"),
    ({"contacts": {"phone": ["0917 555 0100"]}}, "participant.contacts.phone[0]"),
    ({"hours": {"timezone": "Asia/Nowhere", "always_open": True}},
     "participant.hours.timezone"),
    # Exact, case-sensitive IANA names; file paths of a zoneinfo folder are not names.
    ({"hours": {"timezone": "asia/manila", "always_open": True}},
     "participant.hours.timezone"),
    ({"hours": {"timezone": "posix/Asia/Manila", "always_open": True}},
     "participant.hours.timezone"),
    ({"hours": {"timezone": "localtime", "always_open": True}},
     "participant.hours.timezone"),
    ({"hours": {"timezone": "Asia/Manila"}}, "participant.hours: needs periods"),
    ({"hours": {"timezone": "Asia/Manila", "periods": [
        {"days": ["mon"], "opens": "18:00", "closes": "09:00"}]}},
     "participant.hours.periods[0]"),
    ({"hours": {"timezone": "Asia/Manila", "periods": [
        {"days": ["monday"], "opens": "08:00", "closes": "09:00"}]}},
     "participant.hours.periods[0].days[0]"),
    ({"hours": {"timezone": "Asia/Manila", "periods": [
        {"days": ["mon"], "opens": "8:00", "closes": "09:00"}]}},
     "participant.hours.periods[0].opens"),
])
def test_invalid_participant_names_the_field(changes: dict[str, Any], where: str) -> None:
    error = _error(lambda: parse_participant(_participant(**changes)))
    assert error.code is ErrorCode.SCHEMA_INVALID
    assert where in error.detail


def test_error_detail_never_contains_the_value() -> None:
    secret = "+63 917 SECRET"
    error = _error(lambda: parse_participant(_participant(contacts={"phone": [secret]})))
    assert "SECRET" not in error.detail and "SECRET" not in str(error)


def test_key_id_must_match_the_key() -> None:
    entry = _participant()
    entry["keys"][1]["key_id"] = entry["keys"][2]["key_id"]
    error = _error(lambda: parse_participant(entry))
    assert error.code is ErrorCode.SCHEMA_INVALID and "keys[1].key_id" in error.detail


def test_revoked_key_needs_revoked_at() -> None:
    entry = _participant()
    entry["keys"][0]["revoked_at"] = None
    assert _error(lambda: parse_participant(entry)).code is ErrorCode.SCHEMA_INVALID


def test_endpoint_requires_active_keys() -> None:
    entry = _participant(keys=[])
    error = _error(lambda: parse_participant(entry))
    assert "participant.keys" in error.detail and "active signing key" in error.detail


def test_information_only_entry_needs_no_keys() -> None:
    entry = _participant(keys=[], endpoint=None)
    assert parse_participant(entry).information_only


def test_duplicate_participant_ids_refused_and_nothing_signed() -> None:
    entries = participants("ph-legal-cebu") * 2
    error = _error(lambda: signed(entries))
    assert error.code is ErrorCode.SCHEMA_INVALID and "$.participants[1].id" in error.detail


def test_expires_must_follow_issued() -> None:
    error = _error(lambda: signed(issued=100, expires=100))
    assert "$.expires" in error.detail


# --------------------------------------------------------------------------- signing


def test_signed_form_is_label_over_exact_protected_bytes() -> None:
    data = signed(participants("ph-embassy-kl"))
    outer = json.loads(data)
    assert set(outer) == {"protected", "signature"}
    protected = b64decode(outer["protected"])
    crypto.verify(AUTHORITY.public_key, crypto.DIRECTORY_LABEL, protected,
                  b64decode(outer["signature"]))
    document = json.loads(protected)
    assert document["authority"] == AUTHORITY.key_id
    assert list(document)[:5] == ["v", "authority", "serial", "issued", "expires"]
    assert schemas.validator("directory").is_valid(document)


def test_sign_directory_sets_the_authority_key_id() -> None:
    document = {"serial": 1, "issued": 1, "expires": 2, "authority": "x" * 22,
                "participants": []}
    data = sign_directory(document, AUTHORITY)
    assert read_signed(data).authority == AUTHORITY.key_id


def test_link_time_zone_names_are_valid_as_written() -> None:
    for name in ("Asia/Saigon", "UTC", "Etc/GMT+5"):
        parse_participant(_participant(hours={"timezone": name, "always_open": True}))


def _unsigned(document: dict[str, Any]) -> bytes:
    """A signed-directory outer form around ``document`` (signature never reached)."""
    return dump_json({"protected": b64encode(dump_json(document)),
                      "signature": b64encode(bytes(64))})


@pytest.mark.parametrize(("document", "code"), [
    ([1], ErrorCode.HEADER_INVALID),
    ({"authority": AUTHORITY.key_id}, ErrorCode.UNSUPPORTED_VERSION),
    ({"v": True, "authority": AUTHORITY.key_id}, ErrorCode.UNSUPPORTED_VERSION),
    ({"v": 2, "authority": AUTHORITY.key_id}, ErrorCode.UNSUPPORTED_VERSION),
    ({"v": 1}, ErrorCode.HEADER_INVALID),
    ({"v": 1, "authority": 7}, ErrorCode.BAD_ENCODING),
    ({"v": 1, "authority": "A" * 21}, ErrorCode.BAD_ENCODING),
    ({"v": 1, "authority": "A" * 21 + "B"}, ErrorCode.BAD_ENCODING),
])
def test_document_object_version_and_authority_codes(document: Any, code: ErrorCode) -> None:
    """§11.6 step 3: not an object → header_invalid; v → unsupported_version; authority
    missing → header_invalid, not a canonical 16-byte key id (a non-string too) →
    bad_encoding (§2.2)."""
    assert _error(lambda: read_signed(_unsigned(document))).code is code


def test_signature_with_another_label_is_refused() -> None:
    """A receipt or envelope signature over the same bytes is no directory signature."""
    data = signed(participants("ph-embassy-kl"))
    protected = read_signed(data).protected
    wrong = AUTHORITY.sign(crypto.ENVELOPE_LABEL, protected)
    forged = dump_json({"protected": b64encode(protected), "signature": b64encode(wrong)})
    assert _error(lambda: verify_directory(forged, [AUTHORITY.public_key])).code is (
        ErrorCode.BAD_SIGNATURE)


def test_unpinned_authority_is_untrusted() -> None:
    data = signed(participants("ph-embassy-kl"), authority=OTHER_AUTHORITY)
    assert _error(lambda: verify_directory(data, [AUTHORITY.public_key])).code is (
        ErrorCode.UNTRUSTED_AUTHORITY)


def test_oversize_directory_refused_before_parsing() -> None:
    data = b" " * (MAX_DIRECTORY_BYTES + 1)
    assert _error(lambda: verify_directory(data, [AUTHORITY.public_key])).code is (
        ErrorCode.TOO_LARGE)


def test_sign_refuses_a_directory_over_the_limit() -> None:
    big = participants("ph-hotline-migrants")[0]
    entries = []
    for n in range(2000):
        entry = dict(big, id=f"hotline-{n}")
        entry["description"] = {"en": "x" * 500, "fil": "y" * 500, "ceb": "z" * 500}
        entries.append(entry)
    assert _error(lambda: build_directory(entries, authority=AUTHORITY, serial=1, issued=1,
                                          expires=2)).code is ErrorCode.TOO_LARGE


# --------------------------------------------------------------------------- tampering

SMALL = signed(participants("ph-embassy-kl"))


def test_tampering_any_byte_fails_exhaustively() -> None:
    """Every single-byte change of the signed file is refused with a typed error."""
    for i in range(len(SMALL)):
        for replacement in {SMALL[i] ^ 0x01, SMALL[i] ^ 0x20}:
            tampered = SMALL[:i] + bytes([replacement]) + SMALL[i + 1:]
            with pytest.raises(CasewayError):
                verify_directory(tampered, [AUTHORITY.public_key])


def test_tampering_any_byte_of_the_document_is_bad_signature() -> None:
    """Re-encoding a changed document keeps the outer form valid: the signature catches it."""
    protected = read_signed(SMALL).protected
    signature = json.loads(SMALL)["signature"]
    for i in range(len(protected)):
        tampered = protected[:i] + bytes([protected[i] ^ 0x01]) + protected[i + 1:]
        data = dump_json({"protected": b64encode(tampered), "signature": signature})
        with pytest.raises(CasewayError) as info:
            verify_directory(data, [AUTHORITY.public_key])
        assert info.value.code in (ErrorCode.BAD_SIGNATURE, ErrorCode.MALFORMED,
                                   ErrorCode.HEADER_INVALID, ErrorCode.UNTRUSTED_AUTHORITY,
                                   ErrorCode.BAD_ENCODING, ErrorCode.UNSUPPORTED_VERSION), i


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255),
       st.integers(min_value=1, max_value=3))
def test_tampering_random_bytes_fails(position: int, xor: int, count: int) -> None:
    data = bytearray(SMALL)
    for k in range(count):
        data[(position + 7 * k) % len(data)] ^= xor
    with pytest.raises(CasewayError):
        verify_directory(bytes(data), [AUTHORITY.public_key])
