"""Tamper property (issue 6, item 4): any single-byte change anywhere in a valid envelope,
receipt or directory is rejected with a typed error.

tests/test_envelope.py, test_receipt.py and test_directory.py already flip every byte of a
small envelope (``^ 0x01``), receipt and directory exhaustively. This module covers what
they leave out, as hypothesis properties over all three documents:

- any replacement value at any position (not only one flipped bit), plus inserting or
  deleting one byte;
- the real documents: an envelope carrying the full sample referral opened under the real
  ReferralPolicy, a receipt as the node signs it, and the full signed sample directory
  (``examples/directory/directory.json``, every participant) against its pinned key;
- the error is typed: a :class:`CasewayError` whose code is one of the documented codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

from directory_helpers import sample_authority_key, sample_bytes
from targets import KEYS, POLICY, SHE, _Unseen, valid_envelope, valid_receipt

from caseway.keys.directory import verify_directory
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode
from caseway.protocol.envelope import open_envelope
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import verify_receipt

from reliability_helpers import NOW, SHELTER

ENVELOPE = valid_envelope()
RECEIPT = valid_receipt(ENVELOPE)
DIRECTORY = sample_bytes()
AUTHORITY = b64decode(sample_authority_key())


def open_it(data: bytes) -> None:
    open_envelope(data, me=SHE, keys=KEYS, replay=_Unseen(), now=NOW, policy=POLICY)


def verify_it(data: bytes) -> None:
    verify_receipt(data, keys=KEYS, expected_recipient=SHELTER,
                   expected_digest=crypto.digest(ENVELOPE))


def directory_it(data: bytes) -> None:
    verify_directory(data, [AUTHORITY])




DOCUMENTS: dict[str, tuple[bytes, Callable[[bytes], None]]] = {
    "envelope": (ENVELOPE, open_it),
    "receipt": (RECEIPT, verify_it),
    "directory": (DIRECTORY, directory_it),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_the_untampered_documents_are_valid(name: str) -> None:
    data, check = DOCUMENTS[name]
    check(data)  # a property over documents that never verified would prove nothing


def _rejected(check: Callable[[bytes], None], data: bytes) -> None:
    with pytest.raises(CasewayError) as info:
        check(data)
    assert isinstance(info.value.code, ErrorCode)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(DOCUMENTS)), st.data())
def test_any_single_byte_replacement_is_rejected(name: str, data: st.DataObject) -> None:
    original, check = DOCUMENTS[name]
    at = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]))
    _rejected(check, original[:at] + bytes([value]) + original[at + 1:])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(DOCUMENTS)), st.data())
def test_inserting_or_deleting_one_byte_is_rejected(name: str, data: st.DataObject) -> None:
    original, check = DOCUMENTS[name]
    at = data.draw(st.integers(0, len(original) - 1))
    if data.draw(st.booleans()):
        value = data.draw(st.integers(0, 255))
        tampered = original[:at] + bytes([value]) + original[at:]
        if value in b" \t\r\n" and original[at:at + 1] in (b"{", b"}", b",", b":", b"\""):
            return  # whitespace between JSON tokens outside the signed bytes: same document
    else:
        tampered = original[:at] + original[at + 1:]
    _rejected(check, tampered)
