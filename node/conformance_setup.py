"""``caseway conformance setup``: the runner's keys and a test directory the target trusts.

The conformance runner (:mod:`caseway.node.conformance`) plays a peer node. For a target
node to accept its envelopes, the target must trust a directory that lists the runner's
participants; for the runner to verify the target's receipts, it must know the target's
public keys. This module writes both sides of that arrangement into one folder:

- ``authority.pub.json``: ``{"key", "key_id"}`` of the conformance authority. The target
  pins it (as it would pin ``examples/directory/authority.pub.json``).
- ``directory.json``: a signed directory (SPEC.md §11) listing the runner's participant
  ``conformance-peer`` and the target. The target loads it.
- ``participants/<id>.json``: the entries signed into it (for reading).
- ``runner.json``: what the runner needs: its own seeds, the target's id, endpoint, sectors
  and public keys. The runner reads only this file.
- ``SETUP.md``: the steps, with this folder's values filled in.

All runner keys are **fixed, public test keys** (below): anyone can sign as the
conformance authority. Never pin ``authority.pub.json`` on a production node.

Rules of this module:

1. Deterministic apart from time: the same target and the same clock give the same
   files. The directory ``serial`` is the issue time, so re-running setup always produces a
   serial the target accepts (a lower serial would be ``stale_directory``).
2. Validated before writing: the directory is built with
   :func:`caseway.keys.directory.build_directory`, which refuses an invalid entry; nothing is
   written if it fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caseway.keys.directory import build_directory, parse_participant
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode
from caseway.protocol.errors import CasewayError, ErrorCode

from .conformance import RUNNER_FILE, SETUP_FORMAT

AUTHORITY_FILE = "authority.pub.json"
DIRECTORY_FILE = "directory.json"
DEFAULT_SETUP_DIR = "caseway-conformance"

#: The runner's participant id in the test directory.
PEER = "conformance-peer"
#: A participant id the runner signs as but which the directory does not list.
STRANGER = "conformance-stranger"

# Fixed public test keys (32 bytes each, hex). Never use them outside conformance tests.
AUTHORITY_SEED = "c0" * 32
PEER_SIGNING_SEED = "c1" * 32  # active signing key of conformance-peer
PEER_ENCRYPTION_SECRET = "c2" * 32  # its X25519 key (a key the target does not hold)
PEER_REVOKED_SEED = "c3" * 32  # listed for conformance-peer, status revoked
STRANGER_SEED = "c4" * 32  # conformance-stranger, not in the directory
PEER_UNLISTED_SEED = "c5" * 32  # a conformance-peer key the directory does not list

#: ``valid_from`` of the runner's keys (2026-01-01T00:00:00Z); the revoked key is revoked
#: one second later, so every envelope it signs is ``revoked_key``.
KEYS_VALID_FROM = 1767225600
DEFAULT_TARGET_SECTORS = ("shelter", "police")
DEFAULT_VALID_DAYS = 90
#: Sectors that never receive case data: a target listed in one cannot be sent a referral.
NEVER_RECEIVE = frozenset({"immigration_enforcement", "recruitment_agency"})


def _key_entry(use: str, public_key: bytes, *, valid_from: int, status: str = "active",
               revoked_at: int | None = None) -> dict[str, Any]:
    return {"use": use, "key": b64encode(public_key), "key_id": crypto.key_id(public_key),
            "valid_from": valid_from, "valid_until": None, "status": status,
            "revoked_at": revoked_at}


def peer_entry() -> dict[str, Any]:
    """The directory entry of the runner's peer participant."""
    signing = crypto.SigningKeyPair(bytes.fromhex(PEER_SIGNING_SEED))
    revoked = crypto.SigningKeyPair(bytes.fromhex(PEER_REVOKED_SEED))
    encryption = crypto.EncryptionKeyPair(bytes.fromhex(PEER_ENCRYPTION_SECRET))
    return {
        "id": PEER,
        "names": {"en": "Caseway conformance runner (test peer; public test keys)"},
        "country": "PH",
        "sectors": ["ngo"],
        "services": ["case_management"],
        "languages": ["en"],
        "hours": {"timezone": "Asia/Manila", "always_open": True},
        "contacts": {},
        "endpoint": "https://conformance-peer.invalid",
        "keys": [
            _key_entry("signing", signing.public_key, valid_from=KEYS_VALID_FROM),
            _key_entry("signing", revoked.public_key, valid_from=KEYS_VALID_FROM,
                       status="revoked", revoked_at=KEYS_VALID_FROM + 1),
            _key_entry("encryption", encryption.public_key, valid_from=KEYS_VALID_FROM),
        ],
    }


def target_entry(*, participant: str | None = None, endpoint: str | None = None,
                 signing_key: str | None = None, encryption_key: str | None = None,
                 sectors: Sequence[str] | None = None,
                 entry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The target's directory entry: ``entry`` (a participant JSON the integrator wrote)
    with any given argument overriding it, or built from the arguments alone."""
    if entry is not None:
        out = dict(entry)
    else:
        missing = [name for name, value in (("--target-id", participant),
                                            ("--target-endpoint", endpoint),
                                            ("--target-signing-key", signing_key),
                                            ("--target-encryption-key", encryption_key))
                   if value is None]
        if missing:
            raise CasewayError(ErrorCode.SCHEMA_INVALID, "target participant incomplete: give "
                               "--target-participant FILE or " + ", ".join(missing))
        assert signing_key is not None and encryption_key is not None
        out = {
            "id": participant,
            "names": {"en": "Node under conformance test"},
            "country": "PH",
            "sectors": list(sectors or DEFAULT_TARGET_SECTORS),
            "services": ["case_management"],
            "languages": ["en"],
            "hours": {"timezone": "Asia/Manila", "always_open": True},
            "contacts": {},
            "keys": [
                _key_entry("signing", b64decode(signing_key, length=32,
                                                field="--target-signing-key"), valid_from=0),
                _key_entry("encryption", b64decode(encryption_key, length=32,
                                                   field="--target-encryption-key"),
                           valid_from=0),
            ],
        }
    if participant is not None:
        out["id"] = participant
    if endpoint is not None:
        out["endpoint"] = endpoint
    if sectors is not None:
        out["sectors"] = list(sectors)
    if not out.get("endpoint"):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "the target needs a federation endpoint")
    if out["id"] in (PEER, STRANGER):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, f"the target cannot be called {out['id']}")
    if NEVER_RECEIVE & set(out["sectors"]):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "a target in sector "
                           "immigration_enforcement or recruitment_agency can never be sent a "
                           "referral; choose other --target-sectors")
    parse_participant(out)
    return out


def build_setup(target: Mapping[str, Any], *, now: int | None = None,
                valid_days: int = DEFAULT_VALID_DAYS) -> dict[str, bytes]:
    """Every file of a setup folder, by name (nothing written)."""
    now = int(time.time()) if now is None else now
    authority = crypto.SigningKeyPair(bytes.fromhex(AUTHORITY_SEED))
    peer = peer_entry()
    directory = build_directory([peer, dict(target)], authority=authority, serial=now,
                                issued=now, expires=now + valid_days * 86400)
    parsed = parse_participant(dict(target))
    runner = {
        "format": SETUP_FORMAT,
        "v": 1,
        "created": now,
        "directory_serial": now,
        "authority": {"key": b64encode(authority.public_key), "key_id": authority.key_id,
                      "seed_hex": AUTHORITY_SEED},
        "peer": {"participant": PEER, "signing_seed_hex": PEER_SIGNING_SEED,
                 "encryption_secret_hex": PEER_ENCRYPTION_SECRET,
                 "revoked_signing_seed_hex": PEER_REVOKED_SEED,
                 "unlisted_signing_seed_hex": PEER_UNLISTED_SEED},
        "stranger": {"participant": STRANGER, "signing_seed_hex": STRANGER_SEED},
        "target": {
            "participant": parsed.id,
            "endpoint": parsed.endpoint,
            "sectors": sorted(parsed.sectors),
            "keys": [{"use": k.use, "key": b64encode(k.public_key), "key_id": k.key_id,
                      "valid_from": k.valid_from, "valid_until": k.valid_until,
                      "status": k.status, "revoked_at": k.revoked_at} for k in parsed.keys],
        },
    }
    files = {
        AUTHORITY_FILE: _pretty({"key": b64encode(authority.public_key),
                                 "key_id": authority.key_id}),
        DIRECTORY_FILE: directory,
        RUNNER_FILE: _pretty(runner),
        f"participants/{PEER}.json": _pretty(peer),
        f"participants/{parsed.id}.json": _pretty(dict(target)),
    }
    files["SETUP.md"] = setup_steps(runner).encode("utf-8")
    return files


def write_setup(folder: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _pretty(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def setup_steps(runner: Mapping[str, Any]) -> str:
    target = runner["target"]
    police = sorted({"police", "justice_courts"} & set(target["sectors"]))
    firewall = (f"Your node is listed in sector(s) {', '.join(police)}, so the runner can "
                "provoke the firewall (case data only for the `reporting` purpose)."
                if police else "Your node is not listed in a police/justice sector: the "
                "firewall check will be skipped. Re-run setup with "
                "`--target-sectors shelter,police` to include it.")
    return f"""# Caseway conformance setup

Generated by `caseway conformance setup` at {runner['created']} (Unix time).
These are PUBLIC TEST KEYS: never pin this authority key on a production node.

Target under test: `{target['participant']}` at `{target['endpoint']}`
(sectors: {', '.join(target['sectors'])}).

1. Configure the target node to pin the conformance authority key in
   `{AUTHORITY_FILE}` (key id `{runner['authority']['key_id']}`).
2. Load `{DIRECTORY_FILE}` (serial {runner['directory_serial']}) as the target's trust
   directory. It lists the runner's participant `{PEER}` (sector `ngo`) and the target
   with the keys given to setup. The participant `{STRANGER}` is deliberately absent.
3. Start the target with its federation endpoint reachable from this machine, its clock
   synchronised (NTP; the runner judges times within the 300 s skew), and rate limits at
   their defaults or higher (the runner sends about 70 requests).
4. Run:

       caseway conformance --setup <this folder> --target {target['endpoint']} \\
           --junit conformance.xml

{firewall}

The runner verifies every receipt with the target's signing key(s) listed in
`{RUNNER_FILE}`. Each run uses fresh message, thread, case and consent ids, so the runner
can be run again against the same node without a reset.
"""
