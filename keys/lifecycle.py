"""Key lifecycle on the node's side: rotation, the grace period, destruction of retired
encryption private keys, and the public key entries a node hands to its directory authority.

Rules of this module (SPEC.md "Key lifecycle"):

1. Rotation adds a new key and makes it current at once; the old encryption key is
   *retired*: peers stop sealing to it, but the node keeps its private key for
   :data:`ENCRYPTION_GRACE_SECONDS` so envelopes already sealed to it (in outboxes, retried
   for up to their 30-day lifetime) still open.
2. After the grace period the retired private key is destroyed: removed from the keystore,
   which is rewritten atomically. An envelope sealed to it afterwards fails with
   ``not_for_me`` ("not a key this node holds"). A node seized later cannot decrypt traffic
   older than the grace period, even with the passphrase (bounded exposure).
3. Signing keys need no grace on the node: the old seed is dropped at rotation. Its public
   key stays in the directory (status ``retired``, ``valid_until`` = rotation time) so
   signatures made before rotation remain verifiable.
4. Times are Unix seconds passed in by the caller; randomness is drawn here only when no
   key material is passed in (tests and vectors pass it).
"""

from __future__ import annotations

from typing import Any

from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.encoding import b64encode
from caseway.protocol.envelope import MAX_LIFETIME

from .identity import generate_encryption_key, generate_signing_key
from .keystore import EncryptionKeyTimes, KeystoreContents

# How long a directory change takes to reach every node (nodes refresh daily; a week allows
# for a node that was offline). Senders may seal to a retired key until they see it.
DIRECTORY_PROPAGATION_SECONDS = 7 * 24 * 3600
# A retired encryption private key is kept for the longest envelope lifetime plus the
# propagation delay: 37 days.
ENCRYPTION_GRACE_SECONDS = MAX_LIFETIME + DIRECTORY_PROPAGATION_SECONDS


def rotate_encryption_key(contents: KeystoreContents, *, now: int,
                          new_key: EncryptionKeyPair | None = None,
                          grace_seconds: int = ENCRYPTION_GRACE_SECONDS) -> EncryptionKeyPair:
    """Make a new encryption key current; retire the previous current key (rule 1).

    The caller saves the keystore and publishes the new public key to its authority.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be non-negative")
    keypair = new_key or generate_encryption_key()
    identity = contents.identity
    if identity.encryption_keys:
        old = identity.encryption_keys[0]
        times = contents.encryption_times.setdefault(old.key_id, EncryptionKeyTimes(0))
        times.retired_at = now
        times.destroy_at = now + grace_seconds
    identity.encryption_keys.insert(0, keypair)
    contents.encryption_times[keypair.key_id] = EncryptionKeyTimes(now)
    return keypair


def destroy_expired_keys(contents: KeystoreContents, *, now: int) -> list[str]:
    """Remove every retired encryption key whose ``destroy_at`` has come (rule 2).

    Returns the destroyed key ids. The current key (first in the list) is never removed.
    Python cannot promise to wipe the bytes from process memory; the guarantee is that the
    key is gone from the keystore file once the caller saves it.
    """
    identity = contents.identity
    kept = identity.encryption_keys[:1]
    destroyed = []
    for keypair in identity.encryption_keys[1:]:
        times = contents.encryption_times.get(keypair.key_id)
        if times is not None and times.destroy_at is not None and now >= times.destroy_at:
            destroyed.append(keypair.key_id)
            del contents.encryption_times[keypair.key_id]
        else:
            kept.append(keypair)
    identity.encryption_keys[:] = kept
    return destroyed


def rotate_signing_key(contents: KeystoreContents, *, now: int,
                       new_key: SigningKeyPair | None = None) -> SigningKeyPair:
    """Replace the signing key (rule 3). Returns the *old* key pair so the caller can
    report its key id to the authority (to mark it retired) before dropping it."""
    old = contents.identity.signing
    contents.identity.signing = new_key or generate_signing_key()
    contents.signing_created = now
    return old


def public_key_entries(contents: KeystoreContents) -> list[dict[str, Any]]:
    """The ``keys`` array of this node's directory entry (SPEC.md "Participant keys"):
    the current signing key and every encryption key still held, with their windows."""
    identity = contents.identity
    entries: list[dict[str, Any]] = [{
        "use": "signing", "key": b64encode(identity.signing.public_key),
        "key_id": identity.signing.key_id, "valid_from": contents.signing_created,
        "valid_until": None, "status": "active", "revoked_at": None,
    }]
    for keypair in identity.encryption_keys:
        times = contents.encryption_times.get(keypair.key_id, EncryptionKeyTimes(0))
        entries.append({
            "use": "encryption", "key": b64encode(keypair.public_key),
            "key_id": keypair.key_id, "valid_from": times.created,
            "valid_until": times.retired_at,
            "status": "active" if times.retired_at is None else "retired",
            "revoked_at": None,
        })
    return entries
