"""Directory search: which services fit a survivor's situation (SPEC.md "Search").

Rules of this module:

1. Every criterion given must hold (AND); a criterion not given does not filter.
2. Country and sector, service, day names are exact codes. Languages match by RFC 4647
   basic filtering, case-insensitively: asking for ``km`` finds ``km`` and ``km-KH``.
3. Opening times are judged in the participant's own IANA time zone. "Evening" means open at
   some time at or after 18:00 local; "weekend" means open on Saturday or Sunday; "open now"
   means ``at`` falls inside a period (periods are [opens, closes)). ``always_open``
   satisfies all of these.
4. Results are ordered by country, then participant id, so output is stable.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .directory import DAYS, OpeningHours, Participant

EVENING_FROM = 18 * 60  # minutes after local midnight
WEEKEND = ("sat", "sun")
_DAY_ALIASES = {
    **{d: d for d in DAYS},
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun",
}


def parse_day(text: str) -> str:
    """``"Sunday"``, ``"sun"`` → ``"sun"``; ``ValueError`` otherwise."""
    day = _DAY_ALIASES.get(text.strip().lower())
    if day is None:
        raise ValueError("day must be a weekday name such as 'sunday' or 'sun'")
    return day


def open_at(hours: OpeningHours, at: int) -> bool:
    if hours.always_open:
        return True
    local = datetime.fromtimestamp(at, zoneinfo.ZoneInfo(hours.timezone))
    day = DAYS[local.weekday()]
    minute = local.hour * 60 + local.minute
    return any(day in p.days and p.opens <= minute < p.closes for p in hours.periods)


def open_on(hours: OpeningHours, day: str) -> bool:
    return hours.always_open or any(day in p.days for p in hours.periods)


def open_weekends(hours: OpeningHours) -> bool:
    return any(open_on(hours, day) for day in WEEKEND)


def open_evenings(hours: OpeningHours) -> bool:
    return hours.always_open or any(p.closes > EVENING_FROM for p in hours.periods)


def language_matches(offered: str, wanted: str) -> bool:
    """RFC 4647 §3.3.1 basic filtering: ``wanted`` equals ``offered`` or is a prefix of it
    ending at a subtag boundary."""
    offered, wanted = offered.lower(), wanted.lower()
    return offered == wanted or offered.startswith(wanted + "-")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    country: str | None = None
    sector: str | None = None
    service: str | None = None
    language: str | None = None
    open_on: str | None = None  # a day code, "mon" … "sun"
    weekend: bool = False
    evening: bool = False
    open_at: int | None = None  # Unix seconds ("open now" passes the current time)
    has_endpoint: bool | None = None  # True: nodes only; False: information-only only

    def matches(self, p: Participant) -> bool:
        return (
            (self.country is None or p.country == self.country.upper())
            and (self.sector is None or self.sector in p.sectors)
            and (self.service is None or self.service in p.services)
            and (self.language is None
                 or any(language_matches(tag, self.language) for tag in p.languages))
            and (self.open_on is None or open_on(p.hours, self.open_on))
            and (not self.weekend or open_weekends(p.hours))
            and (not self.evening or open_evenings(p.hours))
            and (self.open_at is None or open_at(p.hours, self.open_at))
            and (self.has_endpoint is None or (p.endpoint is not None) == self.has_endpoint)
        )


def search(participants: Iterable[Participant], query: Query) -> list[Participant]:
    return sorted((p for p in participants if query.matches(p)),
                  key=lambda p: (p.country, p.id))


# --------------------------------------------------------------------------- output


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def describe_hours(hours: OpeningHours) -> str:
    """A short human summary: ``Mon-Fri 08:00-17:00; Sun 09:00-15:00``."""
    if hours.always_open:
        return "24/7"
    parts = []
    for period in hours.periods:
        idx = [DAYS.index(d) for d in period.days]
        contiguous = idx == list(range(idx[0], idx[-1] + 1))
        if contiguous and len(idx) > 2:
            days = f"{period.days[0].title()}-{period.days[-1].title()}"
        else:
            days = ",".join(d.title() for d in period.days)
        parts.append(f"{days} {_clock(period.opens)}-{_clock(period.closes)}")
    return "; ".join(parts)


def first_contact(p: Participant) -> str:
    for kind in ("hotline", "phone", "email", "web"):
        values = p.contacts.get(kind) or []
        if values:
            return str(values[0])
    return ""


TABLE_COLUMNS = ("ID", "NAME", "CC", "SECTORS", "LANGUAGES", "HOURS", "CONTACT", "NODE")


def table_rows(results: Sequence[Participant], language: str = "en") -> list[tuple[str, ...]]:
    return [
        (p.id, p.name(language), p.country, ",".join(sorted(p.sectors)),
         ",".join(p.languages), describe_hours(p.hours), first_contact(p),
         "yes" if p.endpoint else "info")
        for p in results
    ]


def format_table(results: Sequence[Participant], language: str = "en") -> str:
    """A plain-text table with aligned columns (one line per participant)."""
    rows = [TABLE_COLUMNS, *table_rows(results, language)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines)


def as_json(results: Sequence[Participant]) -> list[dict[str, Any]]:
    """The matching entries exactly as the directory publishes them."""
    return [dict(p.document) for p in results]
