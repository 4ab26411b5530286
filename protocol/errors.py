"""Stable error codes of the Caseway protocol and the one exception type that carries them.

Rules of this module:

1. Every rejection anywhere in Caseway is a :class:`CasewayError` carrying an
   :class:`ErrorCode`. The code is the contract: it is what goes into a signed rejection
   receipt, what the HTTP status is derived from, and what a sender uses to decide whether
   to retry. SPEC.md section "Error codes" reproduces :data:`ERROR_TABLE` line by line.
2. An error's ``detail`` text describes *structure* only (a field path, a section name, a
   limit). It never contains a value taken from a message: exception texts end up in logs,
   and case data must never reach a log.
3. Internal code raises ``CasewayError``; only the node converts it, at its boundary, into an
   HTTP response (federation: a signed rejection receipt; local API: RFC 9457 problem+json).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What SPEC.md says about one code: its HTTP status and whether a sender should retry."""

    http_status: int
    retry: bool
    meaning: str


class ErrorCode(StrEnum):
    """Stable, documented error codes. Values are the wire strings; never rename one."""

    # Transport and parsing (cheap, unauthenticated checks).
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MALFORMED = "malformed"
    BAD_ENCODING = "bad_encoding"
    UNSUPPORTED_VERSION = "unsupported_version"
    HEADER_INVALID = "header_invalid"
    # Authentication and addressing.
    UNKNOWN_SENDER = "unknown_sender"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    BAD_SIGNATURE = "bad_signature"
    NOT_FOR_ME = "not_for_me"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    WEAK_KEY = "weak_key"
    DECRYPT_FAILED = "decrypt_failed"
    BINDING_MISMATCH = "binding_mismatch"
    # Content and rules.
    SCHEMA_INVALID = "schema_invalid"
    CONSENT_VIOLATION = "consent_violation"
    CONSENT_EXPIRED = "consent_expired"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    FIREWALL = "firewall"
    INVALID_TRANSITION = "invalid_transition"
    SEQUENCE_GAP = "sequence_gap"
    # Trust directory and local key material.
    STALE_DIRECTORY = "stale_directory"
    UNTRUSTED_AUTHORITY = "untrusted_authority"
    DIRECTORY_EXPIRED = "directory_expired"
    KEYSTORE_LOCKED = "keystore_locked"
    KEYSTORE_CORRUPT = "keystore_corrupt"
    # Node and local API.
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INTERNAL_ERROR = "internal_error"

    @property
    def info(self) -> ErrorInfo:
        return ERROR_TABLE[self]

    @property
    def http_status(self) -> int:
        return ERROR_TABLE[self].http_status

    @property
    def retry(self) -> bool:
        return ERROR_TABLE[self].retry


E = ErrorCode
ERROR_TABLE: dict[ErrorCode, ErrorInfo] = {
    E.TOO_LARGE: ErrorInfo(413, False, "input exceeds the documented size limit"),
    E.UNSUPPORTED_MEDIA_TYPE: ErrorInfo(415, False, "request body is not application/json"),
    E.MALFORMED: ErrorInfo(400, False, "not strict JSON (syntax, UTF-8, duplicate key, "
                           "float, NaN, integer range, lone surrogate, nesting depth)"),
    E.BAD_ENCODING: ErrorInfo(400, False, "base64url not canonical and unpadded, or a key, "
                              "signature, id or ciphertext of the wrong length"),
    E.UNSUPPORTED_VERSION: ErrorInfo(400, False, "protocol version not supported"),
    E.HEADER_INVALID: ErrorInfo(400, False, "envelope or protected header does not match "
                                "its schema"),
    E.UNKNOWN_SENDER: ErrorInfo(403, True, "sender participant not in the trusted directory "
                                "(retry after the directory is refreshed)"),
    E.UNKNOWN_KEY: ErrorInfo(403, True, "key id not known for that participant, or not "
                             "valid at the stated time"),
    E.REVOKED_KEY: ErrorInfo(403, False, "signing key was revoked before the envelope was "
                             "created"),
    E.BAD_SIGNATURE: ErrorInfo(401, False, "signature does not verify over the received bytes"),
    E.NOT_FOR_ME: ErrorInfo(421, False, "recipient participant or encryption key id is not "
                            "this node's"),
    E.EXPIRED: ErrorInfo(410, False, "the envelope's expiry time has passed"),
    E.NOT_YET_VALID: ErrorInfo(425, True, "created time is ahead of the receiver's clock by "
                               "more than the allowed skew"),
    E.REPLAYED: ErrorInfo(409, False, "message id already accepted from this sender, with "
                          "different bytes"),
    E.WEAK_KEY: ErrorInfo(400, False, "X25519 key of low order or all-zero shared secret"),
    E.DECRYPT_FAILED: ErrorInfo(400, False, "ciphertext does not open with the named key"),
    E.BINDING_MISMATCH: ErrorInfo(400, False, "inner id, sender or recipient differ from the "
                                  "signed header"),
    E.SCHEMA_INVALID: ErrorInfo(422, False, "inner message does not match its schema"),
    E.CONSENT_VIOLATION: ErrorInfo(403, False, "a section, purpose or recipient is outside the "
                                   "survivor's consent"),
    E.CONSENT_EXPIRED: ErrorInfo(403, False, "the consent record has expired"),
    E.CONSENT_WITHDRAWN: ErrorInfo(403, False, "the survivor withdrew this consent"),
    E.FIREWALL: ErrorInfo(403, False, "recipient is in a sector that never receives case data "
                          "(immigration enforcement, recruitment agency), or police/justice "
                          "without a reporting purpose"),
    E.INVALID_TRANSITION: ErrorInfo(409, False, "message not allowed in the thread's current "
                                    "state"),
    E.SEQUENCE_GAP: ErrorInfo(409, True, "sequence number skips ahead; earlier messages are "
                              "missing (retry after they are delivered)"),
    E.STALE_DIRECTORY: ErrorInfo(409, False, "directory serial lower than the one held"),
    E.UNTRUSTED_AUTHORITY: ErrorInfo(403, False, "directory not signed by a pinned authority "
                                     "key"),
    E.DIRECTORY_EXPIRED: ErrorInfo(503, True, "directory expired beyond its grace period"),
    E.KEYSTORE_LOCKED: ErrorInfo(401, False, "keystore passphrase wrong or missing"),
    E.KEYSTORE_CORRUPT: ErrorInfo(500, False, "keystore file corrupt or truncated"),
    E.RATE_LIMITED: ErrorInfo(429, True, "too many requests from this sender; back off"),
    E.UNAVAILABLE: ErrorInfo(503, True, "node temporarily unable to accept; retry later"),
    E.UNAUTHORIZED: ErrorInfo(401, False, "missing or invalid bearer token"),
    E.FORBIDDEN: ErrorInfo(403, False, "the token's role may not use this operation"),
    E.NOT_FOUND: ErrorInfo(404, False, "no such resource"),
    E.CONFLICT: ErrorInfo(409, False, "request conflicts with the resource's current state"),
    E.INTERNAL_ERROR: ErrorInfo(500, True, "unexpected failure; nothing was stored"),
}
del E


class CasewayError(Exception):
    """A typed rejection. ``code`` is stable; ``detail`` is structural and never personal.

    ``section`` names the offending part of a message (for example the data-category
    section refused by consent) so that a caseworker sees *what* to fix.
    """

    def __init__(self, code: ErrorCode, detail: str = "", *, section: str | None = None):
        self.code = code
        self.detail = detail or code.info.meaning
        self.section = section
        super().__init__(f"{code.value}: {self.detail}")

    @property
    def http_status(self) -> int:
        return self.code.http_status

    @property
    def retry(self) -> bool:
        return self.code.retry
