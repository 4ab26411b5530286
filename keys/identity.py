"""A node's identity: its participant id, an Ed25519 signing key and an X25519 encryption key.

The two keys are generated independently and never converted one into the other (BRIEF §2):
a compromise of one algorithm's use does not spill into the other. Unlike
``caseway.protocol``, this package may draw randomness: it is where keys are born.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import nacl.utils

from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.encoding import b64encode
from caseway.protocol.envelope import Sender
from caseway.protocol.errors import CasewayError, ErrorCode


def generate_signing_key() -> SigningKeyPair:
    return SigningKeyPair(nacl.utils.random(32))


def generate_encryption_key() -> EncryptionKeyPair:
    return EncryptionKeyPair(nacl.utils.random(32))


@dataclass
class Identity:
    """What a node knows about itself. ``encryption_keys`` holds the current key first,
    then retired keys still inside their grace period (to open envelopes in flight)."""

    participant: str
    signing: SigningKeyPair
    encryption_keys: list[EncryptionKeyPair] = field(default_factory=list)

    @classmethod
    def generate(cls, participant: str) -> Identity:
        return cls(participant, generate_signing_key(), [generate_encryption_key()])

    @property
    def encryption(self) -> EncryptionKeyPair:
        """The current encryption key (the one peers should seal to)."""
        return self.encryption_keys[0]

    @property
    def sender(self) -> Sender:
        return Sender(self.participant, self.signing)

    def decryption_key(self, key_id: str) -> EncryptionKeyPair | None:
        for keypair in self.encryption_keys:
            if keypair.key_id == key_id:
                return keypair
        return None

    def public_keys(self) -> dict[str, str]:
        """Public-key serialisation: base64url of the raw 32-byte keys, with their key ids."""
        return {
            "signing_key": b64encode(self.signing.public_key),
            "signing_key_id": self.signing.key_id,
            "encryption_key": b64encode(self.encryption.public_key),
            "encryption_key_id": self.encryption.key_id,
        }


@dataclass(frozen=True)
class PublicKey:
    """A participant's public signing key with a validity window (Unix seconds).

    ``revoked_at`` set means: signatures made at or after that time are refused
    (``revoked_key``); those made before stay verifiable for audit.
    """

    participant: str
    public_key: bytes
    valid_from: int = 0
    valid_until: int | None = None
    revoked_at: int | None = None

    @property
    def key_id(self) -> str:
        from caseway.protocol.crypto import key_id

        return key_id(self.public_key)


class StaticKeys:
    """An in-memory :class:`~caseway.protocol.envelope.KeyResolver` over a fixed key list.

    Used by the vectors, the in-memory demo and tests; a node resolves through its signed
    trust directory instead (:mod:`caseway.keys.trust`).
    """

    def __init__(self, keys: Iterable[PublicKey] = ()):
        self._by_id: dict[tuple[str, str], PublicKey] = {}
        self._participants: set[str] = set()
        for key in keys:
            self.add(key)

    def add(self, key: PublicKey) -> None:
        self._by_id[(key.participant, key.key_id)] = key
        self._participants.add(key.participant)

    def add_identity(self, identity: Identity) -> None:
        self.add(PublicKey(identity.participant, identity.signing.public_key))

    def signing_key(self, participant: str, key_id: str, at: int) -> bytes:
        return resolve_signing_key(self._by_id.get((participant, key_id)),
                                   participant in self._participants, at)


def resolve_signing_key(key: PublicKey | None, participant_known: bool, at: int) -> bytes:
    """The validity rule shared by every resolver (SPEC.md "Key validity")."""
    if key is None:
        code = ErrorCode.UNKNOWN_KEY if participant_known else ErrorCode.UNKNOWN_SENDER
        raise CasewayError(code)
    if key.revoked_at is not None and at >= key.revoked_at:
        raise CasewayError(ErrorCode.REVOKED_KEY)
    if at < key.valid_from or (key.valid_until is not None and at >= key.valid_until):
        raise CasewayError(ErrorCode.UNKNOWN_KEY, "key not valid at the stated time")
    return key.public_key
