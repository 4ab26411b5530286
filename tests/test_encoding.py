"""Strict JSON and canonical base64url (SPEC.md "Strict JSON", "base64url")."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json
from caseway.protocol.errors import CasewayError, ErrorCode

LIMIT = 10_000


def code_of(data: bytes, **kw: int) -> ErrorCode:
    with pytest.raises(CasewayError) as info:
        parse_json(data, max_bytes=kw.pop("max_bytes", LIMIT), **kw)
    return info.value.code


@pytest.mark.parametrize("data", [
    b'{"a":1,"a":2}',                    # duplicate key
    b'{"a":{"b":1,"b":1}}',              # nested duplicate key
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}',
    b'{"a":1.0}', b'{"a":1e3}', b'{"a":-0.5}',
    b'{"a":9007199254740992}', b'{"a":-9007199254740992}',
    b'{"a":123456789012345678901234567890}',
    b'{"a":"\\ud800"}', b'{"\\udc00":1}', b'["\\ud83d x"]',
    b"\xef\xbb\xbf{}",                   # byte-order mark
    b'{"a":"\xff"}',                     # invalid UTF-8
    b'{"a":"\x01"}',                     # raw control character
    b"{", b"", b"nul", b'{"a":1} x', b"{'a':1}",
])
def test_rejects_ambiguous_json_as_malformed(data: bytes) -> None:
    assert code_of(data) is ErrorCode.MALFORMED


def test_accepts_the_safe_integer_bounds_and_valid_surrogate_pairs() -> None:
    value = parse_json(b'{"a":9007199254740991,"b":-9007199254740991,"c":"\\ud83d\\ude00"}',
                       max_bytes=LIMIT)
    assert value == {"a": 2**53 - 1, "b": -(2**53 - 1), "c": "\U0001F600"}


def test_size_is_checked_before_parsing() -> None:
    # Not even valid JSON: the size check must fire first.
    assert code_of(b"x" * 101, max_bytes=100) is ErrorCode.TOO_LARGE
    assert parse_json(b"[" + b"1," * 49 + b"1]", max_bytes=101) == [1] * 50


def test_nesting_limit_and_no_recursion_crash() -> None:
    assert parse_json(b"[" * 4 + b"]" * 4, max_bytes=LIMIT, max_depth=4) == [[[[]]]]
    assert code_of(b"[" * 5 + b"]" * 5, max_depth=4) is ErrorCode.MALFORMED
    deep = b"[" * 100_000 + b"]" * 100_000  # beyond Python's recursion limit
    assert code_of(deep, max_bytes=1_000_000) is ErrorCode.MALFORMED


def test_error_text_never_quotes_the_input() -> None:
    with pytest.raises(CasewayError) as info:
        parse_json(b'{"name":"CANARY-Siti" oops}', max_bytes=LIMIT)
    assert "CANARY" not in str(info.value)


@pytest.mark.parametrize("text", ["AQ==", "AQ=", "AR", "A", "A+B/", "AQ\n", " AQ", 5, None])
def test_base64url_rejects_non_canonical_forms(text: object) -> None:
    with pytest.raises(CasewayError) as info:
        b64decode(text)
    assert info.value.code is ErrorCode.BAD_ENCODING


def test_base64url_exact_length() -> None:
    assert b64decode(b64encode(bytes(32)), length=32) == bytes(32)
    with pytest.raises(CasewayError) as info:
        b64decode(b64encode(bytes(31)), length=32, field="key")
    assert info.value.code is ErrorCode.BAD_ENCODING and "key" in info.value.detail


@given(st.binary(max_size=200))
def test_base64url_round_trip_is_unique(data: bytes) -> None:
    text = b64encode(data)
    assert "=" not in text and b64decode(text) == data
    assert base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) == data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_dump_then_parse_round_trips(value: object) -> None:
    assert parse_json(dump_json(value), max_bytes=1_000_000) == value


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_typed(data: bytes) -> None:
    try:
        parse_json(data, max_bytes=1000)
    except CasewayError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.TOO_LARGE)


@given(st.binary(max_size=300), st.binary(min_size=64, max_size=64))
def test_dump_signed_is_byte_identical_to_dump_json(protected: bytes, signature: bytes) -> None:
    from caseway.protocol.encoding import dump_signed

    assert dump_signed(protected, signature) == dump_json(
        {"protected": b64encode(protected), "signature": b64encode(signature)})
