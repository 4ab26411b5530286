"""Case contents at rest: encrypted with the node storage key, bound to their row.

Rules of this module (SPEC.md "Node storage"):

1. Decrypted case contents never reach the disk in plaintext. They are sealed with
   XChaCha20-Poly1305 (IETF) under the node's 32-byte storage key, which lives only in the
   keystore. The 24-byte nonce is random, so two equal messages give unrelated blobs.
2. The row's identity is the associated data. A blob copied into another row (another
   case, another message, the other direction) fails to open: someone with write access
   to the database file cannot move a survivor's data into a different case unnoticed.
3. A failure to open is :class:`StorageCipherError` naming no data; it means the database
   was tampered with or opened with another node's key.

Blob layout: ``0x01 || nonce (24) || ciphertext+tag``. The leading byte is the format
version so a later key rotation can tell generations apart.
"""

from __future__ import annotations

import nacl.bindings as sodium
import nacl.exceptions

from caseway.protocol.encoding import dump_json

STORAGE_KEY_BYTES = 32
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
FORMAT = b"\x01"
CONTENT_LABEL = b"caseway/v1 case-content\x00"


class StorageCipherError(Exception):
    """A stored blob did not open: tampered, moved to another row, or another key."""


def content_row_id(direction: str, peer: str, message_id: str, case_id: str) -> bytes:
    """The associated data binding a blob to its row (rule 2)."""
    return CONTENT_LABEL + dump_json([direction, peer, message_id, case_id])


class StorageCipher:
    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != STORAGE_KEY_BYTES:
            raise ValueError("storage key must be 32 bytes")
        self._key = key

    def seal(self, plaintext: bytes, *, row_id: bytes, nonce: bytes) -> bytes:
        if len(nonce) != NONCE_BYTES:
            raise ValueError("storage nonce must be 24 bytes")
        box = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, row_id, nonce,
                                                                 self._key)
        return FORMAT + nonce + bytes(box)

    def open(self, blob: bytes, *, row_id: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT:
            raise StorageCipherError("stored content has an unknown format")
        nonce, box = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:]
        try:
            return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(box, row_id, nonce,
                                                                            self._key))
        except nacl.exceptions.CryptoError:
            raise StorageCipherError("stored content does not open for this row") from None

    def __repr__(self) -> str:  # never print key material
        return "StorageCipher(<key>)"
