"""Referral messages: the catalogue, the code lists, and schema validation by ``type``.

Rules of this module (SPEC.md "Messages"):

1. A message is the ``message`` member of an envelope's plaintext. Every message has
   ``type`` (one of :data:`MESSAGE_TYPES`), ``case_id``, ``thread_id``, ``seq`` (the
   sender's number for it in the thread, from 1) and ``sent_at`` (integer Unix seconds).
   Ids are 16 bytes in canonical unpadded base64url (22 characters), like message ids.
2. Each type has one JSON Schema, ``schemas/<type with '-' for '_'>.schema.json``. The code
   lists below are the schemas' enums; a test checks that the two never drift apart.
3. Case data travels only in ``sections``, one member per data category
   (:data:`DATA_CATEGORIES`), and in ``attachments``, each of which names the category of
   its content. Consent acts on those names (:mod:`caseway.protocol.consent`).
4. Validation errors describe structure only: a JSON path made of schema-defined names and
   array indices, and the failing JSON Schema keyword. jsonschema's own messages quote the
   instance, so they are never used (exception texts reach logs).

Theory of operation: :func:`validate_message` runs the compiled, cached validator for the
message's type (its schema bundled, every ``$ref`` inlined), then the few rules a schema
cannot state (inline attachment digests, the erasure tombstone naming its own thread), and
returns the type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import jsonschema_rs

from caseway import schemas  # type: ignore[import-not-found,unused-ignore]  # package data

from . import crypto
from .encoding import b64decode
from .errors import CasewayError, ErrorCode
from .firewall import SECTORS

MESSAGE_TYPES = (
    "referral",
    "accept",
    "decline",
    "info_request",
    "info_response",
    "update",
    "close",
    "cancel",
    "consent_withdrawal",
    "erasure_confirmation",
    "onward_referral",
)
COMMON_FIELDS = ("type", "case_id", "thread_id", "seq", "sent_at")

#: Messages whose ``sections``/``attachments`` carry case data (consent checked in full).
DATA_MESSAGES = frozenset({"referral", "onward_referral", "info_response"})
#: Messages that carry an outcome back to the referrer (need ``feedback_allowed``).
FEEDBACK_MESSAGES = frozenset({"update", "close"})
#: Messages that carry their own consent record.
CONSENT_CARRYING = frozenset({"referral", "onward_referral"})

DATA_CATEGORIES = (
    "identity",  # name, date of birth or age band, sex, gender, nationality
    "communication",  # languages, preferred language, interpreter needed
    "contact_safety",  # how and when to contact her safely, code word, who must not know
    "location_return",  # where she is, expected return, port of entry, home province
    "incident",  # GBVIMS type, exploitation indicators, perpetrator relationship, when/where
    "migration_context",  # destination, job sector, recruitment agency
    "migration_status",  # a sensitive category of its own
    "needs",  # services requested, urgency, risk level, safety plan
    "health",
    "legal",
    "children_dependants",
)

PURPOSES = (
    "service_provision",
    "case_management",
    "safe_return",
    "legal_assistance",
    "reporting",  # to police or justice: the only purpose that lets them receive data
)

SERVICES = (
    "health",
    "sexual_reproductive_health",
    "mental_health_psychosocial",
    "safe_shelter",
    "legal_aid",
    "police_justice",
    "social_material_aid",
    "repatriation",
    "consular_assistance",
    "labour_claims",
    "economic_reintegration",
    "interpretation",
)

# GBVIMS core incident types.
INCIDENT_TYPES = (
    "rape",
    "sexual_assault",
    "physical_assault",
    "forced_marriage",
    "denial_of_resources",
    "psychological_abuse",
)
# Trafficking and labour-exploitation indicators (ILO forced-labour indicators, shortened).
EXPLOITATION_INDICATORS = (
    "deception",
    "restriction_of_movement",
    "isolation",
    "intimidation_threats",
    "retention_of_documents",
    "withholding_of_wages",
    "debt_bondage",
    "abusive_conditions",
    "excessive_overtime",
    "confiscation_of_phone",
    "trafficking_suspected",
)
PERPETRATOR_RELATIONSHIPS = (
    "employer",
    "employer_family_member",
    "recruiter",
    "intimate_partner",
    "former_partner",
    "family_member",
    "co_worker",
    "authority_figure",
    "stranger",
    "other",
    "unknown",
)
JOB_SECTORS = (
    "domestic_work",
    "fishing",
    "manufacturing",
    "agriculture",
    "construction",
    "entertainment",
    "hospitality",
    "care_work",
    "services",
    "other",
)
MIGRATION_STATUSES = ("regular", "irregular", "undocumented", "overstayed", "pending",
                      "unknown")
DO_NOT_INFORM = ("family", "employer", "recruiter", "intimate_partner", "community",
                 "other")
CONTACT_CHANNELS = ("phone_call", "sms", "messaging_app", "email", "in_person",
                    "through_referrer")
SEX = ("female", "male", "intersex", "not_stated")
GENDER = ("woman", "man", "non_binary", "other", "not_stated")
AGE_BANDS = ("0-11", "12-17", "18-24", "25-34", "35-49", "50-59", "60+")
URGENCY = ("immediate", "within_72_hours", "routine")
RISK_LEVELS = ("low", "medium", "high", "severe")
CONSENT_METHODS = ("verbal", "written", "electronic", "thumbprint")
LEGAL_CASE_KINDS = ("criminal", "labour", "civil", "family", "immigration")
LEGAL_CASE_STATUSES = ("considering", "filed", "ongoing", "decided", "withdrawn")
DECLINE_REASONS = (
    "no_capacity",
    "outside_mandate",
    "not_eligible",
    "service_not_available",
    "survivor_unreachable",
    "survivor_declined_service",
    "duplicate_referral",
    "insufficient_information",
    "other",
)
CLOSE_OUTCOMES = (
    "services_completed",
    "survivor_declined_further_services",
    "referred_onward",
    "lost_contact",
    "survivor_relocated",
    "no_longer_needed",
    "other",
    "outcome_not_shared",  # the only outcome allowed when consent forbids feedback
)
OUTCOME_NOT_SHARED = "outcome_not_shared"
CANCEL_REASONS = ("survivor_request", "duplicate", "sent_in_error", "referred_elsewhere",
                  "other")
UPDATE_KINDS = ("appointment", "service_delivered", "note")
ATTACHMENT_MEDIA_TYPES = ("application/pdf", "image/jpeg", "image/png", "text/plain")

MAX_ATTACHMENTS = 8
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # by digest; the node stores and transfers the bytes
MAX_INLINE_BYTES = 48 * 1024  # inline content, decoded

#: Every code list in the schemas, by the ``$defs`` name in ``message-common.schema.json``.
CODE_LISTS: dict[str, tuple[str, ...]] = {
    "message_type": MESSAGE_TYPES,
    "data_category": DATA_CATEGORIES,
    "purpose": PURPOSES,
    "service": SERVICES,
    "sector": SECTORS,
    "incident_type": INCIDENT_TYPES,
    "exploitation_indicator": EXPLOITATION_INDICATORS,
    "perpetrator_relationship": PERPETRATOR_RELATIONSHIPS,
    "job_sector": JOB_SECTORS,
    "migration_status": MIGRATION_STATUSES,
    "do_not_inform": DO_NOT_INFORM,
    "contact_channel": CONTACT_CHANNELS,
    "sex": SEX,
    "gender": GENDER,
    "age_band": AGE_BANDS,
    "urgency": URGENCY,
    "risk_level": RISK_LEVELS,
    "consent_method": CONSENT_METHODS,
    "legal_case_kind": LEGAL_CASE_KINDS,
    "legal_case_status": LEGAL_CASE_STATUSES,
    "decline_reason": DECLINE_REASONS,
    "close_outcome": CLOSE_OUTCOMES,
    "cancel_reason": CANCEL_REASONS,
    "update_kind": UPDATE_KINDS,
    "media_type": ATTACHMENT_MEDIA_TYPES,
}

_PATH_PART = re.compile(r"[a-z][a-z_]{0,39}")


def schema_name(message_type: str) -> str:
    """The schema file stem for a message type: ``info_request`` -> ``info-request``."""
    return message_type.replace("_", "-")


@cache
def bundled_validator(message_type: str) -> Any:
    """The validator for a type's schema with every ``$ref`` inlined (a "bundled" schema).

    Same documents, same Draft 2020-12 validator class and format checks as
    ``caseway.schemas.validator``; only the structure differs. jsonschema resolves each
    ``$ref`` through the ``referencing`` registry on every use, which made validation of a
    full referral about three times slower (``benchmarks/validate.py``). Tests check that
    both validators agree on every message vector.
    """
    cls = schemas.validator_class()
    return cls(bundled_schema(message_type), format_checker=cls.FORMAT_CHECKER)


@cache
def bundled_schema(message_type: str) -> dict[str, Any]:
    """A type's schema with every ``$ref`` inlined (same documents, same meaning)."""
    root = schemas.load(schema_name(message_type))
    bundled: dict[str, Any] = _inline(root, root, depth=0)
    bundled.pop("$defs", None)
    return bundled


@cache
def fast_validator(message_type: str) -> Any:
    """jsonschema-rs (a compiled Draft 2020-12 validator) over the same bundled schema.

    It decides the accept path only: about 75 times faster than ``jsonschema`` on a full
    referral (``benchmarks/validate.py``), which made validation the largest cost of
    opening an envelope. Any document it refuses is validated again by ``jsonschema`` so
    that the error (path, keyword, section) is exactly the documented one. Tests check the
    two agree on every vector and on mutated messages.
    """
    return jsonschema_rs.validator_for(bundled_schema(message_type), validate_formats=True)


def _inline(node: Any, document: dict[str, Any], *, depth: int) -> Any:
    # Caseway's message schemas are acyclic; the depth bound turns a future cycle into a
    # loud failure at first use instead of unbounded recursion.
    if depth > 64:
        raise RecursionError("schema $ref chain too deep (cycle?)")
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            file, _, fragment = node["$ref"].partition("#")
            target_doc = schemas.load(file.removesuffix(".schema.json")) if file else document
            target: Any = target_doc
            for part in filter(None, fragment.split("/")):
                target = target[part]
            return _inline(target, target_doc, depth=depth + 1)
        return {key: _inline(value, document, depth=depth + 1) for key, value in node.items()
                if key not in ("$id", "$schema")}
    if isinstance(node, list):
        return [_inline(item, document, depth=depth + 1) for item in node]
    return node


def _path(parts: Any) -> str:
    # Only schema-defined names and indices; anything else (never expected, since every
    # object is closed) is masked so that no instance key can reach a log.
    out = []
    for part in parts:
        if isinstance(part, int):
            out.append(str(part))
        elif isinstance(part, str) and _PATH_PART.fullmatch(part):
            out.append(part)
        else:
            out.append("?")
    return "/" + "/".join(out)


def _section_of(parts: list[Any]) -> str | None:
    if len(parts) >= 2 and parts[0] == "sections" and parts[1] in DATA_CATEGORIES:
        return str(parts[1])
    if parts and parts[0] in ("attachments", "consent", "tombstone"):
        return str(parts[0])
    return None


def validate_message(message: Mapping[str, Any]) -> str:
    """Validate ``message`` against the schema of its type and return the type.

    Raises ``schema_invalid`` naming the JSON path and the failing keyword, with
    ``section`` set to the data category (or ``attachments``/``consent``) at fault.
    """
    if not isinstance(message, Mapping):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "message must be an object")
    message_type = message.get("type")
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "/type: unknown message type")
    if not fast_validator(message_type).is_valid(message):
        validator = bundled_validator(message_type)
        # The first error in document order (a stable choice: vectors name the code only).
        error = min(validator.iter_errors(message),
                    key=lambda e: [str(p) for p in e.absolute_path], default=None)
        if error is None:  # the two validators disagree: fail closed
            raise CasewayError(ErrorCode.SCHEMA_INVALID, "/: fails the message schema")
        parts = list(error.absolute_path)
        raise CasewayError(ErrorCode.SCHEMA_INVALID,
                           f"{_path(parts)}: fails '{error.validator}'",
                           section=_section_of(parts))
    _check_attachments(message.get("attachments", ()))
    if message_type == "erasure_confirmation":
        tombstone = message["tombstone"]
        for field in ("case_id", "thread_id", "consent_id"):
            if tombstone[field] != message[field]:
                raise CasewayError(ErrorCode.SCHEMA_INVALID,
                                   f"/tombstone/{field}: differs from the message's",
                                   section="tombstone")
    return message_type


def _check_attachments(attachments: Any) -> None:
    # Inline content must be what the digest and size say: the digest is the attachment's
    # identity in the node's store and in the audit log.
    for index, attachment in enumerate(attachments):
        if "inline" not in attachment:
            continue
        content = b64decode(attachment["inline"], field=f"attachments/{index}/inline")
        if len(content) != attachment["size"]:
            raise CasewayError(ErrorCode.SCHEMA_INVALID,
                               f"/attachments/{index}/size: differs from inline content",
                               section="attachments")
        if b64decode(attachment["digest"], field=f"attachments/{index}/digest") != \
                crypto.digest(content):
            raise CasewayError(ErrorCode.SCHEMA_INVALID,
                               f"/attachments/{index}/digest: differs from inline content",
                               section="attachments")
