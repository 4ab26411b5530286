"""The vectors describe themselves: every input, every intermediate value an implementer
needs to debug, and an index entry saying what to do and what to expect (issue 7).

``test_vectors.py`` checks that the implementation agrees with the vectors; this file checks
that the vectors are *complete* and that each intermediate value is what its name says, so
another stack can compare its own values step by step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import pytest

from caseway.node.commands.vectors import load_vectors
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode

ROOT = Path(__file__).parent.parent / "examples" / "vectors"
VECTORS = load_vectors(ROOT)
INDEX = json.loads((ROOT / "index.json").read_text("utf-8"))
IDS = [str(p.relative_to(ROOT)) for p, _ in VECTORS]

#: Fields every vector of a kind must have (dotted paths).
REQUIRED = {
    "envelope": ["inputs.operation", "inputs.policy", "inputs.sender.participant",
                 "inputs.sender.signing_seed_hex", "inputs.recipient.participant",
                 "inputs.recipient.encryption_secret_hex", "inputs.known_keys", "inputs.seen",
                 "inputs.now"],
    "receipt": ["inputs.operation", "inputs.signer.participant",
                "inputs.signer.signing_seed_hex", "inputs.fields.message_id",
                "inputs.fields.envelope_digest_hex", "inputs.fields.sender",
                "inputs.fields.received_at", "inputs.fields.error",
                "inputs.expected_recipient", "inputs.expected_envelope_digest_hex", "receipt",
                "intermediate.protected", "intermediate.protected_b64",
                "intermediate.signing_input_hex", "intermediate.signature_hex",
                "digest_sources"],
    "directory": ["inputs.pinned_authority_keys", "inputs.pinned_authority_key_ids",
                  "inputs.held_serial", "inputs.now", "inputs.grace_seconds",
                  "inputs.directory", "intermediate.protected_b64",
                  "intermediate.protected_text", "intermediate.signing_input_hex",
                  "intermediate.signature_b64", "intermediate.signature_hex",
                  "intermediate.authority_chain"],
    "message": ["inputs.sender", "inputs.recipient", "inputs.sender_signing_seed",
                "inputs.sender_signing_public_key", "inputs.recipient_encryption_secret",
                "inputs.recipient_encryption_public_key", "inputs.message_id",
                "inputs.message_id_b64", "inputs.ephemeral_secret", "inputs.created",
                "inputs.expires", "inputs.now", "inputs.directory", "inputs.consent_state",
                "inputs.message", "envelope", "intermediate.plaintext",
                "intermediate.protected", "intermediate.ephemeral_public_key_hex",
                "intermediate.nonce_hex", "intermediate.shared_secret_hex",
                "intermediate.box_key_hex", "intermediate.mac_hex",
                "intermediate.signing_input_hex", "intermediate.signature_hex",
                "intermediate.envelope_digest_hex"],
}
#: An envelope vector built by sealing (all but the oversize and refused-seal ones).
SEALED_ENVELOPE = ["inputs.message_id_hex", "inputs.ephemeral_secret_hex", "inputs.created",
                   "inputs.expires", "inputs.message", "inputs.signer_seed_hex", "envelope",
                   "envelope_digest_hex", "intermediate.message_id_b64",
                   "intermediate.plaintext", "intermediate.plaintext_hex",
                   "intermediate.ephemeral_public_key_hex", "intermediate.nonce_hex",
                   "intermediate.shared_secret_hex", "intermediate.box_key_hex",
                   "intermediate.mac_hex", "intermediate.ciphertext_b64",
                   "intermediate.recipient_public_key_b64", "intermediate.protected",
                   "intermediate.protected_b64", "intermediate.signing_input_hex",
                   "intermediate.signature_hex", "intermediate.signer_public_key",
                   "intermediate.tampered_after_signing", "intermediate.envelope_length"]


def _get(vector: dict[str, Any], path: str) -> Any:
    value: Any = vector
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _missing(vector: dict[str, Any], paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        try:
            _get(vector, path)
        except KeyError:
            out.append(path)
    return out


@pytest.mark.parametrize(("path", "vector"), VECTORS, ids=IDS)
def test_every_vector_lists_its_inputs_and_intermediates(path: Path, vector: dict[str, Any]
                                                         ) -> None:
    kind = vector["kind"]
    required = ["name", "kind", "description", "expected", "spec", *REQUIRED[kind]]
    if kind == "envelope":
        operation = vector["inputs"]["operation"]
        if operation == "seal":
            required += ["inputs.message_id_hex", "inputs.ephemeral_secret_hex",
                         "inputs.message", "intermediate.plaintext",
                         "intermediate.shared_secret_hex"]
        elif "message_id_hex" in vector["inputs"]:
            required += SEALED_ENVELOPE
        else:  # refused before parsing: only the bytes matter
            required += ["envelope", "intermediate.envelope_length"]
    assert _missing(vector, required) == []
    assert vector["name"] == path.stem and vector["description"].strip()
    expected = vector["expected"]
    assert ("error" in expected) != (expected.get("result") == "ok"), expected


def test_the_index_describes_every_vector_and_kind() -> None:
    by_file = {entry["file"]: entry for entry in INDEX["vectors"]}
    assert set(by_file) == set(IDS)
    for path, vector in VECTORS:
        entry = by_file[str(path.relative_to(ROOT))]
        assert entry["kind"] == vector["kind"] and entry["name"] == vector["name"]
        assert entry["description"] == vector["description"]
        assert entry["expected"] == vector["expected"]
        assert entry["spec"] == vector["spec"] and entry["spec"].startswith("§")
        assert entry["operation"] in INDEX["kinds"][vector["kind"]]["operations"]
    for kind in {v["kind"] for _, v in VECTORS}:
        described = INDEX["kinds"][kind]
        assert described["spec"] and described["fields"] and described["intermediate"]


# ----------------------------------------------------------------------------- consistency


def _envelopes() -> list[tuple[str, dict[str, Any]]]:
    return [(i, v) for i, (_, v) in zip(IDS, VECTORS, strict=True)
            if v["kind"] == "envelope" and "signing_input_hex" in v.get("intermediate", {})]


@pytest.mark.parametrize(("name", "vector"), _envelopes(), ids=[n for n, _ in _envelopes()])
def test_envelope_intermediates_are_what_they_say(name: str, vector: dict[str, Any]) -> None:
    inputs, mid = vector["inputs"], vector["intermediate"]
    plaintext = bytes.fromhex(mid["plaintext_hex"])
    assert plaintext == mid["plaintext"].encode("utf-8") and mid["plaintext_length"] == \
        len(plaintext)
    assert mid["message_id_b64"] == b64encode(bytes.fromhex(inputs["message_id_hex"]))
    ciphertext = b64decode(mid["ciphertext_b64"])
    epk = bytes.fromhex(mid["ephemeral_public_key_hex"])
    rpk = b64decode(mid["recipient_public_key_b64"], length=32)
    assert ciphertext[:32] == epk and ciphertext[32:48].hex() == mid["mac_hex"]
    assert bytes.fromhex(mid["nonce_hex"]) == hashlib.blake2b(epk + rpk, digest_size=24).digest()
    if mid["shared_secret_hex"] is not None:  # sealed with the listed ephemeral secret
        esk = bytes.fromhex(inputs["ephemeral_secret_hex"])
        assert sodium.crypto_scalarmult_base(esk) == epk
        assert sodium.crypto_scalarmult(esk, rpk).hex() == mid["shared_secret_hex"]
        box = sodium.crypto_box_afternm(plaintext, bytes.fromhex(mid["nonce_hex"]),
                                        bytes.fromhex(mid["box_key_hex"]))
        assert epk + box == ciphertext
    protected = b64decode(mid["protected_b64"])
    assert protected.decode("utf-8", "surrogateescape") == mid["protected"]
    assert bytes.fromhex(mid["signing_input_hex"]) == crypto.ENVELOPE_LABEL + protected
    signer = crypto.SigningKeyPair(bytes.fromhex(inputs["signer_seed_hex"]))
    assert b64encode(signer.public_key) == mid["signer_public_key"]
    crypto.verify(signer.public_key, crypto.ENVELOPE_LABEL, protected,
                  bytes.fromhex(mid["signature_hex"]))
    envelope = vector["envelope"].encode("utf-8")
    assert crypto.digest(envelope).hex() == vector["envelope_digest_hex"]
    assert mid["envelope_length"] == len(envelope)
    signed = json.dumps({"protected": mid["protected_b64"], "signature": b64encode(
        bytes.fromhex(mid["signature_hex"]))}, separators=(",", ":")).encode()
    assert mid["tampered_after_signing"] == (envelope != signed)
    if mid["tampered_after_signing"]:
        assert "received" in mid


def test_receipt_intermediates_are_what_they_say() -> None:
    for _, vector in VECTORS:
        if vector["kind"] != "receipt":
            continue
        mid = vector["intermediate"]
        protected = b64decode(mid["protected_b64"])
        assert protected.decode() == mid["protected"]
        assert bytes.fromhex(mid["signing_input_hex"]) == crypto.RECEIPT_LABEL + protected
        assert b64decode(mid["signature_b64"]).hex() == mid["signature_hex"]
        sources = vector["digest_sources"]
        for path, text in sources.items():
            assert text is not None, path
            assert crypto.digest(text.encode()).hex() == _get(vector, path)


def test_directory_and_message_intermediates_are_what_they_say() -> None:
    for _, vector in VECTORS:
        mid = vector.get("intermediate", {})
        if vector["kind"] == "directory":
            for statement in mid["authority_chain"]:
                raw = statement["protected_text"].encode()
                assert bytes.fromhex(statement["signing_input_hex"]) == \
                    crypto.AUTHORITY_SUCCESSOR_LABEL + raw
        elif vector["kind"] == "message":
            inputs = vector["inputs"]
            esk = bytes.fromhex(inputs["ephemeral_secret"])
            epk = bytes.fromhex(mid["ephemeral_public_key_hex"])
            rpk = b64decode(inputs["recipient_encryption_public_key"], length=32)
            assert sodium.crypto_scalarmult_base(esk) == epk
            assert bytes.fromhex(mid["nonce_hex"]) == \
                hashlib.blake2b(epk + rpk, digest_size=24).digest()
            protected = mid["protected"].encode("utf-8")
            assert bytes.fromhex(mid["signing_input_hex"]) == crypto.ENVELOPE_LABEL + protected
            crypto.verify(b64decode(inputs["sender_signing_public_key"], length=32),
                          crypto.ENVELOPE_LABEL, protected, bytes.fromhex(mid["signature_hex"]))
            assert crypto.digest(vector["envelope"].encode()).hex() == \
                mid["envelope_digest_hex"]
