"""Search semantics, the Khmer/Sunday example, CSV and HSDS exports, and the `caseway
directory` / `caseway authority` commands."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from directory_helpers import AUTHORITY, NOW, SAMPLE_DIR, sample_authority_key, sample_bytes

from caseway.keys.directory import OpeningHours, Period, verify_directory
from caseway.keys.export import CSV_COLUMNS, to_csv, to_hsds
from caseway.keys.search import (
    Query,
    language_matches,
    open_at,
    open_evenings,
    open_weekends,
    parse_day,
    search,
)
from caseway.node.cli import main

DIRECTORY = verify_directory(sample_bytes(), [AUTHORITY.public_key])
# 2026-01-18 is a Sunday. 02:00Z = 10:00 in Manila and Kuala Lumpur, 09:00 in Phnom Penh.
SUNDAY_0200Z = 1768701600


def _ids(query: Query) -> list[str]:
    return [p.id for p in search(DIRECTORY.participants, query)]


def test_issue_example_khmer_legal_aid_in_cambodia_open_sundays() -> None:
    query = Query(country="KH", sector="legal_aid", language="km", open_on="sun")
    assert _ids(query) == ["kh-legal-phnompenh"]
    # Each criterion matters: without the Sunday filter the Battambang office appears too,
    # and the shelter speaks Khmer and is open on Sundays but is not legal aid.
    assert _ids(Query(country="KH", sector="legal_aid", language="km")) == [
        "kh-legal-battambang", "kh-legal-phnompenh"]
    assert "kh-shelter-phnompenh" in _ids(Query(country="KH", language="km", open_on="sun"))


def test_no_criteria_returns_everything_in_stable_order() -> None:
    results = search(DIRECTORY.participants, Query())
    assert len(results) == len(DIRECTORY.participants)
    assert [(p.country, p.id) for p in results] == sorted((p.country, p.id) for p in results)


def test_language_matching_is_prefix_and_case_insensitive() -> None:
    assert language_matches("km-KH", "km") and language_matches("KM", "km")
    assert not language_matches("kmr", "km") and not language_matches("km", "km-KH")
    assert "th-oscc-bangkok" in _ids(Query(language="my"))  # Burmese interpreters


def test_sector_service_and_node_filters() -> None:
    assert _ids(Query(sector="immigration_enforcement")) == ["my-immigration-kl"]
    assert _ids(Query(service="forensic_examination")) == ["th-oscc-bangkok"]
    info = _ids(Query(has_endpoint=False))
    assert set(info) == {"kh-legal-battambang", "kh-legal-phnompenh", "ph-hotline-migrants"}


def test_evening_and_weekend() -> None:
    evening = set(_ids(Query(evening=True)))
    assert "ph-legal-cebu" in evening  # Wednesday clinic until 20:00
    assert "ph-hotline-migrants" in evening  # 24/7
    assert "ph-embassy-kl" not in evening  # closes 17:00
    weekend = set(_ids(Query(weekend=True)))
    assert {"ph-embassy-kl", "id-consulate-jb", "ph-legal-cebu"} <= weekend
    assert "my-immigration-kl" not in weekend


def test_hours_edges() -> None:
    hours = OpeningHours("Asia/Manila", False, (Period(("mon",), 9 * 60, 18 * 60),))
    assert not open_evenings(hours)  # closing at 18:00 is not open in the evening
    assert not open_weekends(hours)
    evening = OpeningHours("Asia/Manila", False, (Period(("sat",), 17 * 60, 18 * 60 + 1),))
    assert open_evenings(evening) and open_weekends(evening)


def test_open_now_uses_each_participants_time_zone() -> None:
    embassy = DIRECTORY.get("ph-embassy-kl")
    consulate = DIRECTORY.get("id-consulate-jb")
    clinic = DIRECTORY.get("kh-legal-phnompenh")
    assert embassy and consulate and clinic
    assert open_at(embassy.hours, SUNDAY_0200Z)  # Sunday 10:00 in KL, 09:00-15:00
    assert not open_at(consulate.hours, SUNDAY_0200Z)  # closed on Sundays
    assert open_at(clinic.hours, SUNDAY_0200Z)  # 09:00 in Phnom Penh, 08:00-12:00
    assert not open_at(clinic.hours, SUNDAY_0200Z - 2 * 3600)  # 07:00 local
    assert not open_at(clinic.hours, SUNDAY_0200Z + 3 * 3600)  # 12:00 local: closed
    open_now = set(_ids(Query(open_at=SUNDAY_0200Z)))
    assert {"ph-embassy-kl", "kh-legal-phnompenh", "ph-hotline-migrants"} <= open_now
    assert "id-consulate-jb" not in open_now


def test_parse_day() -> None:
    assert parse_day("Sunday") == parse_day("sun") == "sun"
    with pytest.raises(ValueError):
        parse_day("someday")


# --------------------------------------------------------------------------- exports


def test_csv_export() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(DIRECTORY))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(DIRECTORY.participants)
    by_id = {row["id"]: row for row in rows}
    clinic = by_id["kh-legal-phnompenh"]
    assert clinic["country"] == "KH" and clinic["languages"] == "km;en;th"
    assert clinic["hours"] == "Mon-Fri 08:00-17:00; Sun 08:00-12:00"
    assert clinic["takes_referrals"] == "no" and clinic["open_weekends"] == "yes"
    assert by_id["ph-hotline-migrants"]["hotline"] == "1555;+63 2 8555 0199"
    assert "key" not in to_csv(DIRECTORY).lower().split(",")[0]


def test_csv_neutralises_formulas() -> None:
    from caseway.keys.export import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("+63 2 8555 0199") == "+63 2 8555 0199"
    assert _cell("+SUM(A1)") == "'+SUM(A1)"


HSDS_ORG_FIELDS = {"id", "name", "alternate_name", "description", "email", "website",
                   "services", "locations"}
HSDS_SERVICE_FIELDS = {"id", "organization_id", "name", "description", "status", "languages",
                       "phones", "schedules", "service_at_locations"}


def test_hsds_export_has_the_fields_it_claims() -> None:
    hsds = to_hsds(DIRECTORY)
    assert hsds["hsds_version"] == "3.0" and hsds["source"]["serial"] == DIRECTORY.serial
    orgs = hsds["organizations"]
    assert len(orgs) == len(DIRECTORY.participants)
    ids: set[str] = set()
    for org in orgs:
        assert set(org) >= HSDS_ORG_FIELDS
        participant = DIRECTORY.get(org["identifier"])
        assert participant is not None and org["name"] == participant.names["en"]
        (service,) = org["services"]
        assert set(service) >= HSDS_SERVICE_FIELDS
        assert service["organization_id"] == org["id"] and service["status"] == "active"
        assert [lang["code"] for lang in service["languages"]] == list(participant.languages)
        for lang in service["languages"]:
            assert lang["service_id"] == service["id"] and lang["name"]
        for phone in service["phones"]:
            assert phone["service_id"] == service["id"]
            assert phone["type"] in {"voice", "hotline"}
        for schedule in service["schedules"]:
            assert schedule["service_id"] == service["id"] and schedule["freq"] == "WEEKLY"
            assert set(schedule["byday"].split(",")) <= {"MO", "TU", "WE", "TH", "FR", "SA",
                                                         "SU"}
            assert len(schedule["opens_at"]) == 5 and len(schedule["closes_at"]) == 5
        location_ids = {loc["id"] for loc in org["locations"]}
        for link in service["service_at_locations"]:
            assert link["service_id"] == service["id"] and link["location_id"] in location_ids
        for loc in org["locations"]:
            assert loc["location_type"] == "physical"
            for address in loc["addresses"]:
                assert address["location_id"] == loc["id"]
                assert {"address_1", "city", "postal_code", "country"} <= set(address)
        for value in (org["id"], service["id"], *location_ids):
            uuid.UUID(value)
            assert value not in ids
            ids.add(value)
    assert "keys" not in json.dumps(hsds) and "endpoint" not in json.dumps(hsds)


def test_hsds_schedules_reflect_opening_hours() -> None:
    orgs = {o["identifier"]: o for o in to_hsds(DIRECTORY)["organizations"]}
    clinic = orgs["kh-legal-phnompenh"]["services"][0]["schedules"]
    assert [(s["byday"], s["opens_at"], s["closes_at"]) for s in clinic] == [
        ("MO,TU,WE,TH,FR", "08:00", "17:00"), ("SU", "08:00", "12:00")]
    assert clinic[0]["timezone"] == 7
    hotline = orgs["ph-hotline-migrants"]["services"][0]["schedules"]
    assert [(s["byday"], s["opens_at"], s["closes_at"]) for s in hotline] == [
        ("MO,TU,WE,TH,FR,SA,SU", "00:00", "23:59")]
    phones = orgs["ph-hotline-migrants"]["services"][0]["phones"]
    assert [p["type"] for p in phones] == ["hotline", "hotline"]


def test_hsds_export_is_deterministic() -> None:
    assert to_hsds(DIRECTORY) == to_hsds(verify_directory(sample_bytes(),
                                                          [AUTHORITY.public_key]))


def test_committed_exports_are_current() -> None:
    assert (SAMPLE_DIR / "directory.csv").read_text("utf-8") == to_csv(DIRECTORY)
    assert json.loads((SAMPLE_DIR / "directory.hsds.json").read_text("utf-8")) == (
        to_hsds(DIRECTORY))


# --------------------------------------------------------------------------- CLI

SAMPLE_ARGS = ["--directory", str(SAMPLE_DIR / "directory.json"),
               "--authority-key", str(SAMPLE_DIR / "authority.pub.json"), "--at", str(NOW)]


def test_cli_search_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["directory", "search", *SAMPLE_ARGS, "--country", "KH", "--sector",
                 "legal_aid", "--language", "km", "--open-on", "sunday"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "CC"]
    assert lines[1].startswith("kh-legal-phnompenh ")
    assert "Cambodian Migrant Workers Legal Aid Clinic" in lines[1]
    assert "Sun 08:00-12:00" in lines[1]
    assert "1 found" in out


def test_cli_search_json_and_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "search", *SAMPLE_ARGS, "--country", "kh", "--sector",
                 "legal_aid", "--open-on", "sun", "--json"]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == ["kh-legal-phnompenh"]
    assert main(["directory", "search", *SAMPLE_ARGS, "--country", "KH", "--open-on", "sun",
                 "--names", "km"]) == 0
    assert "ផ្ទះសុវត្ថិភាព" in capsys.readouterr().out


def test_cli_search_open_now(capsys: pytest.CaptureFixture[str]) -> None:
    args = [a if a != str(NOW) else str(SUNDAY_0200Z) for a in SAMPLE_ARGS]
    assert main(["directory", "search", *args, "--open-now", "--json"]) == 0
    ids = {e["id"] for e in json.loads(capsys.readouterr().out)}
    assert "ph-embassy-kl" in ids and "id-consulate-jb" not in ids


def test_cli_verify(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "verify", str(SAMPLE_DIR / "directory.json"),
                 "--authority-key", sample_authority_key(), "--at", str(NOW), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["result"] == "ok" and summary["serial"] == 1
    assert summary["participants"] == 10 and summary["information_only"] == 3


def test_cli_verify_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASEWAY_AUTHORITY_KEY", raising=False)
    path = str(SAMPLE_DIR / "directory.json")
    assert main(["directory", "verify", path, "--at", str(NOW)]) == 2
    assert "untrusted_authority" in capsys.readouterr().err
    from caseway.protocol.crypto import SigningKeyPair
    from caseway.protocol.encoding import b64encode

    other = b64encode(SigningKeyPair(b"\x42" * 32).public_key)
    assert main(["directory", "verify", path, "--authority-key", other]) == 2
    assert "untrusted_authority" in capsys.readouterr().err
    assert main(["directory", "verify", path, "--authority-key", sample_authority_key(),
                 "--at", str(NOW), "--held-serial", "2"]) == 2
    assert "stale_directory" in capsys.readouterr().err
    data = bytearray(sample_bytes())
    data[200] ^= 0x01
    bad = tmp_path / "bad.json"
    bad.write_bytes(bytes(data))
    assert main(["directory", "verify", str(bad), "--authority-key", sample_authority_key(),
                 "--at", str(NOW)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_cli_verify_warns_in_grace_period(capsys: pytest.CaptureFixture[str]) -> None:
    expires = DIRECTORY.expires
    assert main(["directory", "verify", str(SAMPLE_DIR / "directory.json"),
                 "--authority-key", sample_authority_key(), "--at", str(expires + 60)]) == 0
    assert "WARNING" in capsys.readouterr().err


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hsds.json"
    assert main(["directory", "export", *SAMPLE_ARGS, "--hsds", "-o", str(out)]) == 0
    assert json.loads(out.read_text("utf-8")) == to_hsds(DIRECTORY)
    assert main(["directory", "export", *SAMPLE_ARGS, "--csv"]) == 0
    assert capsys.readouterr().out == to_csv(DIRECTORY)


# --------------------------------------------------------------------------- authority CLI


def _authority(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "authority"
    passfile = tmp_path / "pass"
    passfile.write_text("authority passphrase\n")
    common = ["--dir", str(folder), "--passphrase-file", str(passfile)]
    assert main(["authority", "init", *common, "--kdf-limits", "min"]) == 0
    return folder, common


def test_authority_init_add_sign_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    folder, common = _authority(tmp_path)
    assert stat.S_IMODE(os.stat(folder / "authority.keystore").st_mode) == 0o600
    for name in ("ph-embassy-kl", "ph-shelter-manila", "ph-hotline-migrants"):
        assert main(["authority", "add", str(SAMPLE_DIR / "participants" / f"{name}.json"),
                     "--dir", str(folder)]) == 0
    out = tmp_path / "directory.json"
    assert main(["authority", "sign", *common, "-o", str(out)]) == 0
    assert main(["authority", "sign", *common, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["directory", "verify", str(out), "--authority-key",
                 str(folder / "authority.pub.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["serial"] == 2 and summary["participants"] == 3


def test_authority_add_invalid_names_the_field_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = _authority(tmp_path)
    entry: dict[str, Any] = json.loads(
        (SAMPLE_DIR / "participants" / "ph-legal-cebu.json").read_text("utf-8"))
    entry["country"] = "Philippines"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(entry))
    capsys.readouterr()
    assert main(["authority", "add", str(bad), "--dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "schema_invalid" in err and "participant.country" in err
    assert "Philippines" not in err
    assert list((folder / "participants").iterdir()) == []


def test_authority_sign_wrong_passphrase_signs_nothing(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    folder, _ = _authority(tmp_path)
    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    out = tmp_path / "directory.json"
    assert main(["authority", "sign", "--dir", str(folder), "--passphrase-file", str(wrong),
                 "-o", str(out)]) == 2
    assert "keystore_locked" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads((folder / "state.json").read_text())["serial"] == 0


def test_authority_rotate_carries_the_successor(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder, common = _authority(tmp_path)
    old_pub = tmp_path / "old.pub.json"
    old_pub.write_bytes((folder / "authority.pub.json").read_bytes())
    assert main(["authority", "add", str(SAMPLE_DIR / "participants" / "ph-embassy-kl.json"),
                 "--dir", str(folder)]) == 0
    assert main(["authority", "rotate", *common]) == 0
    out = tmp_path / "directory.json"
    assert main(["authority", "sign", *common, "-o", str(out)]) == 0
    capsys.readouterr()
    # A node that still pins the old key follows the chain.
    assert main(["directory", "verify", str(out), "--authority-key", str(old_pub),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["authority"] != json.loads(
        old_pub.read_text())["key_id"]
