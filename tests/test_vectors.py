"""Every vector in examples/vectors is checked here exactly as `caseway vectors check` does,
and every envelope/receipt vector's documents are validated against the JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caseway import schemas
from caseway.node.commands.vectors import check_vector, load_vectors
from caseway.protocol.encoding import b64decode

ROOT = Path(__file__).parent.parent / "examples" / "vectors"
VECTORS = load_vectors(ROOT)


@pytest.mark.parametrize(("path", "vector"), VECTORS,
                         ids=[str(p.relative_to(ROOT)) for p, _ in VECTORS])
def test_vector(path: Path, vector: dict) -> None:  # type: ignore[type-arg]
    check_vector(vector)


def test_index_lists_every_vector_file() -> None:
    index = json.loads((ROOT / "index.json").read_text())
    listed = {entry["file"] for entry in index["vectors"]}
    on_disk = {str(p.relative_to(ROOT)) for p, _ in VECTORS}
    assert listed == on_disk


def test_required_negative_envelope_cases_exist() -> None:
    codes = {v["expected"].get("error") for _, v in VECTORS if v["kind"] == "envelope"}
    assert {"bad_signature", "not_for_me", "binding_mismatch", "expired", "not_yet_valid",
            "replayed", "unsupported_version", "malformed", "bad_encoding", "too_large",
            "weak_key", "decrypt_failed", "header_invalid", "unknown_sender",
            "revoked_key"} <= codes


def _documents(kind: str, field: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    found = []
    for path, vector in VECTORS:
        if vector["kind"] != kind or field not in vector:
            continue
        try:
            found.append((path.name, json.loads(vector[field])))
        except ValueError:
            continue
    return found


def test_valid_envelopes_match_the_schemas() -> None:
    envelopes = [(n, d) for n, d in _documents("envelope", "envelope")
                 if not n.startswith(("oversize",))]
    positives = [(n, v) for p, v in VECTORS if v["kind"] == "envelope"
                 and v["expected"].get("result") == "ok" for n in [p.name]]
    assert positives
    for name, _ in positives:
        doc = dict(envelopes)[name]
        assert schemas.validator("envelope").is_valid(doc), name
        header = json.loads(b64decode(doc["protected"]))
        assert schemas.validator("protected-header").is_valid(header), name


def test_receipts_match_the_schema() -> None:
    for name, doc in _documents("receipt", "receipt"):
        assert schemas.validator("envelope").is_valid(doc), name
        protected = json.loads(b64decode(doc["protected"]))
        if name.startswith(("accepted", "rejected", "wrong")):
            assert schemas.validator("receipt").is_valid(protected), name
