"""Strict JSON and canonical base64url: the only way Caseway turns bytes into values.

Rules of this module (SPEC.md "Strict JSON" and "base64url"):

1. Size first. :func:`parse_json` refuses input longer than ``max_bytes`` before looking
   at it, so an attacker cannot make us spend work proportional to an unbounded body.
2. One meaning per document. Duplicate object keys, ``NaN``/``Infinity``, numbers with a
   fraction or exponent, integers outside ±(2**53 − 1), lone UTF-16 surrogates, invalid
   UTF-8, a byte-order mark and nesting deeper than ``max_depth`` are all ``malformed``.
   Each of these is a place where two JSON parsers can disagree about what a document
   says; a signature over bytes means nothing if the receiver reads something else.
3. base64url is the RFC 4648 §5 alphabet, unpadded, and canonical (the unused low bits of
   the last character are zero), so every byte string has exactly one text form.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .errors import CasewayError, ErrorCode

MAX_SAFE_INTEGER = 2**53 - 1
DEFAULT_MAX_DEPTH = 32



def _reject_constant(name: str) -> Any:
    raise CasewayError(ErrorCode.MALFORMED, f"non-finite number {name} is not allowed")


def _reject_float(text: str) -> Any:
    raise CasewayError(ErrorCode.MALFORMED, "numbers must be integers (no fraction or exponent)")


def _checked_int(text: str) -> int:
    # Digits are bounded by the size limit; Python's int() also caps at 4300 digits.
    if len(text) > 17:
        raise CasewayError(ErrorCode.MALFORMED, "integer outside ±(2^53−1)")
    value = int(text)
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    raise CasewayError(ErrorCode.MALFORMED, "integer outside ±(2^53−1)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise CasewayError(ErrorCode.MALFORMED, "duplicate object key")
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_float=_reject_float,
    parse_int=_checked_int,
    parse_constant=_reject_constant,
    strict=True,  # no raw control characters inside strings
)


def _check_depth(value: Any, max_depth: int) -> None:
    """Depth limit in one iterative walk over containers only (no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise CasewayError(ErrorCode.MALFORMED, f"nesting deeper than {max_depth}")
        children = node.values() if type(node) is dict else node
        for item in children:
            if type(item) is dict or type(item) is list:
                stack.append((item, depth + 1))


def _check_surrogates(value: Any) -> None:
    """Strings (and keys) must be Unicode scalar values: no lone UTF-16 surrogates."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if type(node) is str:
            _check_scalar_values(node)
        elif type(node) is dict:
            stack.extend(node.keys())
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)


def _check_scalar_values(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CasewayError(ErrorCode.MALFORMED, "lone surrogate in string") from None


# Input is strictly decoded UTF-8, so a surrogate can only come from a \uD800–\uDFFF escape.
# Texts without such an escape (nearly all) skip the scan; a false hit only costs time.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_json(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``data`` as strict JSON (rules above) or raise ``CasewayError``.

    ``too_large`` if ``len(data) > max_bytes``; ``malformed`` for everything else.
    """
    if len(data) > max_bytes:
        raise CasewayError(ErrorCode.TOO_LARGE, f"input longer than {max_bytes} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise CasewayError(ErrorCode.MALFORMED, "byte-order mark is not allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CasewayError(ErrorCode.MALFORMED, "input is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except CasewayError:
        raise
    except RecursionError:
        raise CasewayError(ErrorCode.MALFORMED, f"nesting deeper than {max_depth}") from None
    except (ValueError, TypeError):
        # json.JSONDecodeError's message quotes the input around the error: drop it.
        raise CasewayError(ErrorCode.MALFORMED, "not valid JSON") from None
    if type(value) is dict or type(value) is list:
        _check_depth(value, max_depth)
        if _SURROGATE_ESCAPE.search(text) is not None:
            _check_surrogates(value)
    return value


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON as Caseway writes it: no spaces, keys in the given order.

    Receivers never re-serialise; this is only how the reference implementation produces
    bytes (SPEC.md: any strict-JSON serialisation is valid on the wire).
    """
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


def b64encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 §5)."""
    return b64encode_ascii(data).decode("ascii")


def b64encode_ascii(data: bytes) -> bytes:
    """Unpadded base64url as ASCII bytes (no intermediate ``str`` for large values)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def dump_signed(protected: bytes, signature: bytes) -> bytes:
    """The outer signed form ``{"protected":…,"signature":…}`` as compact JSON bytes.

    Byte-identical to ``dump_json({"protected": b64encode(protected), ...})`` (base64url
    never needs JSON escaping), without holding the whole value as a ``str`` twice over:
    for a 1 MiB envelope that is two fewer whole copies at the sender's peak.
    """
    return b"".join((b'{"protected":"', b64encode_ascii(protected), b'","signature":"',
                     b64encode_ascii(signature), b'"}'))


_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {char: index for index, char in enumerate(_B64_ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def b64decode(text: object, *, length: int | None = None, field: str = "value") -> bytes:
    """Decode canonical unpadded base64url, optionally requiring an exact decoded length.

    Raises ``bad_encoding`` naming ``field`` (a field name, never the value).
    """
    if type(text) is not str:
        raise CasewayError(ErrorCode.BAD_ENCODING, f"{field}: not unpadded base64url")
    remainder = len(text) % 4
    # '+', '/' and '=' belong to other base64 forms; strict_mode refuses everything else
    # outside the alphabet (whitespace, non-ASCII, ...).
    if remainder == 1 or "+" in text or "/" in text or "=" in text:
        raise CasewayError(ErrorCode.BAD_ENCODING, f"{field}: not unpadded base64url")
    try:
        ascii_text = text.encode("ascii").translate(_TO_STANDARD)
        if remainder:  # only then: a whole-size copy of a large value is not free
            ascii_text += b"=" * (4 - remainder)
        raw = binascii.a2b_base64(ascii_text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise CasewayError(ErrorCode.BAD_ENCODING, f"{field}: not unpadded base64url") from None
    # Canonical form: the unused low bits of the last character are zero (4 bits when two
    # characters end the text, 2 bits when three), so each byte string has one text form.
    if remainder and _B64_VALUE[text[-1]] & (0x0F if remainder == 2 else 0x03):
        raise CasewayError(ErrorCode.BAD_ENCODING, f"{field}: non-canonical base64url")
    if length is not None and len(raw) != length:
        raise CasewayError(ErrorCode.BAD_ENCODING, f"{field}: expected {length} bytes")
    return raw
