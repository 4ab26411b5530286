"""The signed trust directory: document model, strict parsing, signing and verification.

Rules of this module (SPEC.md "Directory document", "Directory signature"):

1. Signed bytes, as for envelopes. The wire form is ``{"protected": b64url(document
   bytes), "signature": b64url(Ed25519(DIRECTORY_LABEL || document bytes))}``. A verifier
   checks the signature over the bytes it received and never re-serialises the document.
2. Order of checks: size (:data:`MAX_DIRECTORY_BYTES`, before parsing) → strict JSON of the
   outer object → strict JSON of the document → version → the authority key id it names is
   trusted → signature → schema (``directory.schema.json``) → the rules a schema cannot say
   (unique ids, key ids equal to the keys, time windows, real IANA time zones, keys for
   every entry with an endpoint). Unauthenticated input gets only cheap work.
3. A document that fails the schema or the rules is ``schema_invalid`` with a detail naming
   the field path (``$.participants[2].country``), never the offending value: an authority
   fixing an entry sees *where*, and no value from a document reaches a log.
4. The same participant document is the published service directory: entries without an
   ``endpoint`` are information-only services and may have no keys.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caseway import schemas
from caseway.protocol import crypto
from caseway.protocol.encoding import (
    b64decode,
    dump_json,
    dump_signed,
    parse_json,
)
from caseway.protocol.envelope import parse_signed
from caseway.protocol.errors import CasewayError, ErrorCode

VERSION = 1
MAX_DIRECTORY_BYTES = 4 * 1024 * 1024  # whole signed file, checked before parsing
MAX_PARTICIPANT_BYTES = 64 * 1024  # one participant file given to `authority add`
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KEY_USES = ("signing", "encryption")
KEY_STATUSES = ("active", "retired", "revoked")
DOCUMENT_ORDER = ("v", "authority", "serial", "issued", "expires", "publisher",
                  "authority_chain", "participants")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One public key of a participant (SPEC.md "Participant keys")."""

    use: str
    public_key: bytes
    key_id: str
    valid_from: int
    valid_until: int | None
    status: str
    revoked_at: int | None

    def in_window(self, at: int) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)


@dataclass(frozen=True, slots=True)
class Period:
    """Open on ``days`` from ``opens`` to ``closes`` (minutes after local midnight;
    ``closes`` may be 1440 for "24:00")."""

    days: tuple[str, ...]
    opens: int
    closes: int


@dataclass(frozen=True, slots=True)
class OpeningHours:
    timezone: str
    always_open: bool
    periods: tuple[Period, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Participant:
    """A directory entry. ``document`` is the entry exactly as signed (for export)."""

    id: str
    names: Mapping[str, str]
    country: str
    sectors: frozenset[str]
    services: tuple[str, ...]
    languages: tuple[str, ...]
    hours: OpeningHours
    contacts: Mapping[str, Any]
    endpoint: str | None
    keys: tuple[KeyEntry, ...]
    document: Mapping[str, Any]

    def name(self, language: str = "en") -> str:
        return self.names.get(language) or self.names["en"]

    @property
    def information_only(self) -> bool:
        return self.endpoint is None


@dataclass(frozen=True, slots=True, eq=False)
class Directory:
    """A verified directory. ``protected`` and ``signature`` are the exact signed bytes."""

    authority: str
    serial: int
    issued: int
    expires: int
    participants: tuple[Participant, ...]
    protected: bytes
    signature: bytes
    authority_chain: tuple[Mapping[str, str], ...] = ()
    publisher: Mapping[str, str] = field(default_factory=dict)
    _by_id: Mapping[str, Participant] = field(default_factory=dict, repr=False)

    def get(self, participant_id: str) -> Participant | None:
        return self._by_id.get(participant_id)

    def to_bytes(self) -> bytes:
        """The signed wire form (the same bytes that were verified, re-wrapped)."""
        return dump_signed(self.protected, self.signature)


@dataclass(frozen=True, slots=True)
class SignedDirectory:
    """A signed directory before its signature is checked: only cheap parsing done."""

    protected: bytes
    signature: bytes
    document: Mapping[str, Any]
    authority: str


# --------------------------------------------------------------------------- validation


def _describe(error: Any) -> str:
    """Turn a jsonschema error into a structural message: path and rule, never the value."""
    path = error.json_path
    rule = error.validator
    if rule == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return f"{path}: missing required field '{missing[0] if missing else '?'}'"
    if rule == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        if unknown and _IDENTIFIER.fullmatch(unknown[0]):
            return f"{path}: unknown field '{unknown[0]}'"
        return f"{path}: unknown field"
    hints = {
        "pattern": "does not have the required format",
        "enum": "is not one of the allowed values",
        "const": "is not the required value",
        "type": f"must be of type {error.validator_value}",
        "minItems": "has too few items",
        "maxItems": "has too many items",
        "uniqueItems": "has duplicate items",
        "minLength": "is too short",
        "maxLength": "is too long",
        "minimum": "is below the minimum",
        "minProperties": "has too few entries",
        "maxProperties": "has too many entries",
        "propertyNames": "has a key that is not a BCP 47 language tag",
    }
    return f"{path}: {hints.get(rule, f'fails rule {rule!r}')}"


def _schema_check(name: str, document: Any, prefix: str = "$") -> None:
    from jsonschema.exceptions import best_match

    error = best_match(schemas.validator(name).iter_errors(document))
    if error is not None:
        detail = _describe(error)
        if prefix != "$":
            detail = prefix + detail[1:]
        raise CasewayError(ErrorCode.SCHEMA_INVALID, detail)


@functools.cache
def iana_zone_names() -> frozenset[str]:
    """The Zone and Link names of the IANA tz database (SPEC.md "Opening hours"), matched
    exactly: no case folding (``ZoneInfo`` would find ``asia/manila`` on a case-insensitive
    file system) and no file paths (``posix/Asia/Manila``, ``localtime``). ``Factory`` is
    not a place's zone."""
    try:
        text = importlib.resources.files("tzdata").joinpath("zones").read_text("utf-8")
        names = set(text.split())
    except (ImportError, OSError):  # no tzdata package: the system database
        names = set(zoneinfo.available_timezones())
    return frozenset(names - {"Factory", "localtime", "posixrules"})


def _invalid(path: str, what: str) -> CasewayError:
    return CasewayError(ErrorCode.SCHEMA_INVALID, f"{path}: {what}")


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _build_participant(obj: Mapping[str, Any], path: str) -> Participant:
    """The rules the schema cannot express, on an object that already passed the schema."""
    hours = obj["hours"]
    if hours["timezone"] not in iana_zone_names():
        raise _invalid(f"{path}.hours.timezone", "not an IANA time zone")
    try:
        zoneinfo.ZoneInfo(hours["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _invalid(f"{path}.hours.timezone", "not an IANA time zone") from None
    periods = []
    for i, period in enumerate(hours.get("periods", [])):
        opens, closes = _minutes(period["opens"]), _minutes(period["closes"])
        if closes <= opens:
            raise _invalid(f"{path}.hours.periods[{i}]", "closes must be after opens (split "
                           "a period that crosses midnight in two)")
        periods.append(Period(tuple(d for d in DAYS if d in period["days"]), opens, closes))
    always_open = bool(hours.get("always_open", False))
    if not always_open and not periods:
        raise _invalid(f"{path}.hours", "needs periods or always_open")

    keys = []
    seen: set[str] = set()
    for i, entry in enumerate(obj["keys"]):
        where = f"{path}.keys[{i}]"
        public_key = b64decode(entry["key"], length=crypto.PUBLIC_KEY_BYTES, field=f"{where}.key")
        if crypto.key_id(public_key) != entry["key_id"]:
            raise _invalid(f"{where}.key_id", "is not the key id of the key")
        if entry["key_id"] in seen:
            raise _invalid(f"{where}.key_id", "duplicate key id in this entry")
        seen.add(entry["key_id"])
        if entry["valid_until"] is not None and entry["valid_until"] <= entry["valid_from"]:
            raise _invalid(f"{where}.valid_until", "must be after valid_from")
        keys.append(KeyEntry(entry["use"], public_key, entry["key_id"], entry["valid_from"],
                             entry["valid_until"], entry["status"], entry["revoked_at"]))
    endpoint = obj.get("endpoint")
    if endpoint is not None:
        for use in KEY_USES:
            if not any(k.use == use and k.status == "active" for k in keys):
                raise _invalid(f"{path}.keys", f"an entry with an endpoint needs an active "
                               f"{use} key")
    return Participant(
        id=obj["id"], names=dict(obj["names"]), country=obj["country"],
        sectors=frozenset(obj["sectors"]), services=tuple(obj["services"]),
        languages=tuple(obj["languages"]),
        hours=OpeningHours(hours["timezone"], always_open, tuple(periods)),
        contacts=obj["contacts"], endpoint=endpoint, keys=tuple(keys), document=obj,
    )


def parse_participant(obj: Any) -> Participant:
    """Validate one participant object (schema, then rules); ``schema_invalid`` naming the
    field otherwise. Used by ``caseway authority add``."""
    _schema_check("participant", obj, prefix="participant")
    return _build_participant(obj, "participant")


def parse_participant_bytes(data: bytes) -> Participant:
    return parse_participant(parse_json(data, max_bytes=MAX_PARTICIPANT_BYTES))


def parse_document(document: Any, protected: bytes = b"", signature: bytes = b"") -> Directory:
    """Schema and rule checks of a directory document (rule 2, last two steps)."""
    _schema_check("directory", document)
    if document["expires"] <= document["issued"]:
        raise _invalid("$.expires", "must be after issued")
    participants = []
    by_id: dict[str, Participant] = {}
    for i, obj in enumerate(document["participants"]):
        participant = _build_participant(obj, f"$.participants[{i}]")
        if participant.id in by_id:
            raise _invalid(f"$.participants[{i}].id", "duplicate participant id")
        by_id[participant.id] = participant
        participants.append(participant)
    return Directory(
        authority=document["authority"], serial=document["serial"], issued=document["issued"],
        expires=document["expires"], participants=tuple(participants), protected=protected,
        signature=signature, authority_chain=tuple(document.get("authority_chain", ())),
        publisher=dict(document.get("publisher", {})), _by_id=by_id,
    )


# --------------------------------------------------------------------------- signed form


def read_signed(data: bytes) -> SignedDirectory:
    """Rule 2 up to (not including) the authority check: size, outer object, document JSON,
    version, and the authority key id's shape. Nothing here is authenticated yet."""
    protected, signature = parse_signed(data, max_bytes=MAX_DIRECTORY_BYTES)
    document = parse_json(protected, max_bytes=MAX_DIRECTORY_BYTES)
    if not isinstance(document, dict):
        raise CasewayError(ErrorCode.HEADER_INVALID, "directory document must be an object")
    version = document.get("v")
    if version != VERSION or type(version) is not int:
        raise CasewayError(ErrorCode.UNSUPPORTED_VERSION, "only directory version 1")
    if "authority" not in document:
        raise CasewayError(ErrorCode.HEADER_INVALID, "authority: missing")
    # A key id: not canonical base64url of 16 bytes (a non-string too) is bad_encoding (§2.2).
    authority = document["authority"]
    b64decode(authority, length=crypto.KEY_ID_BYTES, field="authority")
    return SignedDirectory(protected, signature, document, authority)


def verify_signed(signed: SignedDirectory, authority_keys: Mapping[str, bytes]) -> Directory:
    """Authority pinned → signature → schema and rules (rule 2, remaining steps)."""
    public_key = authority_keys.get(signed.authority)
    if public_key is None:
        raise CasewayError(ErrorCode.UNTRUSTED_AUTHORITY, "authority key id is not pinned")
    crypto.verify(public_key, crypto.DIRECTORY_LABEL, signed.protected, signed.signature)
    return parse_document(signed.document, signed.protected, signed.signature)


def verify_directory(data: bytes, authority_keys: Iterable[bytes]) -> Directory:
    """Verify a signed directory against the given authority public keys. No serial, expiry
    or successor handling: that is :class:`caseway.keys.trust.TrustStore`'s job."""
    pinned = {crypto.key_id(key): key for key in authority_keys}
    return verify_signed(read_signed(data), pinned)


def sign_directory(document: Mapping[str, Any], authority: crypto.SigningKeyPair) -> bytes:
    """Sign a directory document; returns the wire bytes. The document is validated first
    (nothing is signed if it is invalid) and its ``authority`` is set to the signer's key id.
    """
    doc = {"v": VERSION, **document, "authority": authority.key_id}
    ordered = {name: doc[name] for name in DOCUMENT_ORDER if name in doc}
    ordered.update({k: v for k, v in doc.items() if k not in ordered})
    parse_document(ordered)
    protected = dump_json(ordered)
    signature = authority.sign(crypto.DIRECTORY_LABEL, protected)
    data = dump_signed(protected, signature)
    if len(data) > MAX_DIRECTORY_BYTES:
        raise CasewayError(ErrorCode.TOO_LARGE, f"signed directory longer than "
                           f"{MAX_DIRECTORY_BYTES} bytes")
    return data


def build_directory(participants: Iterable[Mapping[str, Any]], *,
                    authority: crypto.SigningKeyPair, serial: int, issued: int, expires: int,
                    publisher: Mapping[str, str] | None = None,
                    authority_chain: Sequence[Mapping[str, str]] = ()) -> bytes:
    """Build and sign a directory from participant objects (the demo re-signs the sample
    with its real node keys and endpoints this way)."""
    document: dict[str, Any] = {"v": VERSION, "authority": authority.key_id, "serial": serial,
                                "issued": issued, "expires": expires}
    if publisher:
        document["publisher"] = dict(publisher)
    if authority_chain:
        document["authority_chain"] = [dict(s) for s in authority_chain]
    document["participants"] = [dict(p) for p in participants]
    return sign_directory(document, authority)


def with_node_keys(participant: Mapping[str, Any], keys: Sequence[Mapping[str, Any]], *,
                   endpoint: str | None) -> dict[str, Any]:
    """A copy of ``participant`` with its ``keys`` and ``endpoint`` replaced (for example by
    :func:`caseway.keys.lifecycle.public_key_entries` of a freshly generated keystore)."""
    entry = {k: v for k, v in participant.items() if k not in ("keys", "endpoint")}
    if endpoint is not None:
        entry["endpoint"] = endpoint
    entry["keys"] = [dict(k) for k in keys]
    return entry


def load_participants(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` participant file in ``folder``, strictly parsed and validated, in
    file-name order."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        obj = parse_json(path.read_bytes(), max_bytes=MAX_PARTICIPANT_BYTES)
        try:
            parse_participant(obj)
        except CasewayError as exc:
            raise CasewayError(exc.code, f"{path.name}: {exc.detail}") from None
        found.append(obj)
    return found
