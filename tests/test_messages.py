"""Message catalogue, schemas, code lists and the message vectors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseway import schemas
from caseway.node.vectorcheck import VectorMismatch
from caseway.node.vectorcheck.message import check
from caseway.protocol import messages
from caseway.protocol.crypto import digest
from caseway.protocol.encoding import b64encode, dump_json
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.firewall import SECTORS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = json.loads((ROOT / "examples/referrals/ph-return-full.json").read_text("utf-8"))
VECTOR_DIR = ROOT / "examples/vectors/message"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))


def test_every_type_has_a_closed_schema_with_a_stable_id() -> None:
    for mtype in messages.MESSAGE_TYPES:
        name = messages.schema_name(mtype)
        schema = schemas.load(name)
        assert schema["$id"] == f"{schemas.SCHEMA_BASE}{name}.schema.json"
        assert schema["additionalProperties"] is False
        assert schema["properties"]["type"] == {"const": mtype}
        assert set(messages.COMMON_FIELDS) <= set(schema["required"])


def test_code_lists_and_schema_enums_agree() -> None:
    defs = schemas.load("message-common")["$defs"]
    for name, codes in messages.CODE_LISTS.items():
        assert defs[name]["enum"] == list(codes), name
    assert messages.CODE_LISTS["sector"] == SECTORS
    sections = schemas.load("sections")["$defs"]["sections"]["properties"]
    assert list(sections) == list(messages.DATA_CATEGORIES)


def test_sample_referral_is_valid_and_about_4_kib() -> None:
    assert messages.validate_message(SAMPLE) == "referral"
    assert 3500 <= len(dump_json(SAMPLE)) <= 5000
    assert set(SAMPLE["sections"]) == set(messages.DATA_CATEGORIES)


def test_unknown_or_missing_type_is_schema_invalid() -> None:
    for bad in ({"type": "gossip"}, {}, {"type": 3}):
        with pytest.raises(CasewayError) as err:
            messages.validate_message(bad)
        assert err.value.code is ErrorCode.SCHEMA_INVALID


def test_date_of_birth_and_age_band_are_exclusive() -> None:
    msg = copy.deepcopy(SAMPLE)
    msg["sections"]["identity"]["age_band"] = "25-34"
    with pytest.raises(CasewayError) as err:
        messages.validate_message(msg)
    assert err.value.section == "identity"


def test_calendar_dates_are_checked_as_dates() -> None:
    msg = copy.deepcopy(SAMPLE)
    msg["sections"]["location_return"]["expected_return_date"] = "2026-02-30"
    with pytest.raises(CasewayError) as err:
        messages.validate_message(msg)
    assert err.value.code is ErrorCode.SCHEMA_INVALID
    assert err.value.section == "location_return"


def test_inline_attachment_must_match_its_digest_and_size() -> None:
    msg = copy.deepcopy(SAMPLE)
    inline = msg["attachments"][1]
    inline["inline"] = b64encode(b"other content")
    inline["size"] = len(b"other content")
    with pytest.raises(CasewayError) as err:
        messages.validate_message(msg)
    assert err.value.section == "attachments" and "digest" in err.value.detail
    inline["digest"] = b64encode(digest(b"other content"))
    messages.validate_message(msg)
    inline["size"] += 1
    with pytest.raises(CasewayError):
        messages.validate_message(msg)


SECRET = "Zq7SECRETvalue"


def _plant(msg: dict[str, Any], path: list[Any], value: Any) -> None:
    node = msg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


PLANT_PATHS = [
    ["sections", "identity", "given_name"],
    ["sections", "identity", "nationality"],
    ["sections", "identity", "date_of_birth"],
    ["sections", "communication", "languages", 0],
    ["sections", "contact_safety", "code_word"],
    ["sections", "needs", "urgency"],
    ["sections", "incident", "types", 0],
    ["consent", "recorded_by"],
    ["survivor_ref"],
    ["case_id"],
    ["attachments", 0, "digest"],
]


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(PLANT_PATHS),
       value=st.sampled_from([SECRET + " " * 300, SECRET + "!", 1234567, [SECRET], {"x": 1}]),
       extra=st.booleans())
def test_schema_errors_never_quote_the_message(path: list[Any], value: Any,
                                               extra: bool) -> None:
    msg = copy.deepcopy(SAMPLE)
    _plant(msg, path, value)
    if extra:  # an unknown key named like a value must not reach the detail either
        msg["sections"]["identity"][SECRET.lower()] = SECRET
    try:
        messages.validate_message(msg)
    except CasewayError as exc:
        assert exc.code is ErrorCode.SCHEMA_INVALID
        text = str(exc) + (exc.section or "")
        assert SECRET.lower() not in text.lower() and "1234567" not in text
    else:  # a plausible value in a free-text field is simply valid
        assert isinstance(value, str) and path[-1] in ("given_name", "code_word") and not extra


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_message_vectors(path: Path) -> None:
    check(json.loads(path.read_text("utf-8")))


def test_every_type_has_valid_and_invalid_vectors() -> None:
    valid: set[str] = set()
    invalid: set[str] = set()
    codes: set[str] = set()
    for path in VECTORS:
        vector = json.loads(path.read_text("utf-8"))
        mtype = vector["inputs"]["message"]["type"]
        if vector["expected"].get("result") == "ok":
            valid.add(mtype)
        else:
            invalid.add(mtype)
            codes.add(vector["expected"]["error"])
    assert valid == set(messages.MESSAGE_TYPES)
    assert invalid == set(messages.MESSAGE_TYPES)
    assert {"schema_invalid", "consent_violation", "consent_expired", "consent_withdrawn",
            "firewall", "invalid_transition", "sequence_gap"} <= codes


@pytest.mark.parametrize("tamper", ["expected", "section", "thread", "envelope"])
def test_checker_notices_a_wrong_vector(tamper: str) -> None:
    by_name = {p.stem: json.loads(p.read_text("utf-8")) for p in VECTORS}
    if tamper == "expected":
        vector = by_name["message-referral-firewall-immigration"]
        vector["expected"] = {"error": "consent_violation"}
    elif tamper == "section":
        vector = by_name["message-referral-category-outside-scope"]
        vector["expected"]["section"] = "identity"
    elif tamper == "thread":
        vector = by_name["message-accept-ok"]
        vector["expected"]["thread"]["state"] = "declined"
    else:
        vector = by_name["message-accept-ok"]
        vector["envelope"] = vector["envelope"].replace("A", "B", 1)
    with pytest.raises(VectorMismatch):
        check(vector)


def _mutations(message: dict[str, Any]) -> list[dict[str, Any]]:
    out = [message]
    for key in list(message):
        dropped = dict(message)
        del dropped[key]
        out.append(dropped)
        out.append({**message, key: None})
    out.append({**message, "extra_field": 1})
    return out


def test_bundled_validator_agrees_with_the_registry_validator() -> None:
    """The speed-up (inlined $refs) must not change what is valid."""
    checked = 0
    for path in VECTORS:
        message = json.loads(path.read_text("utf-8"))["inputs"]["message"]
        mtype = message.get("type")
        if mtype not in messages.MESSAGE_TYPES:
            continue
        registry = schemas.validator(messages.schema_name(mtype))
        bundled = messages.bundled_validator(mtype)
        for candidate in _mutations(message):
            assert registry.is_valid(candidate) == bundled.is_valid(candidate)
            assert sorted(list(e.absolute_path) for e in registry.iter_errors(candidate)) \
                == sorted(list(e.absolute_path) for e in bundled.iter_errors(candidate))
            checked += 1
    assert checked > 300


def test_spec_lists_every_code_list() -> None:
    spec = (ROOT / "SPEC.md").read_text("utf-8")
    section = spec.split("<!-- BEGIN messages (issue 4) -->")[1].split(
        "<!-- END messages -->")[0]
    for name, codes in messages.CODE_LISTS.items():
        if name in ("message_type", "data_category", "sector"):
            for code in codes:
                assert f"`{code}`" in section, (name, code)
            continue
        line = f"- **{name}**: " + ", ".join(f"`{c}`" for c in codes)
        assert line in section.splitlines(), name
