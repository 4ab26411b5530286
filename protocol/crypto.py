"""The v1 suite: Ed25519 signatures with domain-separation labels, libsodium sealed boxes to
X25519 keys, BLAKE2b digests and key ids. Every libsodium failure becomes a CasewayError.

Rules of this module:

1. A signature is always over ``label || bytes``; labels are distinct per document kind so a
   signature made for one kind can never be replayed as another (SPEC.md "Signatures").
2. Randomness is an argument. The sealed box is computed the way libsodium's
   ``crypto_box_seal`` does it, but with the ephemeral secret passed in, so vectors are
   exact; a real sender passes 32 fresh random bytes.
3. Low-order X25519 points and all-zero shared secrets are ``weak_key``, never a
   library RuntimeError.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import nacl.exceptions

from .encoding import b64encode
from .errors import CasewayError, ErrorCode

ENVELOPE_LABEL = b"caseway/v1 envelope\x00"
RECEIPT_LABEL = b"caseway/v1 receipt\x00"
DIRECTORY_LABEL = b"caseway/v1 directory\x00"
AUTHORITY_SUCCESSOR_LABEL = b"caseway/v1 authority-successor\x00"

PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64
SEAL_OVERHEAD = 48  # 32-byte ephemeral public key + 16-byte Poly1305 tag
KEY_ID_BYTES = 16
DIGEST_BYTES = 32


def key_id(public_key: bytes) -> str:
    """Key id = base64url(BLAKE2b-128(public key)): 22 characters (SPEC.md "Key ids")."""
    return b64encode(hashlib.blake2b(public_key, digest_size=KEY_ID_BYTES).digest())


def digest(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data``: envelope digests in receipts, audit chains, attachments."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


class SigningKeyPair:
    """An Ed25519 key pair kept as its 32-byte seed (the 64-byte libsodium secret key is
    derived once here and never stored)."""

    __slots__ = ("_secret", "key_id", "public_key", "seed")

    def __init__(self, seed: bytes):
        if len(seed) != SEED_BYTES:
            raise CasewayError(ErrorCode.BAD_ENCODING, "signing seed must be 32 bytes")
        self.seed = seed
        self.public_key, self._secret = sodium.crypto_sign_seed_keypair(seed)
        self.key_id = key_id(self.public_key)

    def sign(self, label: bytes, data: bytes) -> bytes:
        signed = sodium.crypto_sign(label + data, self._secret)
        return bytes(signed[:SIGNATURE_BYTES])

    def __repr__(self) -> str:  # never print secret material
        return f"SigningKeyPair(key_id={self.key_id!r})"


class EncryptionKeyPair:
    """An X25519 key pair for receiving sealed boxes. Never derived from the signing key."""

    __slots__ = ("key_id", "public_key", "secret")

    def __init__(self, secret: bytes):
        if len(secret) != 32:
            raise CasewayError(ErrorCode.BAD_ENCODING, "encryption secret must be 32 bytes")
        self.secret = secret
        self.public_key = sodium.crypto_scalarmult_base(secret)
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"EncryptionKeyPair(key_id={self.key_id!r})"


def verify(public_key: bytes, label: bytes, data: bytes, signature: bytes) -> None:
    """Raise ``bad_signature`` unless ``signature`` is a valid Ed25519 signature over
    ``label || data``. libsodium's verifier rejects non-canonical S, small-order and
    non-canonical public keys (SPEC.md "Signature verification")."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise CasewayError(ErrorCode.BAD_SIGNATURE, "wrong key or signature length")
    try:
        sodium.crypto_sign_open(signature + label + data, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.RuntimeError,
            nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise CasewayError(ErrorCode.BAD_SIGNATURE) from None


def x25519(secret: bytes, public_key: bytes) -> bytes:
    """Raw X25519. Low-order points (all-zero result) raise ``weak_key``."""
    if len(secret) != 32 or len(public_key) != PUBLIC_KEY_BYTES:
        raise CasewayError(ErrorCode.BAD_ENCODING, "X25519 keys are 32 bytes")
    try:
        return bytes(sodium.crypto_scalarmult(secret, public_key))
    except nacl.exceptions.RuntimeError:
        raise CasewayError(ErrorCode.WEAK_KEY) from None


def seal_nonce(ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    """The sealed-box nonce: BLAKE2b-192(ephemeral pk || recipient pk), as libsodium does."""
    return hashlib.blake2b(ephemeral_public + recipient_public, digest_size=24).digest()


def sealed_box_seal(plaintext: bytes, recipient_public: bytes, ephemeral_secret: bytes) -> bytes:
    """libsodium ``crypto_box_seal`` with the ephemeral secret passed in.

    Output: ephemeral pk (32) || XSalsa20-Poly1305 box (16-byte tag + ciphertext).
    """
    if len(recipient_public) != PUBLIC_KEY_BYTES or len(ephemeral_secret) != 32:
        raise CasewayError(ErrorCode.BAD_ENCODING, "X25519 keys are 32 bytes")
    ephemeral_public = sodium.crypto_scalarmult_base(ephemeral_secret)
    nonce = seal_nonce(ephemeral_public, recipient_public)
    try:
        box = sodium.crypto_box(plaintext, nonce, recipient_public, ephemeral_secret)
    except nacl.exceptions.RuntimeError:
        # libsodium refuses a recipient key whose shared secret would be all zero.
        raise CasewayError(ErrorCode.WEAK_KEY, "recipient encryption key is of low order") from None
    return bytes(ephemeral_public) + bytes(box)


def sealed_box_open(ciphertext: bytes, keypair: EncryptionKeyPair) -> bytes:
    """Open a sealed box; ``weak_key`` for a low-order ephemeral key, else ``decrypt_failed``."""
    if len(ciphertext) < SEAL_OVERHEAD:
        raise CasewayError(ErrorCode.BAD_ENCODING, "ciphertext shorter than 48 bytes")
    try:
        return bytes(sodium.crypto_box_seal_open(ciphertext, keypair.public_key, keypair.secret))
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError):
        pass
    # Only on the failure path (no cost to honest traffic): say *why* it failed.
    x25519(keypair.secret, ciphertext[:32])  # raises weak_key for a low-order point
    raise CasewayError(ErrorCode.DECRYPT_FAILED)
