"""The sample directory: fictional agencies along the demo corridors.

Run ``python examples/directory/sample.py`` to regenerate, byte for byte:

- ``participants/<id>.json``: one participant document per file (input to
  ``caseway authority add``),
- ``directory.json``: the signed directory (authority seed ``AUTHORITY_SEED`` of
  ``examples/vectors/fixtures.py``), ``authority.pub.json``: the key to pin,
- ``directory.csv`` and ``directory.hsds.json``: the published exports.

Every organisation, address, phone number, e-mail address and web site here is fictional
(phone numbers use 555 blocks, domains end in ``.example``). Keys are PUBLIC TEST KEYS: the
seeds of ``fixtures.py`` where the participant is listed there, otherwise
BLAKE2b-256("caseway sample <use> " || participant id). Never use them for a real node.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "caseway_vector_fixtures", HERE.parent / "vectors" / "fixtures.py")
assert _spec is not None and _spec.loader is not None
fixtures = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("caseway_vector_fixtures", fixtures)
_spec.loader.exec_module(fixtures)

ISSUED = fixtures.NOW - 24 * 3600  # 2026-01-14T00:00:00Z
EXPIRES = fixtures.NOW + 365 * 24 * 3600  # 2027-01-15T00:00:00Z
KEYS_FROM = 1767225600  # 2026-01-01T00:00:00Z
SERIAL = 1
PUBLISHER = {
    "en": "South-East Asia Migrant Women Referral Network (fictional sample authority)",
}

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
ALL_WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _seeds(participant: str) -> tuple[bytes, bytes]:
    if participant in fixtures.PARTICIPANTS:
        signing, encryption = fixtures.PARTICIPANTS[participant]
        return bytes.fromhex(signing), bytes.fromhex(encryption)
    return tuple(  # type: ignore[return-value]
        hashlib.blake2b(f"caseway sample {use} {participant}".encode(), digest_size=32).digest()
        for use in ("signing", "encryption"))


def _keys(participant: str) -> list[dict[str, Any]]:
    from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
    from caseway.protocol.encoding import b64encode

    signing_seed, encryption_secret = _seeds(participant)
    signing = SigningKeyPair(signing_seed)
    encryption = EncryptionKeyPair(encryption_secret)
    return [
        {"use": "signing", "key": b64encode(signing.public_key), "key_id": signing.key_id,
         "valid_from": KEYS_FROM, "valid_until": None, "status": "active", "revoked_at": None},
        {"use": "encryption", "key": b64encode(encryption.public_key),
         "key_id": encryption.key_id, "valid_from": KEYS_FROM, "valid_until": None,
         "status": "active", "revoked_at": None},
    ]


def _revoked_signing_key(participant: str, revoked_at: int) -> dict[str, Any]:
    """An older signing key, revoked (for example after a laptop was stolen)."""
    from caseway.protocol.crypto import SigningKeyPair
    from caseway.protocol.encoding import b64encode

    seed = hashlib.blake2b(f"caseway sample revoked {participant}".encode(),
                           digest_size=32).digest()
    old = SigningKeyPair(seed)
    return {"use": "signing", "key": b64encode(old.public_key), "key_id": old.key_id,
            "valid_from": KEYS_FROM - 180 * 24 * 3600, "valid_until": KEYS_FROM,
            "status": "revoked", "revoked_at": revoked_at}


def participants() -> list[dict[str, Any]]:
    """The sample participants, in directory order."""
    entries: list[dict[str, Any]] = [
        {
            "id": "ph-embassy-kl",
            "names": {
                "en": "Embassy of the Philippines, Kuala Lumpur: Migrant Workers Office",
                "fil": "Embahada ng Pilipinas sa Kuala Lumpur: Tanggapan ng mga Manggagawang "
                       "Migrante",
                "ms": "Kedutaan Besar Filipina, Kuala Lumpur: Pejabat Pekerja Migran",
            },
            "description": {"en": "Consular protection and labour attaché for Filipino "
                                  "workers in Malaysia; Sunday outreach for domestic workers. "
                                  "Fictional sample entry."},
            "country": "MY",
            "serves_nationalities": ["PH"],
            "sectors": ["embassy_consular", "labour_attache"],
            "services": ["case_management", "documentation", "repatriation",
                         "labour_complaints", "temporary_shelter", "interpretation"],
            "languages": ["en", "fil", "ceb", "ms"],
            "hours": {"timezone": "Asia/Kuala_Lumpur", "periods": [
                {"days": WEEKDAYS, "opens": "08:00", "closes": "17:00"},
                {"days": ["sun"], "opens": "09:00", "closes": "15:00"},
            ]},
            "contacts": {
                "phone": ["+60 3 5550 1201"], "hotline": ["+60 12 555 0120"],
                "email": ["welfare@ph-embassy-kl.example"],
                "web": ["https://ph-embassy-kl.example"],
                "address": {"street": "12 Jalan Contoh Ampang", "locality": "Kuala Lumpur",
                            "postal_code": "50450", "country": "MY"},
            },
            "endpoint": "https://caseway.ph-embassy-kl.example/federation",
        },
        {
            "id": "id-consulate-jb",
            "names": {
                "en": "Consulate of Indonesia, Johor Bahru: Citizen Protection Desk",
                "id": "Konsulat Republik Indonesia Johor Bahru: Layanan Pelindungan WNI",
                "ms": "Konsulat Indonesia, Johor Bahru",
            },
            "description": {"en": "Protection desk for Indonesian migrant workers in Johor. "
                                  "Fictional sample entry."},
            "country": "MY",
            "serves_nationalities": ["ID"],
            "sectors": ["embassy_consular", "labour_attache"],
            "services": ["case_management", "documentation", "repatriation",
                         "labour_complaints", "interpretation"],
            "languages": ["id", "jv", "ms", "en"],
            "hours": {"timezone": "Asia/Kuala_Lumpur", "periods": [
                {"days": WEEKDAYS, "opens": "08:30", "closes": "16:30"},
                {"days": ["sat"], "opens": "09:00", "closes": "13:00"},
            ]},
            "contacts": {
                "phone": ["+60 7 555 0302"], "email": ["pelindungan@id-consulate-jb.example"],
                "web": ["https://id-consulate-jb.example"],
                "address": {"street": "8 Jalan Contoh Tebrau", "locality": "Johor Bahru",
                            "region": "Johor", "postal_code": "80300", "country": "MY"},
            },
            "endpoint": "https://caseway.id-consulate-jb.example/federation",
        },
        {
            "id": "ph-shelter-manila",
            "names": {
                "en": "National Shelter for Women and Children, Manila",
                "fil": "Pambansang Kanlungan para sa Kababaihan at mga Bata, Maynila",
            },
            "description": {"en": "Government temporary shelter with social workers and "
                                  "reintegration support for returning women migrant "
                                  "workers. Fictional sample entry."},
            "country": "PH",
            "sectors": ["shelter", "social_services"],
            "services": ["temporary_shelter", "case_management", "counselling",
                         "reintegration", "children_services"],
            "languages": ["fil", "en", "ceb"],
            "hours": {"timezone": "Asia/Manila", "always_open": True,
                      "notes": {"en": "Admissions 24/7; office visits Mon-Fri."}},
            "contacts": {
                "phone": ["+63 2 8555 0140"], "email": ["intake@ph-shelter-manila.example"],
                "address": {"street": "40 Kalye Halimbawa, Sampaloc", "locality": "Manila",
                            "region": "Metro Manila", "postal_code": "1008", "country": "PH"},
            },
            "endpoint": "https://caseway.ph-shelter-manila.example/federation",
        },
        {
            "id": "ph-legal-cebu",
            "names": {
                "en": "Visayas Migrant Women Legal Aid Centre",
                "fil": "Sentro ng Tulong Legal para sa Kababaihang Migrante, Visayas",
                "ceb": "Sentro sa Legal nga Tabang alang sa mga Babayeng Migrante, Visayas",
            },
            "description": {"en": "Legal-aid NGO: recruitment fraud, wage claims and "
                                  "criminal complaints for returnees; Wednesday evening "
                                  "clinic. Fictional sample entry."},
            "country": "PH",
            "sectors": ["legal_aid", "ngo"],
            "services": ["legal_advice", "legal_representation", "labour_complaints",
                         "reporting_assistance"],
            "languages": ["ceb", "fil", "en"],
            "hours": {"timezone": "Asia/Manila", "periods": [
                {"days": ["mon", "tue", "thu", "fri"], "opens": "09:00", "closes": "17:00"},
                {"days": ["wed"], "opens": "09:00", "closes": "20:00"},
                {"days": ["sat"], "opens": "09:00", "closes": "12:00"},
            ]},
            "contacts": {
                "phone": ["+63 32 555 0170"], "email": ["help@ph-legal-cebu.example"],
                "web": ["https://ph-legal-cebu.example"],
                "address": {"street": "7 Dalan Pananglitan", "locality": "Cebu City",
                            "region": "Cebu", "postal_code": "6000", "country": "PH"},
            },
            "endpoint": "https://caseway.ph-legal-cebu.example/federation",
        },
        {
            "id": "th-oscc-bangkok",
            "names": {
                "en": "One Stop Crisis Centre, Chao Phraya General Hospital",
                "th": "ศูนย์พึ่งได้ โรงพยาบาลเจ้าพระยา",
            },
            "description": {"en": "Hospital-based crisis centre: emergency care, forensic "
                                  "examination and counselling, with Burmese and Khmer "
                                  "interpreters. Fictional sample entry."},
            "country": "TH",
            "sectors": ["health", "mental_health_psychosocial", "social_services"],
            "services": ["medical_care", "forensic_examination", "counselling",
                         "case_management", "interpretation"],
            "languages": ["th", "en", "my", "km"],
            "hours": {"timezone": "Asia/Bangkok", "always_open": True},
            "contacts": {
                "phone": ["+66 2 555 0160"], "hotline": ["+66 2 555 0161"],
                "email": ["oscc@th-oscc-bangkok.example"],
                "address": {"street": "99 Thanon Tua-yang", "locality": "Bangkok",
                            "postal_code": "10400", "country": "TH"},
            },
            "endpoint": "https://caseway.th-oscc-bangkok.example/federation",
        },
        {
            "id": "kh-shelter-phnompenh",
            "names": {
                "en": "Safe Haven Women's Shelter, Phnom Penh",
                "km": "ផ្ទះសុវត្ថិភាពសម្រាប់ស្ត្រី ភ្នំពេញ",
            },
            "description": {"en": "NGO shelter for women and children returning from "
                                  "Thailand and Malaysia. Fictional sample entry."},
            "country": "KH",
            "sectors": ["shelter", "ngo"],
            "services": ["temporary_shelter", "counselling", "reintegration",
                         "children_services", "case_management"],
            "languages": ["km", "en", "th"],
            "hours": {"timezone": "Asia/Phnom_Penh", "always_open": True},
            "contacts": {
                "phone": ["+855 23 555 080"], "email": ["intake@kh-shelter-phnompenh.example"],
                "address": {"street": "15 Phlov Ter-uthea", "locality": "Phnom Penh",
                            "postal_code": "120101", "country": "KH"},
            },
            "endpoint": "https://caseway.kh-shelter-phnompenh.example/federation",
        },
        {
            "id": "kh-legal-phnompenh",
            "names": {
                "en": "Cambodian Migrant Workers Legal Aid Clinic",
                "km": "គ្លីនិកជំនួយផ្លូវច្បាប់សម្រាប់ពលករចំណាកស្រុកកម្ពុជា",
            },
            "description": {"en": "Free legal advice for returning migrant workers; Sunday "
                                  "morning clinic. Information only (no Caseway node). "
                                  "Fictional sample entry."},
            "country": "KH",
            "sectors": ["legal_aid", "ngo"],
            "services": ["legal_advice", "legal_representation", "labour_complaints"],
            "languages": ["km", "en", "th"],
            "hours": {"timezone": "Asia/Phnom_Penh", "periods": [
                {"days": WEEKDAYS, "opens": "08:00", "closes": "17:00"},
                {"days": ["sun"], "opens": "08:00", "closes": "12:00"},
            ]},
            "contacts": {
                "phone": ["+855 23 555 090"], "email": ["clinic@kh-legal-phnompenh.example"],
                "address": {"street": "22 Phlov Ter-uthea", "locality": "Phnom Penh",
                            "postal_code": "120101", "country": "KH"},
            },
        },
        {
            "id": "kh-legal-battambang",
            "names": {
                "en": "Northwest Legal Aid Office, Battambang",
                "km": "ការិយាល័យជំនួយផ្លូវច្បាប់ភាគពាយព្យ បាត់ដំបង",
            },
            "description": {"en": "Legal aid for returnees from Thailand; closed Sundays. "
                                  "Information only. Fictional sample entry."},
            "country": "KH",
            "sectors": ["legal_aid"],
            "services": ["legal_advice", "labour_complaints"],
            "languages": ["km"],
            "hours": {"timezone": "Asia/Phnom_Penh", "periods": [
                {"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "opens": "08:00",
                 "closes": "17:00"},
            ]},
            "contacts": {"phone": ["+855 53 555 010"]},
        },
        {
            "id": "ph-hotline-migrants",
            "names": {
                "en": "Migrant Workers Help Line (24/7)",
                "fil": "Linya ng Tulong para sa mga Migranteng Manggagawa (24/7)",
            },
            "description": {"en": "Round-the-clock hotline for Filipino migrant workers and "
                                  "their families, at home and abroad. Information only. "
                                  "Fictional sample entry."},
            "country": "PH",
            "sectors": ["hotline"],
            "services": ["crisis_line", "information_referral"],
            "languages": ["fil", "en", "ceb"],
            "hours": {"timezone": "Asia/Manila", "always_open": True},
            "contacts": {"hotline": ["1555", "+63 2 8555 0199"],
                         "web": ["https://ph-hotline-migrants.example"]},
        },
        {
            "id": "my-immigration-kl",
            "names": {
                "en": "Immigration Enforcement Office, Kuala Lumpur",
                "ms": "Pejabat Penguatkuasaan Imigresen, Kuala Lumpur",
            },
            "description": {"en": "Immigration enforcement. Listed so that the firewall "
                                  "refuses it: it never receives case data. Fictional sample "
                                  "entry."},
            "country": "MY",
            "sectors": ["immigration_enforcement"],
            "services": [],
            "languages": ["ms", "en"],
            "hours": {"timezone": "Asia/Kuala_Lumpur", "periods": [
                {"days": WEEKDAYS, "opens": "08:00", "closes": "17:00"},
            ]},
            "contacts": {"phone": ["+60 3 5550 1900"],
                         "address": {"street": "3 Jalan Contoh Duta", "locality": "Kuala Lumpur",
                                     "postal_code": "50480", "country": "MY"}},
            "endpoint": "https://caseway.my-immigration-kl.example/federation",
        },
    ]
    for entry in entries:
        entry["keys"] = _keys(entry["id"]) if "endpoint" in entry else []
    legal = next(e for e in entries if e["id"] == "ph-legal-cebu")
    legal["keys"].insert(0, _revoked_signing_key("ph-legal-cebu", KEYS_FROM - 30 * 24 * 3600))
    return entries


def authority():  # type: ignore[no-untyped-def]
    from caseway.protocol.crypto import SigningKeyPair

    return SigningKeyPair(bytes.fromhex(fixtures.AUTHORITY_SEED))


def signed_directory() -> bytes:
    from caseway.keys.directory import build_directory

    return build_directory(participants(), authority=authority(), serial=SERIAL,
                           issued=ISSUED, expires=EXPIRES, publisher=PUBLISHER)


def main() -> None:
    from caseway.keys.directory import verify_directory
    from caseway.keys.export import to_csv, to_hsds
    from caseway.protocol.encoding import b64encode

    folder = HERE / "participants"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    for entry in participants():
        (folder / f"{entry['id']}.json").write_text(
            json.dumps(entry, indent=2, ensure_ascii=False) + "\n", "utf-8")
    data = signed_directory()
    (HERE / "directory.json").write_bytes(data + b"\n")
    key = authority()
    (HERE / "authority.pub.json").write_text(json.dumps(
        {"key": b64encode(key.public_key), "key_id": key.key_id}, indent=2) + "\n", "utf-8")
    directory = verify_directory(data, [key.public_key])
    (HERE / "directory.csv").write_text(to_csv(directory), "utf-8")
    (HERE / "directory.hsds.json").write_text(
        json.dumps(to_hsds(directory), indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {len(directory.participants)} participants, serial {directory.serial}")


if __name__ == "__main__":
    main()
