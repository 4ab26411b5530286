"""Shared builders for the keys/directory tests (not a test module)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from caseway.keys.directory import build_directory
from caseway.protocol.crypto import SigningKeyPair

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "examples" / "directory"


def _load(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sample = _load("caseway_sample_directory", SAMPLE_DIR / "sample.py")
fixtures = sample.fixtures
NOW: int = fixtures.NOW
AUTHORITY = SigningKeyPair(bytes.fromhex(fixtures.AUTHORITY_SEED))
OTHER_AUTHORITY = SigningKeyPair(bytes.fromhex(fixtures.OTHER_AUTHORITY_SEED))
ISSUED = NOW - 3600
EXPIRES = NOW + 30 * 24 * 3600


def participants(*ids: str) -> list[dict[str, Any]]:
    """Deep copies of sample participants (all, or those named)."""
    entries = sample.participants()
    if ids:
        entries = [e for e in entries if e["id"] in ids]
    return copy.deepcopy(entries)


def signed(entries: list[dict[str, Any]] | None = None, *, serial: int = 1,
           authority: SigningKeyPair = AUTHORITY, issued: int = ISSUED,
           expires: int = EXPIRES, chain: list[dict[str, str]] | None = None) -> bytes:
    return build_directory(participants() if entries is None else entries,
                           authority=authority, serial=serial, issued=issued, expires=expires,
                           authority_chain=chain or [])


def sample_bytes() -> bytes:
    return (SAMPLE_DIR / "directory.json").read_bytes().rstrip(b"\n")


def sample_authority_key() -> str:
    return str(json.loads((SAMPLE_DIR / "authority.pub.json").read_text())["key"])
