"""Project Wycheproof Ed25519 and X25519 vectors through Caseway's own functions.

Policy (SPEC.md "Signature verification", "X25519"): every Ed25519 `valid` case verifies and
every `invalid` case is rejected with bad_signature. For X25519, every case libsodium refuses
(low-order public key, all-zero shared secret) is the typed weak_key error; every case it
computes must equal Wycheproof's shared secret, including the `acceptable` ones
(non-canonical public keys, twist points), which v1 accepts as libsodium does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from caseway.protocol import crypto
from caseway.protocol.errors import CasewayError, ErrorCode

DATA = Path(__file__).parent / "data" / "wycheproof"


def _cases(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    doc = json.loads((DATA / name).read_text())
    return [(group, case) for group in doc["testGroups"] for case in group["tests"]]


ED25519 = _cases("ed25519_test.json")
X25519 = _cases("x25519_test.json")


@pytest.mark.parametrize(("group", "case"), ED25519, ids=[f"tc{c['tcId']}" for _, c in ED25519])
def test_ed25519(group: dict[str, Any], case: dict[str, Any]) -> None:
    public = bytes.fromhex(group["publicKey"]["pk"])
    message, signature = bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
    # Caseway signs label || data; an empty label verifies the raw Wycheproof message.
    if case["result"] == "valid":
        crypto.verify(public, b"", message, signature)
    else:
        with pytest.raises(CasewayError) as info:
            crypto.verify(public, b"", message, signature)
        assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_ed25519_covers_both_outcomes() -> None:
    results = {case["result"] for _, case in ED25519}
    assert results == {"valid", "invalid"} and len(ED25519) > 100


@pytest.mark.parametrize(("group", "case"), X25519, ids=[f"tc{c['tcId']}" for _, c in X25519])
def test_x25519(group: dict[str, Any], case: dict[str, Any]) -> None:
    private, public = bytes.fromhex(case["private"]), bytes.fromhex(case["public"])
    shared = bytes.fromhex(case["shared"])
    if shared == bytes(32):
        # libsodium refuses these (low-order point): must be typed, never RuntimeError.
        with pytest.raises(CasewayError) as info:
            crypto.x25519(private, public)
        assert info.value.code is ErrorCode.WEAK_KEY
        assert {"LowOrderPublic", "ZeroSharedSecret"} & set(case["flags"])
    else:
        assert crypto.x25519(private, public) == shared


def test_x25519_low_order_cases_are_present() -> None:
    weak = [c for _, c in X25519 if bytes.fromhex(c["shared"]) == bytes(32)]
    assert len(weak) >= 10
