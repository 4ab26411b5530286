"""Publishing the directory as a service directory: CSV and Open Referral HSDS-style JSON.

Rules of this module (SPEC.md "Export"):

1. Exports are made from a *verified* directory only, so what a ministry publishes is what
   the authority signed. Keys and endpoints are protocol data and are not exported, except a
   yes/no column telling whether the service takes Caseway referrals.
2. HSDS: one ``organization`` per participant, holding one ``service`` (with its
   ``languages``, ``phones``, ``schedules`` and ``attributes`` for sectors and services) and,
   when an address is listed, one ``location`` linked by ``service_at_locations``. Ids are
   UUIDv5 of the participant id, so re-exporting gives the same ids. Weekly periods become
   ``freq: WEEKLY`` schedules with iCal ``byday`` codes; 24/7 is 00:00–23:59 every day, as
   HSDS recommends.
3. CSV cells that a spreadsheet would run as a formula (leading ``=``, ``@``, ``+``, ``-``,
   tab, CR) get a leading apostrophe, except phone numbers already validated by the schema.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
import zoneinfo
from datetime import datetime
from typing import Any

from .directory import DAYS, Directory, Participant
from .search import describe_hours, open_evenings, open_weekends

HSDS_VERSION = "3.0"
_NAMESPACE = uuid.UUID("6f0c4a39-8f0e-5b7a-9a43-6361736577b1")  # fixed: caseway HSDS ids
_ICAL_DAYS = dict(zip(DAYS, ("MO", "TU", "WE", "TH", "FR", "SA", "SU"), strict=True))
_PHONE = re.compile(r"\+?[0-9][0-9 -]*")
LANGUAGE_NAMES = {
    "en": "English", "fil": "Filipino", "tl": "Tagalog", "ceb": "Cebuano", "ms": "Malay",
    "id": "Indonesian", "jv": "Javanese", "th": "Thai", "km": "Khmer", "my": "Burmese",
    "vi": "Vietnamese", "lo": "Lao", "zh": "Chinese", "ta": "Tamil",
}
CSV_COLUMNS = (
    "id", "name_en", "name_local", "country", "sectors", "services", "languages", "timezone",
    "hours", "open_weekends", "open_evenings", "phone", "hotline", "email", "web", "address",
    "takes_referrals",
)


def _id(kind: str, participant_id: str, n: int = 0) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{participant_id}:{n}"))


def _local_name(p: Participant) -> str:
    return next((name for tag, name in p.names.items() if tag != "en"), "")


def _address_line(p: Participant) -> str:
    address = p.contacts.get("address")
    if not address:
        return ""
    parts = [address.get(k) for k in ("street", "locality", "region", "postal_code", "country")]
    return ", ".join(part for part in parts if part)


def _cell(value: str) -> str:
    if value and value[0] in "=@\t\r+-" and _PHONE.fullmatch(value) is None:
        return "'" + value
    return value


def to_csv(directory: Directory) -> str:
    """One row per participant, columns :data:`CSV_COLUMNS`; lists joined with ``;``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in sorted(directory.participants, key=lambda p: (p.country, p.id)):
        row = [
            p.id, p.name("en"), _local_name(p), p.country, ";".join(sorted(p.sectors)),
            ";".join(p.services), ";".join(p.languages), p.hours.timezone,
            describe_hours(p.hours), "yes" if open_weekends(p.hours) else "no",
            "yes" if open_evenings(p.hours) else "no",
            ";".join(p.contacts.get("phone", [])), ";".join(p.contacts.get("hotline", [])),
            ";".join(p.contacts.get("email", [])), ";".join(p.contacts.get("web", [])),
            _address_line(p), "yes" if p.endpoint else "no",
        ]
        writer.writerow([_cell(str(v)) for v in row])
    return out.getvalue()


def _utc_offset_hours(timezone: str, at: int) -> float | int:
    offset = datetime.fromtimestamp(at, zoneinfo.ZoneInfo(timezone)).utcoffset()
    hours = (offset.total_seconds() if offset else 0) / 3600
    return int(hours) if hours == int(hours) else hours


def _schedules(p: Participant, service_id: str, at: int) -> list[dict[str, Any]]:
    tz = p.hours.timezone
    offset = _utc_offset_hours(tz, at)
    if p.hours.always_open:
        return [{"id": _id("schedule", p.id), "service_id": service_id, "freq": "WEEKLY",
                 "byday": ",".join(_ICAL_DAYS.values()), "opens_at": "00:00",
                 "closes_at": "23:59", "timezone": offset,
                 "description": f"Open 24 hours, every day ({tz})"}]
    schedules = []
    for n, period in enumerate(p.hours.periods):
        closes = "23:59" if period.closes == 1440 else (
            f"{period.closes // 60:02d}:{period.closes % 60:02d}")
        schedules.append({
            "id": _id("schedule", p.id, n), "service_id": service_id, "freq": "WEEKLY",
            "byday": ",".join(_ICAL_DAYS[d] for d in period.days),
            "opens_at": f"{period.opens // 60:02d}:{period.opens % 60:02d}",
            "closes_at": closes, "timezone": offset,
            "description": f"local time ({tz})",
        })
    return schedules


def _organization(p: Participant, at: int) -> dict[str, Any]:
    org_id, service_id = _id("organization", p.id), _id("service", p.id)
    contacts = p.contacts
    languages = [{"id": _id("language", p.id, n), "service_id": service_id,
                  "name": LANGUAGE_NAMES.get(tag.split("-")[0], tag), "code": tag}
                 for n, tag in enumerate(p.languages)]
    phones = [{"id": _id("phone", p.id, n), "service_id": service_id, "number": number,
               "type": kind, "languages": [dict(lang) for lang in languages]}
              for n, (kind, number) in enumerate(
                  [("voice", x) for x in contacts.get("phone", [])]
                  + [("hotline", x) for x in contacts.get("hotline", [])])]
    description = p.document.get("description", {})
    attributes = (
        [{"id": _id("attribute", p.id, n), "link_id": service_id, "link_type": "service",
          "taxonomy_term": {"code": code, "term": code.replace("_", " "),
                            "taxonomy": "caseway-sector"}}
         for n, code in enumerate(sorted(p.sectors))]
        + [{"id": _id("attribute", p.id, 100 + n), "link_id": service_id,
            "link_type": "service",
            "taxonomy_term": {"code": code, "term": code.replace("_", " "),
                              "taxonomy": "caseway-service"}}
           for n, code in enumerate(p.services)]
    )
    service: dict[str, Any] = {
        "id": service_id, "organization_id": org_id, "name": p.name("en"),
        "alternate_name": _local_name(p) or None,
        "description": description.get("en") or p.name("en"),
        "status": "active", "email": next(iter(contacts.get("email", [])), None),
        "url": next(iter(contacts.get("web", [])), None),
        "languages": languages, "phones": phones,
        "schedules": _schedules(p, service_id, at), "attributes": attributes,
        "service_at_locations": [],
    }
    locations = []
    address = contacts.get("address")
    if address:
        location_id = _id("location", p.id)
        locations.append({
            "id": location_id, "organization_id": org_id, "location_type": "physical",
            "name": p.name("en"),
            "addresses": [{
                "id": _id("address", p.id), "location_id": location_id,
                "address_1": address["street"], "city": address["locality"],
                "region": address.get("region"), "state_province": address.get("region"),
                "postal_code": address.get("postal_code"), "country": address["country"],
                "address_type": "physical",
            }],
        })
        service["service_at_locations"].append({
            "id": _id("service_at_location", p.id), "service_id": service_id,
            "location_id": location_id,
        })
    return {
        "id": org_id, "name": p.name("en"), "alternate_name": _local_name(p) or None,
        "description": description.get("en") or p.name("en"),
        "email": service["email"], "website": service["url"],
        "identifier": p.id, "services": [service], "locations": locations,
        "phones": [],
    }


def to_hsds(directory: Directory) -> dict[str, Any]:
    """The directory as HSDS-style JSON (rule 2). Offsets in ``timezone`` are those in force
    at the directory's ``issued`` time (the IANA zone is named in each description)."""
    participants = sorted(directory.participants, key=lambda p: (p.country, p.id))
    return {
        "hsds_version": HSDS_VERSION,
        "source": {"format": "caseway-directory", "serial": directory.serial,
                   "issued": directory.issued, "expires": directory.expires,
                   "authority": directory.authority},
        "organizations": [_organization(p, directory.issued) for p in participants],
    }
