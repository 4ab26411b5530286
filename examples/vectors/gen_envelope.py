"""Envelope-layer vectors (kind "envelope"): seal and open, positive and negative.

Every vector lists its inputs (seeds, secrets, ids, times, the keys the receiver knows, the
ids it has seen) and, where an envelope was built, the intermediate values: plaintext,
ephemeral public key, nonce, protected bytes, signing input, signature, digest. Negative
vectors are built by hand from the same pieces so that each fails at exactly one step.

The message layer is out of scope here (policy "envelope-layer-only": any JSON object is a
valid message); message-layer vectors are kind "message".
"""

from __future__ import annotations

import json
from typing import Any

import nacl.bindings as sodium

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json

from fixtures import (
    CREATED,
    EXPIRES,
    NOW,
    OTHER_SIGNING_SEED,
    PARTICIPANTS,
    ephemeral_secret,
    message_id,
)

SENDER, RECIPIENT = "ph-embassy-kl", "ph-shelter-manila"
MESSAGE = {"type": "note", "text": "Envelope-layer test message. Walang personal na datos."}


def keypairs(participant: str) -> tuple[crypto.SigningKeyPair, crypto.EncryptionKeyPair]:
    seed, secret = PARTICIPANTS[participant]
    return (crypto.SigningKeyPair(bytes.fromhex(seed)),
            crypto.EncryptionKeyPair(bytes.fromhex(secret)))


def known_key(participant: str, **validity: Any) -> dict[str, Any]:
    signing, _ = keypairs(participant)
    entry = {"participant": participant, "signing_public_key": b64encode(signing.public_key),
             "key_id": signing.key_id, "valid_from": 0, "valid_until": None, "revoked_at": None}
    entry.update(validity)
    return entry


def build(n: int, *, header: dict[str, Any] | None = None, inner: dict[str, Any] | None = None,
          message: Any = MESSAGE, signer: crypto.SigningKeyPair | None = None,
          recipient_public: bytes | None = None, raw_ephemeral_public: bytes | None = None,
          header_bytes: bytes | None = None, tamper: Any = None) -> dict[str, Any]:
    """Build an envelope step by step, exposing every intermediate value."""
    sender_signing, _ = keypairs(SENDER)
    _, recipient_enc = keypairs(RECIPIENT)
    signer = signer or sender_signing
    recipient_public = recipient_public or recipient_enc.public_key
    mid_hex, eph_hex = message_id(n), ephemeral_secret(n)
    mid = b64encode(bytes.fromhex(mid_hex))
    inner_obj = {"v": 1, "id": mid, "sender": SENDER, "recipient": RECIPIENT, "message": message}
    inner_obj.update(inner or {})
    plaintext = dump_json(inner_obj)
    eph_secret = bytes.fromhex(eph_hex)
    if raw_ephemeral_public is None:
        ciphertext = crypto.sealed_box_seal(plaintext, recipient_public, eph_secret)
    else:  # a malicious sender: put an arbitrary "ephemeral key" in front of junk
        ciphertext = raw_ephemeral_public + bytes(16) + plaintext
    eph_public = ciphertext[:32]
    header_obj = {"v": 1, "id": mid, "created": CREATED, "expires": EXPIRES, "sender": SENDER,
                  "sender_key": sender_signing.key_id, "recipient": RECIPIENT,
                  "recipient_key": crypto.key_id(recipient_public),
                  "ciphertext": b64encode(ciphertext)}
    header_obj.update(header or {})
    protected = header_bytes if header_bytes is not None else dump_json(header_obj)
    signing_input = crypto.ENVELOPE_LABEL + protected
    signature = signer.sign(crypto.ENVELOPE_LABEL, protected)
    outer: Any = {"protected": b64encode(protected), "signature": b64encode(signature)}
    if tamper is not None:
        outer = tamper(outer)
    envelope = outer if isinstance(outer, bytes) else dump_json(outer)
    if raw_ephemeral_public is None:
        shared: str | None = crypto.x25519(eph_secret, recipient_public).hex()
        box_key: str | None = sodium.crypto_box_beforenm(recipient_public, eph_secret).hex()
    else:  # no ephemeral secret behind a hand-made "ephemeral key"
        shared = box_key = None
    return {
        "inputs": {"message_id_hex": mid_hex, "ephemeral_secret_hex": eph_hex,
                   "created": CREATED, "expires": EXPIRES, "message": message,
                   "signer_seed_hex": signer.seed.hex()},
        "intermediate": {
            "plaintext": plaintext.decode("utf-8"),
            "ephemeral_public_key_hex": eph_public.hex(),
            "nonce_hex": crypto.seal_nonce(eph_public, recipient_public).hex(),
            "ciphertext_b64": b64encode(ciphertext),
            "protected": protected.decode("utf-8", "surrogateescape"),
            "protected_b64": b64encode(protected),
            "signing_input_hex": signing_input.hex(),
            "signature_hex": signature.hex(),
            # Added for debugging (issue 7); the fields above keep their meaning.
            "message_id_b64": mid,
            "plaintext_hex": plaintext.hex(),
            "plaintext_length": len(plaintext),
            "recipient_public_key_b64": b64encode(recipient_public),
            "recipient_key_id": crypto.key_id(recipient_public),
            "shared_secret_hex": shared,
            "box_key_hex": box_key,
            "mac_hex": ciphertext[32:48].hex(),
            "ciphertext_length": len(ciphertext),
            "signer_public_key": b64encode(signer.public_key),
            "signer_key_id": signer.key_id,
            "signature_b64": b64encode(signature),
        },
        "envelope": envelope.decode("utf-8"),
        "envelope_digest_hex": crypto.digest(envelope).hex(),
    }


def vector(name: str, description: str, built: dict[str, Any], expected: dict[str, Any], *,
           known: list[dict[str, Any]] | None = None, now: int = NOW,
           seen: list[list[str]] | None = None, operation: str = "open") -> dict[str, Any]:
    sender_signing, _ = keypairs(SENDER)
    _, recipient_enc = keypairs(RECIPIENT)
    inputs = {
        "operation": operation,
        "policy": "envelope-layer-only",
        "sender": {"participant": SENDER, "signing_seed_hex": PARTICIPANTS[SENDER][0],
                   "signing_public_key": b64encode(sender_signing.public_key),
                   "signing_key_id": sender_signing.key_id},
        "recipient": {"participant": RECIPIENT,
                      "encryption_secret_hex": PARTICIPANTS[RECIPIENT][1],
                      "encryption_public_key": b64encode(recipient_enc.public_key),
                      "encryption_key_id": recipient_enc.key_id},
        "known_keys": known if known is not None else [known_key(SENDER), known_key(RECIPIENT)],
        "seen": seen or [],
        "now": now,
    }
    inputs.update(built.pop("inputs"))
    if "envelope" in built:
        if "protected_b64" in built.get("intermediate", {}):
            built["intermediate"].update(_as_received(built))
        built.setdefault("intermediate", {})["envelope_length"] = len(built["envelope"]
                                                                     .encode())
    return {"name": name, "kind": "envelope", "description": description, "inputs": inputs,
            **built, "expected": expected, "spec": SPEC_STEPS.get(name, "§5.5")}


#: The SPEC.md step that decides each vector's expected result.
SPEC_STEPS = {
    "valid": "§5.4 (seal), §5.5 (open)", "valid-unicode-message": "§5.4 step 3, §5.5",
    "valid-signed-before-revocation": "§3 (key validity), §5.5 step 5",
    "bad-signature": "§5.5 step 6", "signature-by-another-key": "§5.5 step 6",
    "tampered-ciphertext": "§5.5 step 6", "tampered-header-expires": "§5.5 step 6",
    "ciphertext-broken-by-sender": "§5.5 step 10", "wrong-recipient-key": "§5.5 step 7",
    "wrong-recipient-participant": "§5.5 step 7", "inner-sender-mismatch": "§5.5 step 11",
    "inner-recipient-mismatch": "§5.5 step 11", "inner-id-mismatch": "§5.5 step 11",
    "expired": "§5.5 step 8", "expired-at-boundary": "§5.5 step 8",
    "not-yet-valid": "§2.5, §5.5 step 8", "clock-skew-allowed": "§2.5, §5.5 step 8",
    "replayed": "§5.5 step 9", "unsupported-version": "§5.5 step 3",
    "duplicate-key-outer": "§2.1 rule 3, §5.5 step 2",
    "duplicate-key-header": "§2.1 rule 3, §5.5 step 3",
    "padded-base64url": "§2.2, §5.5 step 2", "non-canonical-base64url": "§2.2, §5.5 step 2",
    "standard-base64-alphabet": "§2.2, §5.5 step 2",
    "float-in-header": "§2.1 rule 5, §5.5 step 3",
    "integer-out-of-range": "§2.1 rule 6, §5.5 step 3",
    "lone-surrogate": "§2.1 rule 7, §5.5 step 3", "header-missing-field": "§5.5 step 4a",
    "header-extra-field": "§5.5 step 4a", "unknown-sender": "§3, §5.5 step 5",
    "revoked-key": "§3, §5.5 step 5", "low-order-ephemeral-key": "§5.5 step 10",
    "zero-ephemeral-key": "§5.5 step 10", "seal-to-low-order-key": "§5.3",
    "oversize": "§2.5, §5.5 step 1",
}


def _as_received(built: dict[str, Any]) -> dict[str, Any]:
    """What an opener sees when the envelope was changed after signing: the envelope's own
    ``protected`` and ``signature`` values (the intermediate values above are those the
    signer produced)."""
    mine = {"protected": built["intermediate"]["protected_b64"],
            "signature": b64encode(bytes.fromhex(built["intermediate"]["signature_hex"]))}
    if built["envelope"].encode() == dump_json(mine):
        return {"tampered_after_signing": False}
    received: dict[str, Any] = {"protected_b64": None, "protected": None,
                                "signing_input_hex": None, "signature": None}
    try:
        outer = json.loads(built["envelope"])
    except ValueError:
        return {"tampered_after_signing": True, "received": received}
    if isinstance(outer, dict):
        received["protected_b64"] = outer.get("protected")
        received["signature"] = outer.get("signature")
        try:
            protected = b64decode(outer.get("protected"))
            received["protected"] = protected.decode("utf-8", "surrogateescape")
            received["signing_input_hex"] = (crypto.ENVELOPE_LABEL + protected).hex()
        except Exception:  # not canonical base64url: the opener stops at step 2
            pass
    return {"tampered_after_signing": True, "received": received}


def _edit_header(n: int, **changes: Any) -> dict[str, Any]:
    """Envelope whose protected header was edited after signing (signature kept)."""
    original = build(n)
    outer = json.loads(original["envelope"])
    header = json.loads(b64decode(outer["protected"]))
    header.update(changes)
    outer["protected"] = b64encode(dump_json(header))
    original["envelope"] = dump_json(outer).decode()
    original["envelope_digest_hex"] = crypto.digest(dump_json(outer)).hex()
    return original


def _flip_last_char(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


def generate() -> list[dict[str, Any]]:
    other_signer = crypto.SigningKeyPair(bytes.fromhex(OTHER_SIGNING_SEED))
    _, legal_enc = keypairs("ph-legal-cebu")
    low_order = bytes(32)  # the all-zero point has order 1 (small order): shared secret 0
    order8 = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    ok = {"result": "ok", "message": MESSAGE}
    vs = [
        vector("valid", "A valid envelope: seal is byte-for-byte reproducible and opens.",
               build(1), ok, operation="seal-and-open"),
        vector("valid-unicode-message", "Valid; the message holds non-ASCII text (Khmer, Thai).",
               build(2, message={"type": "note", "text": "សួស្តី สวัสดี"}),
               {"result": "ok", "message": {"type": "note", "text": "សួស្តី สวัสดี"}},
               operation="seal-and-open"),
        vector("valid-signed-before-revocation",
               "The sender's key was revoked after 'created': still verifiable (audit).",
               build(3), ok,
               known=[known_key(SENDER, revoked_at=CREATED + 1), known_key(RECIPIENT)]),
        vector("bad-signature", "Last signature byte changed.",
               build(4, tamper=lambda o: {**o, "signature": b64encode(
                   b64decode(o["signature"])[:-1] + bytes([b64decode(o["signature"])[-1] ^ 1]))}),
               {"error": "bad_signature"}),
        vector("signature-by-another-key",
               "Header names the embassy's key id, but another key signed.",
               build(5, signer=other_signer), {"error": "bad_signature"}),
        vector("tampered-ciphertext",
               "One ciphertext byte changed after signing: the signature covers it.",
               _tampered_ciphertext(6), {"error": "bad_signature"}),
        vector("ciphertext-broken-by-sender",
               "The sender signed a corrupted ciphertext: signature fine, decryption fails.",
               build(7, header={"ciphertext": b64encode(_corrupt(build(7)))}),
               {"error": "decrypt_failed"}),
        vector("tampered-header-expires", "'expires' moved later after signing.",
               _edit_header(8, expires=EXPIRES + 3600), {"error": "bad_signature"}),
        vector("wrong-recipient-key", "Sealed to a key this recipient does not hold.",
               build(9, recipient_public=legal_enc.public_key), {"error": "not_for_me"}),
        vector("wrong-recipient-participant", "Header and plaintext address another participant.",
               build(10, header={"recipient": "ph-legal-cebu"},
                     inner={"recipient": "ph-legal-cebu"}), {"error": "not_for_me"}),
        vector("inner-sender-mismatch",
               "Plaintext claims another sender than the signed header (forwarding defence).",
               build(11, inner={"sender": "ph-legal-cebu"}), {"error": "binding_mismatch"}),
        vector("inner-recipient-mismatch",
               "Plaintext was addressed to another participant and re-wrapped (surreptitious "
               "forwarding).", build(12, inner={"recipient": "ph-legal-cebu"}),
               {"error": "binding_mismatch"}),
        vector("inner-id-mismatch", "Plaintext carries another message id.",
               build(13, inner={"id": b64encode(bytes(16))}), {"error": "binding_mismatch"}),
        vector("expired", "Opened one second after 'expires'.", build(14), {"error": "expired"},
               now=EXPIRES + 1),
        vector("expired-at-boundary", "Opened exactly at 'expires' (now >= expires).",
               build(15), {"error": "expired"}, now=EXPIRES),
        vector("not-yet-valid", "'created' is 301 s ahead of the receiver's clock.",
               build(16), {"error": "not_yet_valid"}, now=CREATED - 301),
        vector("clock-skew-allowed", "'created' is 300 s ahead: within the allowed skew.",
               build(17), ok, now=CREATED - 300),
        vector("replayed", "The (sender, id) pair was already accepted.", build(18),
               {"error": "replayed"},
               seen=[[SENDER, b64encode(bytes.fromhex(message_id(18)))]]),
        vector("unsupported-version", "v = 2 in a validly signed header.",
               build(19, header={"v": 2}), {"error": "unsupported_version"}),
        vector("duplicate-key-outer", "The outer object repeats 'signature'.",
               build(20, tamper=lambda o: (
                   f'{{"protected":"{o["protected"]}","signature":"{o["signature"]}",'
                   f'"signature":"{o["signature"]}"}}').encode()),
               {"error": "malformed"}),
        vector("duplicate-key-header", "The signed header repeats 'recipient'.",
               build(21, header_bytes=dump_json(_header_dict(21))[:-1]
                     + b',"recipient":"ph-legal-cebu"}'), {"error": "malformed"}),
        vector("padded-base64url", "Signature base64url carries '=' padding.",
               build(22, tamper=lambda o: {**o, "signature": o["signature"] + "=="}),
               {"error": "bad_encoding"}),
        vector("non-canonical-base64url",
               "Signature's last character has non-zero unused bits.",
               build(23, tamper=lambda o: {**o, "signature": _set_unused_bit(o["signature"])}),
               {"error": "bad_encoding"}),
        vector("standard-base64-alphabet", "Protected uses '+' and '/' (not base64url).",
               build(24, tamper=lambda o: {**o, "protected": o["protected"].replace("-", "+")
                                           .replace("_", "/") + "+/"}),
               {"error": "bad_encoding"}),
        vector("float-in-header", "'created' written as 1768435140.0 in a signed header.",
               build(25, header_bytes=dump_json(_header_dict(25)).replace(
                   f'"created":{CREATED}'.encode(), f'"created":{CREATED}.0'.encode())),
               {"error": "malformed"}),
        vector("integer-out-of-range", "'expires' = 2^53 in a signed header.",
               build(26, header_bytes=dump_json(_header_dict(26)).replace(
                   f'"expires":{EXPIRES}'.encode(), b'"expires":9007199254740992')),
               {"error": "malformed"}),
        vector("lone-surrogate", "The signed header's 'sender' holds an escaped lone surrogate.",
               build(27, header_bytes=dump_json(_header_dict(27)).replace(
                   b'"sender":"ph-embassy-kl"', b'"sender":"\\ud800"')),
               {"error": "malformed"}),
        vector("header-missing-field", "The signed header lacks 'expires'.",
               build(28, header_bytes=dump_json({k: v for k, v in _header_dict(28).items()
                                                 if k != "expires"})),
               {"error": "header_invalid"}),
        vector("header-extra-field",
               "The signed header adds 'type' (message type belongs in the ciphertext).",
               build(29, header={"type": "referral"}), {"error": "header_invalid"}),
        vector("unknown-sender", "The receiver's directory does not list the sender.", build(30),
               {"error": "unknown_sender"}, known=[known_key(RECIPIENT)]),
        vector("revoked-key", "The sender's key was revoked before 'created'.", build(31),
               {"error": "revoked_key"},
               known=[known_key(SENDER, revoked_at=CREATED - 1), known_key(RECIPIENT)]),
        vector("low-order-ephemeral-key",
               "A signed envelope whose sealed box starts with a low-order X25519 point.",
               build(32, raw_ephemeral_public=order8), {"error": "weak_key"}),
        vector("zero-ephemeral-key",
               "A signed envelope whose sealed box starts with the all-zero X25519 point.",
               build(33, raw_ephemeral_public=low_order), {"error": "weak_key"}),
        vector("seal-to-low-order-key",
               "Sealing to a recipient 'public key' of low order is refused.",
               {"inputs": {"message_id_hex": message_id(34),
                           "ephemeral_secret_hex": ephemeral_secret(34),
                           "created": CREATED, "expires": EXPIRES, "message": MESSAGE,
                           "recipient_public_key_hex": order8.hex()},
                "intermediate": _refused_seal(34, order8)},
               {"error": "weak_key"}, operation="seal"),
        _oversize(),
    ]
    return vs


def _set_unused_bit(text: str) -> str:
    """Same decoded bytes, but the last character's unused low bit set: non-canonical."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) | 1]


def _header_dict(n: int) -> dict[str, Any]:
    outer = json.loads(build(n)["envelope"])
    header: dict[str, Any] = json.loads(b64decode(outer["protected"]))
    return header


def _corrupt(built: dict[str, Any]) -> bytes:
    ciphertext = bytearray(b64decode(built["intermediate"]["ciphertext_b64"]))
    ciphertext[40] ^= 0x01  # inside the Poly1305 tag
    return bytes(ciphertext)


def _tampered_ciphertext(n: int) -> dict[str, Any]:
    return _edit_header(n, ciphertext=b64encode(_corrupt(build(n))))


def _refused_seal(n: int, recipient_public: bytes) -> dict[str, Any]:
    """What sealing computes before it refuses: X25519(esk, low-order point) is all zero."""
    plaintext = dump_json({"v": 1, "id": b64encode(bytes.fromhex(message_id(n))),
                           "sender": SENDER, "recipient": RECIPIENT, "message": MESSAGE})
    eph_public = crypto.EncryptionKeyPair(bytes.fromhex(ephemeral_secret(n))).public_key
    return {"plaintext": plaintext.decode("utf-8"), "plaintext_hex": plaintext.hex(),
            "ephemeral_public_key_hex": eph_public.hex(),
            "nonce_hex": crypto.seal_nonce(eph_public, recipient_public).hex(),
            "shared_secret_hex": bytes(32).hex()}


def _oversize() -> dict[str, Any]:
    from caseway.protocol.envelope import MAX_ENVELOPE_BYTES

    signature = b64encode(bytes(64))
    filler = MAX_ENVELOPE_BYTES + 1 - len('{"protected":"","signature":""}') - len(signature)
    envelope = f'{{"protected":"{"A" * filler}","signature":"{signature}"}}'
    return vector("oversize", f"{MAX_ENVELOPE_BYTES + 1} bytes: refused before parsing.",
                  {"inputs": {}, "envelope": envelope}, {"error": "too_large"})
