"""Envelope v1: one signed, end-to-end encrypted message from one participant to one other.

Rules of this module (SPEC.md "Envelope v1", "Sealing", "Opening"):

1. The sender signs exact bytes. ``protected`` is the base64url of the header bytes; the
   signature covers ``ENVELOPE_LABEL || header bytes``. A receiver verifies the bytes it
   received and never re-serialises anything.
2. The cleartext header holds only what routing, verification and replay defence need.
   Message type, case id and every personal datum are inside ``ciphertext``.
3. ``ciphertext`` is a sealed box to the recipient's X25519 key and sits *inside* the signed
   header, so the signature authenticates it: nobody but the sender could have produced it.
4. The plaintext repeats id, sender and recipient; opening requires them to equal the
   header's (a recipient cannot re-wrap what it received and pass it off as addressed to
   someone else: surreptitious forwarding).
5. Opening runs the checks in the documented order, cheap and unauthenticated ones first,
   and stores nothing. The caller records the message id only after it has stored the
   message durably.

Theory of operation: :func:`seal_envelope` is given everything, including the random message
id and ephemeral secret, and returns bytes. :func:`open_envelope` is given bytes, the
receiver's keys, a key resolver, a replay guard, the time and a message policy, and returns
an :class:`OpenedEnvelope` or raises :class:`CasewayError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import crypto
from .encoding import b64decode, b64encode, dump_json, dump_signed, parse_json
from .errors import CasewayError, ErrorCode

VERSION = 1
MAX_ENVELOPE_BYTES = 1_048_576  # checked before parsing
MAX_PLAINTEXT_BYTES = 524_288  # inner message after decryption
MAX_CLOCK_SKEW = 300  # seconds a sender's clock may run ahead of ours
MAX_LIFETIME = 30 * 24 * 3600  # expires − created, at most
MESSAGE_ID_BYTES = 16
MAX_PARTICIPANT_ID = 64

HEADER_FIELDS = (
    "v", "id", "created", "expires", "sender", "sender_key", "recipient", "recipient_key",
    "ciphertext",
)
INNER_FIELDS = ("v", "id", "sender", "recipient", "message")


class KeyResolver(Protocol):
    """Finds a participant's Ed25519 public key by key id, as valid at time ``at``.

    Raises ``unknown_sender`` (participant unknown), ``unknown_key`` (no such key or not
    valid at ``at``) or ``revoked_key`` (revoked at or before ``at``).
    """

    def signing_key(self, participant: str, key_id: str, at: int) -> bytes: ...


class RecipientKeys(Protocol):
    """This node: its participant id and the X25519 key pairs it can still decrypt with."""

    @property
    def participant(self) -> str: ...

    def decryption_key(self, key_id: str) -> crypto.EncryptionKeyPair | None: ...


class ReplayGuard(Protocol):
    """Answers whether a (sender, message id) pair was already accepted."""

    def seen(self, sender: str, message_id: str) -> bool: ...


class MessagePolicy(Protocol):
    """The message layer: schema, consent, firewall. Raises ``CasewayError`` to refuse."""

    def check_outgoing(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None: ...

    def check_incoming(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None: ...


class EnvelopeLayerOnly:
    """A policy that accepts any JSON object: for the envelope layer's own vectors and tests.

    A node never uses it; it uses the message policy of :mod:`caseway.protocol.policy`.
    """

    def check_outgoing(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None:
        return None

    def check_incoming(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Header:
    """The signed cleartext header (SPEC.md "Protected header")."""

    version: int
    message_id: str
    created: int
    expires: int
    sender: str
    sender_key: str
    recipient: str
    recipient_key: str
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """What :func:`seal_envelope` returns: the wire bytes and what the sender must remember."""

    data: bytes
    header: Header
    digest: bytes  # BLAKE2b-256 of ``data``, which the receipt must name


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """An envelope that passed every check. ``header.ciphertext`` is empty: the ciphertext
    is released as soon as it is decrypted (a large envelope would otherwise be held in
    several whole forms at once)."""

    header: Header
    message: dict[str, Any]
    digest: bytes


@dataclass(frozen=True, slots=True)
class Sender:
    """What sealing needs to know about the sending node."""

    participant: str
    signing: crypto.SigningKeyPair


def new_message_id(random16: bytes) -> str:
    if len(random16) != MESSAGE_ID_BYTES:
        raise CasewayError(ErrorCode.BAD_ENCODING, "message id needs 16 random bytes")
    return b64encode(random16)


def seal_envelope(
    message: Mapping[str, Any],
    *,
    sender: Sender,
    recipient: str,
    recipient_public_key: bytes,
    message_id: bytes,
    created: int,
    expires: int,
    ephemeral_secret: bytes,
    policy: MessagePolicy,
) -> SealedEnvelope:
    """Seal ``message`` for ``recipient`` (SPEC.md "Sealing", steps 1–7)."""
    mid = new_message_id(message_id)
    _check_participant(sender.participant, "sender")
    _check_participant(recipient, "recipient")
    if not created < expires <= created + MAX_LIFETIME:
        raise CasewayError(ErrorCode.HEADER_INVALID, "expires must be after created, within "
                           f"{MAX_LIFETIME} seconds")
    policy.check_outgoing(message, sender=sender.participant, recipient=recipient, now=created)
    inner = dump_json({"v": VERSION, "id": mid, "sender": sender.participant,
                       "recipient": recipient, "message": message})
    if len(inner) > MAX_PLAINTEXT_BYTES:
        raise CasewayError(ErrorCode.TOO_LARGE, f"message longer than {MAX_PLAINTEXT_BYTES} "
                           "bytes")
    ciphertext = crypto.sealed_box_seal(inner, recipient_public_key, ephemeral_secret)
    del inner  # sealed: keep one whole copy of the message fewer alive (large envelopes)
    header = Header(VERSION, mid, created, expires, sender.participant,
                    sender.signing.key_id, recipient, crypto.key_id(recipient_public_key),
                    ciphertext)
    protected = dump_json({
        "v": header.version, "id": header.message_id, "created": header.created,
        "expires": header.expires, "sender": header.sender, "sender_key": header.sender_key,
        "recipient": header.recipient, "recipient_key": header.recipient_key,
        "ciphertext": b64encode(ciphertext),
    })
    signature = sender.signing.sign(crypto.ENVELOPE_LABEL, protected)
    data = dump_signed(protected, signature)
    if len(data) > MAX_ENVELOPE_BYTES:
        raise CasewayError(ErrorCode.TOO_LARGE, f"envelope longer than {MAX_ENVELOPE_BYTES} "
                           "bytes")
    return SealedEnvelope(data, header, crypto.digest(data))


def parse_signed(data: bytes, *, max_bytes: int) -> tuple[bytes, bytes]:
    """Steps 1–2 shared by envelopes, receipts and directories: size, strict parse, and the
    outer object ``{"protected", "signature"}``. Returns (protected bytes, signature)."""
    outer = parse_json(data, max_bytes=max_bytes, max_depth=2)
    if not isinstance(outer, dict) or set(outer) != {"protected", "signature"}:
        raise CasewayError(ErrorCode.HEADER_INVALID,
                           "outer object must have exactly 'protected' and 'signature'")
    protected = b64decode(outer["protected"], field="protected")
    signature = b64decode(outer["signature"], length=crypto.SIGNATURE_BYTES, field="signature")
    return protected, signature


def parse_header(protected: bytes) -> Header:
    """Steps 3–4: strict parse of the protected bytes, version, then the header schema.

    Hand-written to mirror ``protected-header.schema.json`` exactly (tests cross-check the
    two); it runs on every delivery, before any signature work.
    """
    obj = parse_json(protected, max_bytes=MAX_ENVELOPE_BYTES, max_depth=1)
    if not isinstance(obj, dict):
        raise CasewayError(ErrorCode.HEADER_INVALID, "protected header must be an object")
    version = obj.get("v")
    if version != VERSION or type(version) is not int:
        raise CasewayError(ErrorCode.UNSUPPORTED_VERSION, "only version 1 is supported")
    if set(obj) != set(HEADER_FIELDS):
        missing = sorted(set(HEADER_FIELDS) - set(obj))
        extra = len(set(obj) - set(HEADER_FIELDS))
        raise CasewayError(ErrorCode.HEADER_INVALID,
                           f"header fields wrong (missing {missing}, {extra} unknown)")
    for name in ("created", "expires"):
        if type(obj[name]) is not int or obj[name] < 0:
            raise CasewayError(ErrorCode.HEADER_INVALID, f"{name} must be a non-negative "
                               "integer")
    for name in ("sender", "recipient"):
        _check_participant(obj[name], name)
    for name in ("sender_key", "recipient_key"):
        b64decode(obj[name], length=crypto.KEY_ID_BYTES, field=name)
    b64decode(obj["id"], length=MESSAGE_ID_BYTES, field="id")
    ciphertext = b64decode(obj["ciphertext"], field="ciphertext")
    if len(ciphertext) < crypto.SEAL_OVERHEAD:
        raise CasewayError(ErrorCode.BAD_ENCODING, "ciphertext shorter than 48 bytes")
    if not obj["created"] < obj["expires"] <= obj["created"] + MAX_LIFETIME:
        raise CasewayError(ErrorCode.HEADER_INVALID, "expires must be after created, within "
                           f"{MAX_LIFETIME} seconds")
    return Header(VERSION, obj["id"], obj["created"], obj["expires"], obj["sender"],
                  obj["sender_key"], obj["recipient"], obj["recipient_key"], ciphertext)


# Participant ids: 1–64 of [a-z0-9.-], starting with a letter or digit (SPEC.md).
_PARTICIPANT_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")


def _check_participant(value: object, field: str) -> None:
    if type(value) is not str or _PARTICIPANT_ID.fullmatch(value) is None:
        raise CasewayError(ErrorCode.HEADER_INVALID, f"{field}: not a participant id")


class ReadEnvelope:
    """An envelope after steps 1–4: its cleartext header, read but not yet authenticated.

    Nothing in it may be trusted before :func:`open_read_envelope` has verified it; a node
    may use ``header.sender`` and ``header.message_id`` for its duplicate lookup (SPEC.md
    §6.3) so that the envelope is parsed once. Opening *consumes* it: the signed bytes are
    released once verified and the ciphertext once decrypted, so that a caller still
    holding this object does not keep a large envelope alive in several whole copies.
    """

    __slots__ = ("header", "protected", "signature")

    def __init__(self, protected: bytes, signature: bytes, header: Header):
        self.protected = protected
        self.signature = signature
        self.header = header


def read_envelope(data: bytes) -> ReadEnvelope:
    """Steps 1–4 of opening: size, strict JSON, outer shape, version, header schema."""
    protected, signature = parse_signed(data, max_bytes=MAX_ENVELOPE_BYTES)
    return ReadEnvelope(protected, signature, parse_header(protected))


def open_envelope(
    data: bytes,
    *,
    me: RecipientKeys,
    keys: KeyResolver,
    replay: ReplayGuard,
    now: int,
    policy: MessagePolicy,
) -> OpenedEnvelope:
    """Open an envelope (SPEC.md "Opening", steps 1–13). Stores nothing."""
    opened = open_read_envelope(data, read_envelope(data), me=me, keys=keys, replay=replay,
                                now=now)
    # 12–13. message schema, then consent / firewall rules
    policy.check_incoming(opened.message, sender=opened.header.sender,
                          recipient=opened.header.recipient, now=now)
    return opened


def open_read_envelope(
    data: bytes,
    read: ReadEnvelope,
    *,
    me: RecipientKeys,
    keys: KeyResolver,
    replay: ReplayGuard,
    now: int,
) -> OpenedEnvelope:
    """Steps 5–11 on an envelope read from ``data``: authenticate, address, time, replay,
    decrypt, bind. The caller MUST then run the message policy (steps 12–13) before it
    stores anything; :func:`open_envelope` does all thirteen."""
    header = read.header
    # 5. sender key known and valid at `created` (revocation judged at that time)
    public_key = keys.signing_key(header.sender, header.sender_key, header.created)
    # 6. signature over the bytes received
    crypto.verify(public_key, crypto.ENVELOPE_LABEL, read.protected, read.signature)
    # Verified: the signed bytes are not needed again. A large envelope is otherwise held in
    # several whole forms at once (envelope, header bytes, ciphertext, plaintext, message).
    read.protected = b""
    # 7. addressed to me, with a key I hold
    if header.recipient != me.participant:
        raise CasewayError(ErrorCode.NOT_FOR_ME, "recipient is another participant")
    keypair = me.decryption_key(header.recipient_key)
    if keypair is None:
        raise CasewayError(ErrorCode.NOT_FOR_ME, "recipient_key is not a key this node holds")
    # 8. time window
    if now >= header.expires:
        raise CasewayError(ErrorCode.EXPIRED)
    if header.created > now + MAX_CLOCK_SKEW:
        raise CasewayError(ErrorCode.NOT_YET_VALID)
    # 9. replay
    if replay.seen(header.sender, header.message_id):
        raise CasewayError(ErrorCode.REPLAYED)
    # 10. decrypt; then release the largest copy early
    plaintext = crypto.sealed_box_open(header.ciphertext, keypair)
    header = read.header = replace(header, ciphertext=b"")
    # 11. inner binding
    inner = parse_json(plaintext, max_bytes=MAX_PLAINTEXT_BYTES)
    del plaintext
    if not isinstance(inner, dict) or set(inner) != set(INNER_FIELDS):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "inner plaintext fields wrong")
    if inner["v"] != VERSION or type(inner["v"]) is not int:
        raise CasewayError(ErrorCode.UNSUPPORTED_VERSION, "inner version")
    if inner["id"] != header.message_id:
        raise CasewayError(ErrorCode.BINDING_MISMATCH, "inner id differs from header id")
    if inner["sender"] != header.sender:
        raise CasewayError(ErrorCode.BINDING_MISMATCH, "inner sender differs from header")
    if inner["recipient"] != header.recipient:
        raise CasewayError(ErrorCode.BINDING_MISMATCH, "inner recipient differs from header")
    message = inner["message"]
    if not isinstance(message, dict):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "message must be an object")
    return OpenedEnvelope(header, message, crypto.digest(data))
