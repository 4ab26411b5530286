"""Checker for ``kind: message`` vectors (``examples/vectors/message/``).

For each vector: re-seal the message from the listed inputs without the message policy and
require the exact envelope bytes (so every intermediate value is pinned); then seal *with*
:class:`~caseway.protocol.policy.ReferralPolicy` (the sender's refusal) and open with it
(the receiver's refusal), applying the lifecycle transition when the vector gives a prior
thread state. Both sides must reach ``expected``: the same error code and section, or the
same message and next thread state.
"""

from __future__ import annotations

import json
from typing import Any

from caseway.keys.identity import PublicKey, StaticKeys
from caseway.node.vectorcheck import VectorMismatch
from caseway.protocol.consent import ConsentRecord
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair, sealed_box_open
from caseway.protocol.encoding import b64decode
from caseway.protocol.envelope import (
    EnvelopeLayerOnly,
    MessagePolicy,
    Sender,
    open_envelope,
    seal_envelope,
)
from caseway.protocol.errors import CasewayError
from caseway.protocol.lifecycle import Role, ThreadState
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy, StaticSectors


class _Me:
    def __init__(self, participant: str, keypair: EncryptionKeyPair):
        self.participant = participant
        self._keypair = keypair

    def decryption_key(self, key_id: str) -> EncryptionKeyPair | None:
        return self._keypair if key_id == self._keypair.key_id else None


class _NothingSeen:
    def seen(self, sender: str, message_id: str) -> bool:
        return False


def _policy(inputs: dict[str, Any]) -> ReferralPolicy:
    state = InMemoryConsentState()
    for thread_id, record in inputs["consent_state"]["threads"].items():
        state.record_thread(thread_id, ConsentRecord.from_json(record))
    for consent_id in inputs["consent_state"]["withdrawn"]:
        state.withdraw(consent_id)
    return ReferralPolicy(StaticSectors(inputs["directory"]), state)


def _seal(inputs: dict[str, Any], policy: MessagePolicy) -> bytes:
    signing = SigningKeyPair(bytes.fromhex(inputs["sender_signing_seed"]))
    recipient = EncryptionKeyPair(bytes.fromhex(inputs["recipient_encryption_secret"]))
    return seal_envelope(
        inputs["message"], sender=Sender(inputs["sender"], signing),
        recipient=inputs["recipient"], recipient_public_key=recipient.public_key,
        message_id=bytes.fromhex(inputs["message_id"]), created=inputs["created"],
        expires=inputs["expires"], ephemeral_secret=bytes.fromhex(inputs["ephemeral_secret"]),
        policy=policy).data


def _apply(inputs: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"result": "ok", "message": message}
    if "thread" in inputs:
        prior = ThreadState.from_json(inputs["thread"]["prior"])
        result["thread"] = prior.apply(message, role=Role(inputs["thread"]["role"])).to_json()
    return result


def _outcome(action: Any) -> dict[str, Any]:
    try:
        return dict(action())
    except CasewayError as exc:
        error: dict[str, Any] = {"error": exc.code.value}
        if exc.section is not None:
            error["section"] = exc.section
        return error


def check(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    # 1. The bytes: deterministic sealing reproduces the envelope and its intermediates.
    data = _seal(inputs, EnvelopeLayerOnly())
    if data != vector["envelope"].encode("utf-8"):
        raise VectorMismatch("re-sealed envelope bytes differ")
    protected = b64decode(json.loads(data)["protected"], field="protected")
    if protected != vector["intermediate"]["protected"].encode("utf-8"):
        raise VectorMismatch("protected header bytes differ")
    recipient_key = EncryptionKeyPair(bytes.fromhex(inputs["recipient_encryption_secret"]))
    ciphertext = b64decode(json.loads(protected)["ciphertext"], field="ciphertext")
    if sealed_box_open(ciphertext, recipient_key) != \
            vector["intermediate"]["plaintext"].encode("utf-8"):
        raise VectorMismatch("plaintext bytes differ")

    # 2. The sender's side: seal with the policy, then apply the transition.
    def seal_side() -> dict[str, Any]:
        _seal(inputs, _policy(inputs))
        return _apply(inputs, inputs["message"])

    # 3. The receiver's side: open with the policy, then apply the transition.
    def open_side() -> dict[str, Any]:
        signing = SigningKeyPair(bytes.fromhex(inputs["sender_signing_seed"]))
        opened = open_envelope(
            data, me=_Me(inputs["recipient"], recipient_key),
            keys=StaticKeys([PublicKey(inputs["sender"], signing.public_key)]),
            replay=_NothingSeen(), now=inputs["now"], policy=_policy(inputs))
        return _apply(inputs, opened.message)

    for side, action in (("seal", seal_side), ("open", open_side)):
        got = _outcome(action)
        if got != expected:
            shown = {k: v for k, v in got.items() if k != "message"}
            raise VectorMismatch(f"{side}: expected {_brief(expected)}, got {shown}")


def _brief(expected: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in expected.items() if k != "message"}
