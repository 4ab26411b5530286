"""Fuzz targets shared by the bounded hypothesis tests (tests/test_fuzz.py, run in CI) and
the atheris harness (tests/fuzz/fuzz_caseway.py, for long runs; not run in CI).

Each target takes arbitrary bytes and checks the one property every Caseway parser must
have: the input is either accepted, with results that satisfy the target's own
invariants, or refused with a typed :class:`CasewayError`. Any other exception (a
``KeyError``, ``RecursionError``, ``UnicodeError``, ``binascii.Error``, a nacl exception...)
is a bug and propagates to the fuzzer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from caseway.keys.directory import verify_directory
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, parse_json
from caseway.protocol.envelope import (
    MAX_ENVELOPE_BYTES,
    EnvelopeLayerOnly,
    open_envelope,
    seal_envelope,
)
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy
from caseway.protocol.receipt import sign_receipt, verify_receipt

from reliability_helpers import EMBASSY, NOW, SHELTER, Directory, fixed_identity, referral

EMB, SHE = fixed_identity(EMBASSY), fixed_identity(SHELTER)
KEYS = Directory()
KEYS.add_identity(EMB)
KEYS.add_identity(SHE)
POLICY = ReferralPolicy(KEYS, InMemoryConsentState())
AUTHORITY = fixed_identity("authority").signing


class _Unseen:
    def seen(self, sender: str, message_id: str) -> bool:
        return False


def valid_envelope() -> bytes:
    return seal_envelope(referral(0, now=NOW - 60), sender=EMB.sender, recipient=SHELTER,
                         recipient_public_key=SHE.encryption.public_key,
                         message_id=bytes(range(16)), created=NOW - 60, expires=NOW + 3600,
                         ephemeral_secret=bytes([7]) * 32, policy=EnvelopeLayerOnly()).data


def valid_receipt(envelope: bytes) -> bytes:
    return sign_receipt(signer=SHE.signing, recipient=SHELTER,
                        envelope_digest=crypto.digest(envelope), message_id=None,
                        sender=EMBASSY, received_at=NOW)


def _typed(error: CasewayError) -> None:
    assert isinstance(error.code, ErrorCode)
    assert error.detail and "\n" not in error.detail


def parse_json_target(data: bytes) -> None:
    try:
        value = parse_json(data, max_bytes=MAX_ENVELOPE_BYTES)
    except CasewayError as error:
        _typed(error)
        return
    # No parser differential: whatever the strict parser accepts, a standard parser reads
    # the same way (it accepted no duplicate keys, floats, NaN, lone surrogates...).
    assert json.loads(data) == value


def b64_target(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        raw = b64decode(text)
    except CasewayError as error:
        _typed(error)
        return
    assert b64encode(raw) == text  # canonical: one text form per byte string


def open_target(data: bytes) -> None:
    try:
        opened = open_envelope(data, me=SHE, keys=KEYS, replay=_Unseen(), now=NOW,
                               policy=POLICY)
    except CasewayError as error:
        _typed(error)
        return
    assert opened.digest == crypto.digest(data)


def receipt_target(data: bytes) -> None:
    try:
        verify_receipt(data, keys=KEYS, expected_recipient=SHELTER,
                       expected_digest=crypto.digest(b""))
    except CasewayError as error:
        _typed(error)


def directory_target(data: bytes) -> None:
    try:
        verify_directory(data, [AUTHORITY.public_key])
    except CasewayError as error:
        _typed(error)


TARGETS = {"parse_json": parse_json_target, "b64": b64_target, "open": open_target,
           "receipt": receipt_target, "directory": directory_target}
