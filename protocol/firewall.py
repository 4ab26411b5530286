"""The firewall between services and enforcement (BRIEF §4), enforced in code.

Rules of this module (SPEC.md "Firewall"):

1. A participant in a sector of :data:`NEVER_RECEIVES` never receives case data, whatever the
   consent record says. Immigration enforcement is there because the survivor's safety
   depends on it; recruitment agencies are there because the brief names recruiters among
   those her data must never reach (they are often the perpetrators or their agents).
2. A participant in a sector of :data:`REPORTING_ONLY` (police, justice) receives case data
   only when the survivor chose the ``reporting`` purpose for this referral.
3. A participant listed in several sectors is judged by the strictest of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import CasewayError, ErrorCode

SECTORS = (
    "embassy_consular",
    "labour_attache",
    "shelter",
    "social_services",
    "health",
    "mental_health_psychosocial",
    "police",
    "justice_courts",
    "legal_aid",
    "hotline",
    "ngo",
    "trade_union",
    "recruitment_agency",
    "immigration_enforcement",
)
NEVER_RECEIVES = frozenset({"immigration_enforcement", "recruitment_agency"})
REPORTING_ONLY = frozenset({"police", "justice_courts"})
REPORTING_PURPOSE = "reporting"


def check_firewall(recipient_sectors: Iterable[str], purposes: Iterable[str] = ()) -> None:
    """Raise ``firewall`` if case data may not go to a participant in these sectors."""
    sectors = frozenset(recipient_sectors)
    if sectors & NEVER_RECEIVES:
        raise CasewayError(ErrorCode.FIREWALL, "recipient sector never receives case data")
    if sectors & REPORTING_ONLY and REPORTING_PURPOSE not in set(purposes):
        raise CasewayError(ErrorCode.FIREWALL,
                           "police/justice receive case data only for a reporting purpose")
