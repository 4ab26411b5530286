"""The survivor's consent record and the rule that decides whether a message may go to a
recipient (BRIEF §4, SPEC.md "Consent").

Rules of this module, in the order :func:`check_consent` applies them (SPEC.md numbers them
C1–C9):

C1. Firewall first: :func:`caseway.protocol.firewall.check_firewall` on the recipient's
    directory sectors and the purposes in play. No consent can open it (``firewall``).
C2. A withdrawn consent authorises nothing (``consent_withdrawn``).
C3. An expired consent authorises nothing: ``now >= expires_at`` (``consent_expired``).
C4. Consent cannot postdate the message that relies on it: ``given_at <= sent_at``.
C5. The recipient must be in scope, by participant id or by one of its directory sectors
    (section ``recipient``).
C6. The message's purposes must all be purposes she chose (section ``purposes``).
C7. Every ``sections`` member, and the category of every attachment, must be a data
    category she agreed to share (section = the category, or ``attachments``).
C8. She may refuse services: a referral never requests a service she refused
    (section ``needs``).
C9. An onward referral needs ``onward_referral_allowed`` (section ``onward_referral``).

Every refusal other than C1–C3 is ``consent_violation`` with ``section`` naming what to fix.
The function is pure: the caller supplies the recipient's sectors, the time and the set of
withdrawn consent ids.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CasewayError, ErrorCode
from .firewall import check_firewall


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentScope:
    """What she agreed to: to whom, what for, which categories, onward and feedback."""

    participants: frozenset[str]
    sectors: frozenset[str]
    purposes: frozenset[str]
    data_categories: frozenset[str]
    onward_referral_allowed: bool
    feedback_allowed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRecord:
    """"A referral carries the survivor's consent record: when, how, in which language, with
    or without an interpreter, recorded by whom, and its scope" (BRIEF §4)."""

    consent_id: str
    given_at: int
    method: str
    language: str
    interpreter_used: bool
    recorded_by: str
    scope: ConsentScope
    expires_at: int
    restrictions: tuple[str, ...] = ()
    services_refused: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.expires_at <= self.given_at:
            raise CasewayError(ErrorCode.SCHEMA_INVALID,
                               "/consent/expires_at: must be after given_at", section="consent")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ConsentRecord:
        """Build from a schema-valid ``consent`` object (``consent.schema.json``)."""
        scope = obj["scope"]
        return cls(
            consent_id=obj["consent_id"],
            given_at=obj["given_at"],
            method=obj["method"],
            language=obj["language"],
            interpreter_used=obj["interpreter_used"],
            recorded_by=obj["recorded_by"],
            scope=ConsentScope(
                participants=frozenset(scope["recipients"]["participants"]),
                sectors=frozenset(scope["recipients"]["sectors"]),
                purposes=frozenset(scope["purposes"]),
                data_categories=frozenset(scope["data_categories"]),
                onward_referral_allowed=scope["onward_referral_allowed"],
                feedback_allowed=scope["feedback_allowed"],
            ),
            expires_at=obj["expires_at"],
            restrictions=tuple(obj["restrictions"]),
            services_refused=frozenset(obj["services_refused"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form (lists sorted, so the output is deterministic)."""
        s = self.scope
        return {
            "consent_id": self.consent_id,
            "given_at": self.given_at,
            "method": self.method,
            "language": self.language,
            "interpreter_used": self.interpreter_used,
            "recorded_by": self.recorded_by,
            "scope": {
                "recipients": {"participants": sorted(s.participants),
                               "sectors": sorted(s.sectors)},
                "purposes": sorted(s.purposes),
                "data_categories": sorted(s.data_categories),
                "onward_referral_allowed": s.onward_referral_allowed,
                "feedback_allowed": s.feedback_allowed,
            },
            "expires_at": self.expires_at,
            "restrictions": list(self.restrictions),
            "services_refused": sorted(self.services_refused),
        }


def check_consent_valid(consent: ConsentRecord, *, now: int,
                        withdrawn: Container[str]) -> None:
    """C2–C3: the consent still authorises anything at time ``now``."""
    if consent.consent_id in withdrawn:
        raise CasewayError(ErrorCode.CONSENT_WITHDRAWN, "consent record was withdrawn",
                           section="consent")
    if now >= consent.expires_at:
        raise CasewayError(ErrorCode.CONSENT_EXPIRED, "consent record expired",
                           section="consent")


def check_consent(
    message: Mapping[str, Any],
    *,
    consent: ConsentRecord,
    recipient: str,
    recipient_sectors: frozenset[str],
    now: int,
    withdrawn: Container[str],
) -> None:
    """Decide whether a schema-valid data message may go to ``recipient`` (rules C1–C9).

    ``consent`` is the message's own record (referral, onward referral) or the thread's
    (info response). Raises ``CasewayError``; returns ``None`` when the message may go.
    """
    purposes = frozenset(message.get("purposes", consent.scope.purposes))
    # C1: the firewall is not a consent question.
    check_firewall(recipient_sectors, purposes)
    # C2, C3
    check_consent_valid(consent, now=now, withdrawn=withdrawn)
    # C4
    if consent.given_at > message["sent_at"]:
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "consent given after the message "
                           "was sent", section="consent")
    scope = consent.scope
    # C5
    if recipient not in scope.participants and not recipient_sectors & scope.sectors:
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "recipient is not in the consent "
                           "scope (by participant or sector)", section="recipient")
    # C6
    if not purposes <= scope.purposes:
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "a purpose is outside the consent "
                           "scope", section="purposes")
    # C7: section names come from the schema's closed list, so naming them is structural.
    for category in message.get("sections", {}):
        if category not in scope.data_categories:
            raise CasewayError(ErrorCode.CONSENT_VIOLATION, f"section '{category}' is "
                               "outside the consented data categories", section=category)
    for index, attachment in enumerate(message.get("attachments", ())):
        if attachment["category"] not in scope.data_categories:
            raise CasewayError(ErrorCode.CONSENT_VIOLATION, f"attachment {index} is of a "
                               "category outside the consent", section="attachments")
    # C8
    needs = message.get("sections", {}).get("needs")
    if needs is not None and set(needs["services_requested"]) & consent.services_refused:
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "a requested service is one she "
                           "refused", section="needs")
    # C9
    if message["type"] == "onward_referral" and not scope.onward_referral_allowed:
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "consent does not allow onward "
                           "referral", section="onward_referral")


def check_feedback(message: Mapping[str, Any], *, consent: ConsentRecord, now: int,
                   withdrawn: Container[str]) -> None:
    """"Outcomes go back to the referrer only when consent allows feedback" (BRIEF §5).

    ``update`` and ``close`` from the receiver are feedback. Without ``feedback_allowed`` an
    update is refused, and a close may only say ``outcome_not_shared`` (with no services
    listed and no note): the thread still closes on both sides, the outcome stays put.
    """
    check_consent_valid(consent, now=now, withdrawn=withdrawn)
    if consent.scope.feedback_allowed:
        return
    if message["type"] == "close":
        if (message["outcome"] == "outcome_not_shared"
                and not {"services_delivered", "note"} & set(message)):
            return
        raise CasewayError(ErrorCode.CONSENT_VIOLATION, "consent does not allow feedback: "
                           "close may only carry outcome_not_shared", section="feedback")
    raise CasewayError(ErrorCode.CONSENT_VIOLATION, "consent does not allow feedback to the "
                       "referrer", section="feedback")
