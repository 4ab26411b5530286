"""Local API bearer tokens and roles.

Rules of this module (SPEC.md "Local API"):

1. A token is 32 random bytes, shown once as ``cw_`` + base64url. The node stores only
   ``BLAKE2b-256(personal="caseway-api-tok", token)``: a database copy gives no usable
   token. A presented token is hashed, looked up by hash, and the stored hash compared with
   ``hmac.compare_digest`` before it counts.
2. A token has a name (a staff pseudonym; the audit actor of everything done with it) and
   exactly one role. :data:`ROLE_OPERATIONS` is the whole permission matrix: an operation
   not listed for a role is ``forbidden``. ``admin`` and ``auditor`` never read case
   content; ``admin`` manages tokens and the directory; ``auditor`` reads the audit log.
3. Token creation and revocation are audited (event ``token``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from caseway.protocol.encoding import b64encode
from caseway.protocol.errors import CasewayError, ErrorCode

from .storage import ApiToken, Storage

TOKEN_PREFIX = "cw_"
TOKEN_BYTES = 32
_PERSON = b"caseway-api-tok"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The token of a value in ``Authorization: Bearer``; anything else is not even looked up.
_TOKEN_SHAPE = re.compile(r"^cw_[A-Za-z0-9_-]{43}$")

CASEWORKER, SUPERVISOR, ADMIN, AUDITOR = "caseworker", "supervisor", "admin", "auditor"
ROLES = (CASEWORKER, SUPERVISOR, ADMIN, AUDITOR)

#: Role → the operations (OpenAPI operationIds) it may use (rule 2). SPEC.md reproduces it.
ROLE_OPERATIONS: dict[str, frozenset[str]] = {
    CASEWORKER: frozenset({
        "createReferral", "listCases", "caseTimeline", "listInbox", "listOutbox",
        "acceptReferral", "declineReferral", "requestInformation",
        "respondToInformationRequest", "sendUpdate", "closeThread", "referOnward",
        "erasureStatus", "searchDirectory",
    }),
    SUPERVISOR: frozenset({
        "createReferral", "listCases", "caseTimeline", "listInbox", "listOutbox",
        "acceptReferral", "declineReferral", "requestInformation",
        "respondToInformationRequest", "sendUpdate", "closeThread", "referOnward",
        "erasureStatus", "searchDirectory",
        "cancelReferral", "withdrawConsent",
    }),
    ADMIN: frozenset({
        "listOutbox", "searchDirectory", "refreshDirectory", "listTokens", "createToken",
        "revokeToken", "verifyAudit",
    }),
    AUDITOR: frozenset({"listAudit", "verifyAudit", "erasureStatus"}),
}


@dataclass(frozen=True, slots=True)
class Staff:
    """Who is calling: the token's name (audit actor) and role."""

    name: str
    role: str

    def require(self, operation: str) -> None:
        if operation not in ROLE_OPERATIONS.get(self.role, frozenset()):
            raise CasewayError(ErrorCode.FORBIDDEN, f"role {self.role} may not use "
                               f"{operation}")


def token_hash(token: str) -> bytes:
    return hashlib.blake2b(token.encode("ascii"), digest_size=32, person=_PERSON).digest()


def new_token() -> str:
    return TOKEN_PREFIX + b64encode(secrets.token_bytes(TOKEN_BYTES))


def check_name_and_role(name: object, role: object) -> tuple[str, str]:
    if not isinstance(name, str) or not NAME.match(name):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "/name: must be a pseudonym "
                           "(letters, digits, '.', '_', '-'; at most 64)", section="name")
    if role not in ROLES:
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "/role: must be one of "
                           + ", ".join(ROLES), section="role")
    assert isinstance(role, str)
    return name, role


async def create_token(storage: Storage, *, name: str, role: str, now: int,
                       actor: str = "local-cli") -> str:
    """Create a token and return its secret (shown once; only its hash is stored).

    The bootstrap path for the first admin token (``caseway token create --role admin``
    calls it on the database directly) and what ``POST /api/v1/tokens`` uses.
    ``conflict`` if the name is taken; ``schema_invalid`` for a bad name or role.
    """
    name, role = check_name_and_role(name, role)
    token = new_token()
    await storage.add_token(name=name, role=role, token_hash=token_hash(token), at=now,
                            actor=actor)
    return token


async def authenticate(storage: Storage, authorization: str | None) -> Staff:
    """The caller behind an ``Authorization`` header, or ``unauthorized``."""
    if authorization is None:
        raise CasewayError(ErrorCode.UNAUTHORIZED, "missing bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN_SHAPE.match(token):
        raise CasewayError(ErrorCode.UNAUTHORIZED, "malformed bearer token")
    wanted = token_hash(token)
    found = await storage.token_by_hash(wanted)
    if found is None:
        raise CasewayError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
    record, stored = found
    if not hmac.compare_digest(stored, wanted) or record.revoked_at is not None:
        raise CasewayError(ErrorCode.UNAUTHORIZED, "unknown or revoked token")
    return Staff(record.name, record.role)


def token_json(token: ApiToken) -> dict[str, object]:
    return {"name": token.name, "role": token.role, "created_at": token.created_at,
            "revoked_at": token.revoked_at}
