"""Small builders shared by envelope-layer tests (not a test module)."""

from __future__ import annotations

from dataclasses import dataclass, field

from caseway.keys.identity import Identity, StaticKeys
from caseway.protocol.envelope import (
    EnvelopeLayerOnly,
    OpenedEnvelope,
    SealedEnvelope,
    open_envelope,
    seal_envelope,
)

NOW = 1_768_435_200


@dataclass
class SeenIds:
    pairs: set[tuple[str, str]] = field(default_factory=set)

    def seen(self, sender: str, message_id: str) -> bool:
        return (sender, message_id) in self.pairs


@dataclass
class Pair:
    """Two fixed identities and a resolver that knows both: a fake wire between them."""

    alice: Identity
    bob: Identity
    keys: StaticKeys
    counter: int = 0

    @classmethod
    def fixed(cls) -> Pair:
        from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair

        alice = Identity("ph-embassy-kl", SigningKeyPair(bytes([1]) * 32),
                         [EncryptionKeyPair(bytes([2]) * 32)])
        bob = Identity("ph-shelter-manila", SigningKeyPair(bytes([3]) * 32),
                       [EncryptionKeyPair(bytes([4]) * 32)])
        keys = StaticKeys()
        keys.add_identity(alice)
        keys.add_identity(bob)
        return cls(alice, bob, keys)

    def seal(self, message: dict[str, object] | None = None, *, created: int = NOW,
             expires: int = NOW + 3600) -> SealedEnvelope:
        self.counter += 1
        return seal_envelope(
            message if message is not None else {"type": "note", "text": "hello"},
            sender=self.alice.sender, recipient=self.bob.participant,
            recipient_public_key=self.bob.encryption.public_key,
            message_id=self.counter.to_bytes(16, "big"), created=created, expires=expires,
            ephemeral_secret=bytes([self.counter % 256]) * 31 + b"\x01",
            policy=EnvelopeLayerOnly())

    def open(self, data: bytes, *, now: int = NOW, seen: SeenIds | None = None) -> OpenedEnvelope:
        return open_envelope(data, me=self.bob, keys=self.keys, replay=seen or SeenIds(), now=now,
                             policy=EnvelopeLayerOnly())
