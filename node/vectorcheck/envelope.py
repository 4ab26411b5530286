"""Check an envelope vector: re-seal from its inputs (byte-for-byte) and/or open it."""

from __future__ import annotations

from typing import Any

from caseway.keys.identity import Identity, PublicKey, StaticKeys
from caseway.node.vectorcheck import VectorMismatch, expect_outcome
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.encoding import b64decode
from caseway.protocol.envelope import EnvelopeLayerOnly, Sender, open_envelope, seal_envelope


class SeenSet:
    def __init__(self, pairs: list[list[str]]):
        self._pairs = {(sender, mid) for sender, mid in pairs}

    def seen(self, sender: str, message_id: str) -> bool:
        return (sender, message_id) in self._pairs


def resolver(known: list[dict[str, Any]]) -> StaticKeys:
    return StaticKeys(
        PublicKey(k["participant"], b64decode(k["signing_public_key"], length=32),
                  k["valid_from"], k["valid_until"], k["revoked_at"]) for k in known)


def seal_from_inputs(vector: dict[str, Any]) -> bytes:
    inputs = vector["inputs"]
    signing = SigningKeyPair(bytes.fromhex(inputs["sender"]["signing_seed_hex"]))
    if "recipient_public_key_hex" in inputs:
        public = bytes.fromhex(inputs["recipient_public_key_hex"])
    else:
        public = b64decode(inputs["recipient"]["encryption_public_key"], length=32)
    sealed = seal_envelope(
        inputs["message"], sender=Sender(inputs["sender"]["participant"], signing),
        recipient=inputs["recipient"]["participant"], recipient_public_key=public,
        message_id=bytes.fromhex(inputs["message_id_hex"]), created=inputs["created"],
        expires=inputs["expires"], ephemeral_secret=bytes.fromhex(inputs["ephemeral_secret_hex"]),
        policy=EnvelopeLayerOnly())
    return sealed.data


def check(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    operation = inputs["operation"]
    if operation in ("seal", "seal-and-open"):
        data = expect_outcome(vector, lambda: seal_from_inputs(vector))
        if operation == "seal":
            return
        if data != vector["envelope"].encode("utf-8"):
            raise VectorMismatch("re-sealing from the inputs gave different bytes")
    recipient = inputs["recipient"]
    me = Identity(recipient["participant"], SigningKeyPair(bytes(32)),
                  [EncryptionKeyPair(bytes.fromhex(recipient["encryption_secret_hex"]))])
    opened = expect_outcome(vector, lambda: open_envelope(
        vector["envelope"].encode("utf-8"), me=me, keys=resolver(inputs["known_keys"]),
        replay=SeenSet(inputs["seen"]), now=inputs["now"], policy=EnvelopeLayerOnly()))
    if opened is not None:
        if opened.message != vector["expected"]["message"]:
            raise VectorMismatch("opened message differs from the expected message")
        if opened.digest.hex() != vector["envelope_digest_hex"]:
            raise VectorMismatch("envelope digest differs")
