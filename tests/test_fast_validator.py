"""jsonschema-rs decides the accept path of message validation; jsonschema (the reference)
explains refusals. The two must agree on validity, or a document could be accepted that
the documented schema refuses. Checked on every message vector and on mutations."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caseway.protocol.encoding import b64decode
from caseway.protocol.messages import MESSAGE_TYPES, bundled_validator, fast_validator

ROOT = Path(__file__).parent.parent / "examples"


def _messages() -> list[dict[str, Any]]:
    found = [json.loads((ROOT / "referrals" / "ph-return-full.json").read_text())]
    for path in sorted((ROOT / "vectors" / "message").glob("*.json")):
        vector = json.loads(path.read_text())
        message = vector.get("inputs", {}).get("message")
        if isinstance(message, dict):
            found.append(message)
        plaintext = vector.get("intermediate", {}).get("plaintext")
        if isinstance(plaintext, str):
            inner = json.loads(plaintext)
            if isinstance(inner, dict) and isinstance(inner.get("message"), dict):
                found.append(inner["message"])
    return found


MESSAGES = _messages()


def _agree(message: Any) -> None:
    message_type = message.get("type") if isinstance(message, dict) else None
    types = [message_type] if message_type in MESSAGE_TYPES else sorted(MESSAGE_TYPES)
    for name in types:
        assert fast_validator(name).is_valid(message) == \
            bundled_validator(name).is_valid(message), name


def test_there_are_messages_of_every_type() -> None:
    assert {m.get("type") for m in MESSAGES} >= set(MESSAGE_TYPES)


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_validators_agree_on_vectors(index: int) -> None:
    _agree(MESSAGES[index])


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out


REPLACEMENTS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53 - 1), 2**53 - 1), st.text(max_size=30),
    st.sampled_from(["", "2026-02-30", "2026-01-15", "en", "fil-PH", "xx-", "A" * 22,
                     "AAAAAAAAAAAAAAAAAAAAAA", "not_a_code", "health", "referral"]),
    st.lists(st.text(max_size=5), max_size=3), st.just({}), st.just({"x": 1}))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_validators_agree_on_mutations(data: st.DataObject) -> None:
    message = copy.deepcopy(data.draw(st.sampled_from(MESSAGES)))
    path = data.draw(st.sampled_from(_paths(message)[1:]))
    target = message
    for part in path[:-1]:
        target = target[part]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(REPLACEMENTS)
    _agree(message)


def test_digest_patterns_agree() -> None:
    # Regex dialects differ between engines; the id patterns must mean the same in both.
    message = copy.deepcopy(MESSAGES[0])
    for value in ("A" * 21 + "Q", "A" * 21 + "B", "A" * 22 + "\n", "é" * 22):
        message["case_id"] = value
        _agree(message)
    assert b64decode("A" * 21 + "Q") == bytes(15) + b"\x01"


@pytest.mark.parametrize(("pattern", "text", "matches"), [
    (r"^[a-z]+$", "abc", True),
    (r"^[a-z]+$", "abc\n", False),       # Python's bare `$` would accept this
    (r"^a[$]b$", "a$b", True),           # `$` inside a class is a literal
    (r"^a\$b$", "a$b", True),            # an escaped `$` too
])
def test_schema_patterns_have_ecma_semantics(pattern: str, text: str, matches: bool) -> None:
    import re

    from caseway import schemas

    assert (re.search(schemas.ecma_pattern(pattern), text) is not None) is matches


def test_directory_participant_id_with_trailing_newline_is_refused() -> None:
    from caseway import schemas

    participant = json.loads((ROOT / "directory" / "participants" / "ph-shelter-manila.json")
                             .read_text())
    assert schemas.validator("participant").is_valid(participant)
    participant["id"] += "\n"
    assert not schemas.validator("participant").is_valid(participant)
