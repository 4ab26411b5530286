"""SPEC.md travels with the code: its error table and labels are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

from caseway.protocol import crypto
from caseway.protocol.errors import ERROR_TABLE, ErrorCode

SPEC = (Path(__file__).parent.parent / "SPEC.md").read_text("utf-8")
ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}) \| (yes|no) \|", re.MULTILINE)


def test_error_table_in_spec_matches_the_code() -> None:
    rows = {code: (int(status), retry == "yes") for code, status, retry in ROW.findall(SPEC)}
    expected = {c.value: (i.http_status, i.retry) for c, i in ERROR_TABLE.items()}
    assert rows == expected


def test_every_error_code_has_an_entry() -> None:
    assert set(ERROR_TABLE) == set(ErrorCode)


def test_signature_labels_in_spec_match_the_code() -> None:
    for label in (crypto.ENVELOPE_LABEL, crypto.RECEIPT_LABEL, crypto.DIRECTORY_LABEL,
                  crypto.AUTHORITY_SUCCESSOR_LABEL):
        assert f"`{label.hex()}`" in SPEC
