"""The trust store: pinned authority keys, the directory currently held, and key lookups.

Rules of this module (SPEC.md "Trust store"):

1. Pinning. A node trusts directories signed by one of its pinned authority keys, and by
   nothing else (``untrusted_authority``). Keys are pinned by configuration, out of band.
2. Successor rotation. A pinned authority key may name its successor in a statement signed
   with ``AUTHORITY_SUCCESSOR_LABEL``. A directory carries such statements, oldest first, in
   ``authority_chain``; a node that was offline during a rotation follows the chain from a
   key it pins. Following a statement pins the successor and unpins the predecessor. Pins
   change only when the whole directory verifies.
3. Serial. A directory with a lower serial than the one held is ``stale_directory`` (a
   rollback to an older directory could resurrect a revoked key). The same serial is
   accepted only as the very same bytes.
4. Expiry. A directory past ``expires`` still works for :data:`DIRECTORY_GRACE_SECONDS`
   with :attr:`TrustStore.expired_warning` set (nodes must not stop referring survivors
   because an authority was late); after that ``directory_expired``.
5. Key lookups answer for a *time* (the envelope's ``created``), so a signature made
   before a revocation stays verifiable for audit and one made at or after it is
   ``revoked_key``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json
from caseway.protocol.envelope import MAX_CLOCK_SKEW
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.firewall import check_firewall

from .directory import Directory, Participant, read_signed, verify_signed
from .identity import PublicKey, resolve_signing_key

DIRECTORY_GRACE_SECONDS = 7 * 24 * 3600
MAX_SUCCESSOR_BYTES = 1024
MAX_CHAIN = 16  # as directory.schema.json
SUCCESSOR_FIELDS = ("v", "predecessor", "successor", "issued")


# --------------------------------------------------------------------------- successors


def sign_successor(predecessor: crypto.SigningKeyPair, successor_public_key: bytes, *,
                   issued: int) -> dict[str, str]:
    """The old authority key names its successor (rule 2). Returns the statement object
    that goes into a directory's ``authority_chain``."""
    if len(successor_public_key) != crypto.PUBLIC_KEY_BYTES:
        raise CasewayError(ErrorCode.BAD_ENCODING, "successor key must be 32 bytes")
    protected = dump_json({"v": 1, "predecessor": predecessor.key_id,
                           "successor": b64encode(successor_public_key), "issued": issued})
    signature = predecessor.sign(crypto.AUTHORITY_SUCCESSOR_LABEL, protected)
    return {"protected": b64encode(protected), "signature": b64encode(signature)}


def read_successor(statement: Mapping[str, Any]) -> tuple[str, bytes, bytes, bytes]:
    """Parse a successor statement: (predecessor key id, successor key, protected, signature).
    Nothing is verified here."""
    if not isinstance(statement, Mapping) or set(statement) != {"protected", "signature"}:
        raise CasewayError(ErrorCode.HEADER_INVALID, "authority_chain: statement fields wrong")
    protected = b64decode(statement["protected"], field="authority_chain.protected")
    signature = b64decode(statement["signature"], length=crypto.SIGNATURE_BYTES,
                          field="authority_chain.signature")
    obj = parse_json(protected, max_bytes=MAX_SUCCESSOR_BYTES, max_depth=1)
    # As every signed document (SPEC.md §5.5 step 3): object, then version, then fields.
    if not isinstance(obj, dict):
        raise CasewayError(ErrorCode.HEADER_INVALID, "authority_chain: statement not an object")
    if type(obj.get("v")) is not int or obj["v"] != 1:
        raise CasewayError(ErrorCode.UNSUPPORTED_VERSION, "authority_chain: only statement "
                           "version 1")
    if (set(obj) != set(SUCCESSOR_FIELDS) or type(obj["issued"]) is not int
            or obj["issued"] < 0):
        raise CasewayError(ErrorCode.HEADER_INVALID, "authority_chain: statement invalid")
    # Key id and key: base64url fields, so a non-string is bad_encoding too (§2.2).
    b64decode(obj["predecessor"], length=crypto.KEY_ID_BYTES, field="authority_chain.predecessor")
    successor = b64decode(obj["successor"], length=crypto.PUBLIC_KEY_BYTES,
                          field="authority_chain.successor")
    return obj["predecessor"], successor, protected, signature


def _follow_chain(chain: Iterable[Mapping[str, Any]], pinned: Mapping[str, bytes]
                  ) -> dict[str, bytes]:
    """Apply successor statements to a copy of ``pinned``; statements that do not start
    from a key in the (growing) set, or whose successor is already pinned, are skipped."""
    keys = dict(pinned)
    for statement in chain:
        predecessor, successor, protected, signature = read_successor(statement)
        successor_id = crypto.key_id(successor)
        if successor_id in keys or predecessor not in keys:
            continue
        crypto.verify(keys[predecessor], crypto.AUTHORITY_SUCCESSOR_LABEL, protected, signature)
        del keys[predecessor]
        keys[successor_id] = successor
    return keys


# --------------------------------------------------------------------------- trust store


class TrustStore:
    """Pinned authority keys and the directory currently trusted; a
    :class:`~caseway.protocol.envelope.KeyResolver`."""

    def __init__(self, authority_keys: Iterable[bytes], *,
                 grace_seconds: int = DIRECTORY_GRACE_SECONDS, held_serial: int = 0):
        self._pinned: dict[str, bytes] = {}
        for key in authority_keys:
            if len(key) != crypto.PUBLIC_KEY_BYTES:
                raise CasewayError(ErrorCode.BAD_ENCODING, "authority key must be 32 bytes")
            self._pinned[crypto.key_id(key)] = bytes(key)
        if grace_seconds < 0:
            raise ValueError("grace_seconds must be non-negative")
        self.grace_seconds = grace_seconds
        self._held_serial = held_serial
        self._directory: Directory | None = None
        self.expired_warning = False

    # -- authority keys and directory loading ------------------------------------------

    @property
    def pinned_keys(self) -> dict[str, bytes]:
        """Pinned authority keys by key id (a copy)."""
        return dict(self._pinned)

    @property
    def held_serial(self) -> int:
        return self._held_serial

    @property
    def directory(self) -> Directory | None:
        return self._directory

    def accept_successor(self, statement: Mapping[str, Any]) -> str:
        """Follow one successor statement given out of band; returns the new key id."""
        predecessor, successor, _, _ = read_successor(statement)
        if predecessor not in self._pinned:
            raise CasewayError(ErrorCode.UNTRUSTED_AUTHORITY,
                               "successor statement not from a pinned key")
        self._pinned = _follow_chain([statement], self._pinned)
        return crypto.key_id(successor)

    def load(self, directory_bytes: bytes, now: int) -> Directory:
        """Verify and adopt a directory (rules 1–4). On any error nothing changes."""
        signed = read_signed(directory_bytes)
        chain = signed.document.get("authority_chain", [])
        # Bounded before any signature work: the chain is not authenticated yet.
        if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
            raise CasewayError(ErrorCode.HEADER_INVALID,
                               f"authority_chain must be an array of at most {MAX_CHAIN}")
        pinned = _follow_chain(chain, self._pinned) if chain else dict(self._pinned)
        directory = verify_signed(signed, pinned)
        if directory.serial < self._held_serial:
            raise CasewayError(ErrorCode.STALE_DIRECTORY,
                               "directory serial lower than the one held")
        if (directory.serial == self._held_serial and self._directory is not None
                and directory.protected != self._directory.protected):
            raise CasewayError(ErrorCode.STALE_DIRECTORY,
                               "same serial as the held directory but different contents")
        if directory.issued > now + MAX_CLOCK_SKEW:
            raise CasewayError(ErrorCode.NOT_YET_VALID, "directory issued in the future")
        expired = self._check_expiry(directory, now)
        self._pinned = pinned
        self._directory = directory
        self._held_serial = directory.serial
        self.expired_warning = expired
        return directory

    def _check_expiry(self, directory: Directory, now: int) -> bool:
        if now >= directory.expires + self.grace_seconds:
            raise CasewayError(ErrorCode.DIRECTORY_EXPIRED,
                               f"directory expired more than {self.grace_seconds} seconds ago")
        return now >= directory.expires

    def check_fresh(self, now: int) -> bool:
        """Re-judge the held directory at ``now``: ``directory_expired`` past the grace
        period; returns (and records) whether it is in its grace period (warn loudly)."""
        self.expired_warning = self._check_expiry(self._require(), now)
        return self.expired_warning

    # -- lookups --------------------------------------------------------------------------

    def _require(self) -> Directory:
        if self._directory is None:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "no trusted directory loaded")
        return self._directory

    def participant(self, participant_id: str) -> Participant:
        found = self._require().get(participant_id)
        if found is None:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "participant not in the directory")
        return found

    def sectors(self, participant_id: str) -> frozenset[str]:
        return self.participant(participant_id).sectors

    def endpoint(self, participant_id: str) -> str | None:
        return self.participant(participant_id).endpoint

    def signing_key(self, participant: str, key_id: str, at: int) -> bytes:
        """KeyResolver: the participant's Ed25519 key ``key_id`` as valid at ``at``."""
        entry = next((k for k in self.participant(participant).keys
                      if k.key_id == key_id and k.use == "signing"), None)
        key = None if entry is None else PublicKey(participant, entry.public_key,
                                                   entry.valid_from, entry.valid_until,
                                                   entry.revoked_at)
        return resolve_signing_key(key, True, at)

    def encryption_key(self, participant: str, at: int) -> tuple[bytes, str]:
        """The X25519 key to seal to at ``at``: the active, unrevoked encryption key whose
        window contains ``at`` (the newest ``valid_from`` if several). ``unknown_key`` if none
        (information-only entries have none)."""
        candidates = [k for k in self.participant(participant).keys
                      if k.use == "encryption" and k.status == "active"
                      and k.revoked_at is None and k.in_window(at)]
        if not candidates:
            raise CasewayError(ErrorCode.UNKNOWN_KEY, "no active encryption key for that "
                               "participant")
        best = max(candidates, key=lambda k: k.valid_from)
        return best.public_key, best.key_id

    def check_recipient(self, participant_id: str, purposes: Iterable[str] = ()) -> None:
        """The firewall (BRIEF §4) applied to a directory participant: ``firewall`` if case
        data may not go to it for these purposes."""
        check_firewall(self.sectors(participant_id), purposes)
