"""Checker for ``kind: directory`` vectors (see ``examples/vectors/gen_directory.py``)."""

from __future__ import annotations

import json
from typing import Any

from caseway.keys.directory import Directory
from caseway.keys.trust import TrustStore
from caseway.node.vectorcheck import VectorMismatch, expect_outcome
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode


def check(vector: dict[str, Any]) -> None:
    inputs, intermediate = vector["inputs"], vector["intermediate"]
    data = inputs["directory"].encode("ascii")
    outer = json.loads(data)
    if outer["protected"] != intermediate["protected_b64"]:
        raise VectorMismatch("protected_b64 differs from the directory's protected field")
    protected = b64decode(intermediate["protected_b64"])
    if protected.decode("utf-8") != intermediate["protected_text"]:
        raise VectorMismatch("protected_text differs from the decoded protected bytes")
    if (crypto.DIRECTORY_LABEL + protected).hex() != intermediate["signing_input_hex"]:
        raise VectorMismatch("signing input differs from DIRECTORY_LABEL || protected")
    if "signer_seed" in inputs:
        signer = crypto.SigningKeyPair(bytes.fromhex(inputs["signer_seed"]))
        if b64encode(signer.public_key) != intermediate["signer_public_key"]:
            raise VectorMismatch("signer public key does not match its seed")
        if signer.key_id != intermediate["signer_key_id"]:
            raise VectorMismatch("signer key id does not match the public key")
        # Ed25519 is deterministic: an untampered vector's signature is reproducible.
        if vector["expected"].get("error") != "bad_signature":
            resigned = signer.sign(crypto.DIRECTORY_LABEL, protected)
            if b64encode(resigned) != intermediate["signature_b64"]:
                raise VectorMismatch("signature differs from a fresh signature by the signer")

    store = TrustStore([b64decode(k, length=32) for k in inputs["pinned_authority_keys"]],
                       grace_seconds=inputs["grace_seconds"],
                       held_serial=inputs["held_serial"])
    directory: Directory | None = expect_outcome(vector, lambda: store.load(data,
                                                                            inputs["now"]))
    if directory is None:
        return
    expected = vector["expected"]
    got = {"serial": directory.serial,
           "participants": [p.id for p in directory.participants],
           "expired_warning": store.expired_warning}
    for key, value in got.items():
        if expected.get(key) != value:
            raise VectorMismatch(f"{key}: expected {expected.get(key)!r}, got {value!r}")
