"""Bounded fuzzing in CI (issue 6, item 3): the strict parser, base64url, open, receipts
and directories only ever accept or raise a typed CasewayError.

The targets (and their invariants: no parser differential with the standard JSON parser,
one canonical base64url text per byte string) live in tests/fuzz/targets.py and are shared
with the atheris harness for long coverage-guided runs. Here hypothesis feeds them three
kinds of input: arbitrary bytes, mutations of valid documents (insert, delete, replace,
splice), and structurally valid envelopes whose header fields are replaced by arbitrary
JSON values, re-signed by the real sender so the checks behind the signature are reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

from targets import (
    EMB,
    TARGETS,
    b64_target,
    open_target,
    parse_json_target,
    receipt_target,
    valid_envelope,
    valid_receipt,
)

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json

ENVELOPE = valid_envelope()
RECEIPT = valid_receipt(ENVELOPE)
HEADER: dict[str, Any] = json.loads(b64decode(json.loads(ENVELOPE)["protected"]))
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20)
    | st.floats(allow_nan=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "splice"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = seed[draw(st.integers(0, len(seed))):][:draw(st.integers(0, 64))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_every_target(data: bytes) -> None:
    for target in TARGETS.values():
        target(data)


@FUZZ
@given(json_values)
def test_strict_parser_round_trips_what_it_accepts(value: Any) -> None:
    try:
        data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    parse_json_target(data)


@FUZZ
@given(st.data())
def test_mutated_json_documents(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from([ENVELOPE, RECEIPT, dump_json(HEADER),
                                      b'{"a":[1,"\\u00e9",{"b":null}],"c":true}']))
    parse_json_target(data.draw(mutated(seed)))


@FUZZ
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \n",
               max_size=40))
def test_base64url_is_canonical(text: str) -> None:
    b64_target(text.encode())
    try:
        raw = b64decode(text)
    except Exception:
        return
    assert b64decode(b64encode(raw)) == raw


@FUZZ
@given(st.data())
def test_mutated_envelopes_and_receipts(data: st.DataObject) -> None:
    open_target(data.draw(mutated(ENVELOPE)))
    receipt_target(data.draw(mutated(RECEIPT)))


@FUZZ
@given(st.sampled_from(sorted(HEADER)), json_values, st.booleans())
def test_resigned_envelopes_with_any_header_value(field: str, value: Any, sign: bool) -> None:
    """Arbitrary values in each header field, signed by the real sender: the checks after
    the signature (addressing, time, replay, decryption, binding, policy) see them too."""
    header = {**HEADER, field: value}
    try:
        protected = json.dumps(header, separators=(",", ":")).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    signature = (EMB.signing.sign(crypto.ENVELOPE_LABEL, protected) if sign else bytes(64))
    open_target(dump_json({"protected": b64encode(protected),
                           "signature": b64encode(signature)}))


def test_the_valid_seeds_are_accepted() -> None:
    """The seeds really are valid: a target that rejected everything would prove nothing."""
    assert parse_json(ENVELOPE, max_bytes=len(ENVELOPE)) == json.loads(ENVELOPE)
    open_target(ENVELOPE)
    from targets import KEYS, POLICY, SHE, _Unseen

    from caseway.protocol.envelope import open_envelope

    opened = open_envelope(ENVELOPE, me=SHE, keys=KEYS, replay=_Unseen(), now=HEADER["created"],
                           policy=POLICY)
    assert opened.message["type"] == "referral"
