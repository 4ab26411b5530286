"""Directory signature vectors (kind ``directory``): verify a signed directory with a trust
store (SPEC.md "Directory signature", "Trust store").

Inputs: the pinned authority public keys, the serial the verifier already holds, its clock
(``now``) and expiry grace period, and the directory bytes exactly as received (ASCII JSON,
so the string is the bytes). For a signed directory, the seed of the key that signed it.
Intermediate values: the protected document (base64url, and as UTF-8 text), the signing
input (``DIRECTORY_LABEL || protected``) in hex, the signer's public key and key id, and the
signature. ``expected`` is ``{"result": "ok", "serial", "participants", "expired_warning"}``
or ``{"error": code}``. The participants are two entries of the sample directory
(``examples/directory``); keys are the public test keys of ``fixtures.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from caseway.keys.directory import build_directory
from caseway.keys.trust import DIRECTORY_GRACE_SECONDS, sign_successor
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json

from fixtures import AUTHORITY_SEED, NOW, OTHER_AUTHORITY_SEED

_SAMPLE = Path(__file__).resolve().parent.parent / "directory" / "sample.py"
_spec = importlib.util.spec_from_file_location("caseway_sample_directory", _SAMPLE)
assert _spec is not None and _spec.loader is not None
sample = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sample)

ISSUED = NOW - 24 * 3600
EXPIRES = NOW + 30 * 24 * 3600
SERIAL = 2
IDS = ("ph-embassy-kl", "ph-shelter-manila")
AUTHORITY = crypto.SigningKeyPair(bytes.fromhex(AUTHORITY_SEED))
OTHER = crypto.SigningKeyPair(bytes.fromhex(OTHER_AUTHORITY_SEED))


def _participants() -> list[dict[str, Any]]:
    return [p for p in sample.participants() if p["id"] in IDS]


def _sign(signer: crypto.SigningKeyPair, *, serial: int = SERIAL,
          chain: list[dict[str, str]] | None = None) -> bytes:
    return build_directory(_participants(), authority=signer, serial=serial, issued=ISSUED,
                           expires=EXPIRES, authority_chain=chain or [])


def _vector(name: str, description: str, data: bytes, *, signer: crypto.SigningKeyPair | None,
            expected: dict[str, Any], held_serial: int = 0, now: int = NOW,
            pinned: tuple[crypto.SigningKeyPair, ...] = (AUTHORITY,),
            note: str | None = None) -> dict[str, Any]:
    outer = json.loads(data)
    protected = b64decode(outer["protected"])
    intermediate: dict[str, Any] = {
        "protected_b64": outer["protected"],
        "protected_text": protected.decode("utf-8"),
        "signing_input_hex": (crypto.DIRECTORY_LABEL + protected).hex(),
        "signature_b64": outer["signature"],
    }
    inputs: dict[str, Any] = {
        "pinned_authority_keys": [b64encode(k.public_key) for k in pinned],
        "held_serial": held_serial,
        "now": now,
        "grace_seconds": DIRECTORY_GRACE_SECONDS,
        "directory": data.decode("ascii"),
    }
    if signer is not None:
        inputs["signer_seed"] = signer.seed.hex()
        intermediate["signer_public_key"] = b64encode(signer.public_key)
        intermediate["signer_key_id"] = signer.key_id
    # Added for debugging (issue 7): key ids, the raw signature, each successor statement.
    inputs["pinned_authority_key_ids"] = [k.key_id for k in pinned]
    intermediate["signature_hex"] = _try(lambda: b64decode(outer["signature"]).hex())
    intermediate["authority_chain"] = _chain_intermediates(protected)
    vector: dict[str, Any] = {"name": name, "kind": "directory", "description": description,
                              "inputs": inputs, "intermediate": intermediate,
                              "expected": expected,
                              "spec": SPEC_STEPS.get(expected.get("error", "ok"), "§11.6")}
    if note:
        vector["note"] = note
    return vector


#: The SPEC.md rule that decides a vector's expected result, by result or error code.
SPEC_STEPS = {
    "ok": "§11.6 (verify), §11.7 (trust store)", "bad_signature": "§11.6 step 6",
    "untrusted_authority": "§11.6 step 5, §11.7 rule 1", "stale_directory": "§11.7 rule 2",
    "directory_expired": "§11.7 rule 4", "bad_encoding": "§11.6 step 3",
    "unsupported_version": "§11.6 steps 3-4, §11.6.1", "schema_invalid": "§11.6 step 7",
}


def _try(action: Any) -> Any:
    try:
        return action()
    except Exception:
        return None


def _chain_intermediates(protected: bytes) -> list[dict[str, Any]]:
    """Each successor statement of ``authority_chain``: its protected text, the signing
    input ``AUTHORITY_SUCCESSOR_LABEL || protected`` and the signature, in hex."""
    document = _try(lambda: json.loads(protected)) or {}
    out = []
    for statement in document.get("authority_chain", []) if isinstance(document, dict) else []:
        raw = _try(lambda s=statement: b64decode(s["protected"])) or b""
        out.append({"protected_text": raw.decode("utf-8", "replace"),
                    "signing_input_hex": (crypto.AUTHORITY_SUCCESSOR_LABEL + raw).hex(),
                    "signature_hex": _try(lambda s=statement: b64decode(s["signature"]).hex())})
    return out


def _ok(*, warning: bool = False) -> dict[str, Any]:
    return {"result": "ok", "serial": SERIAL, "participants": list(IDS),
            "expired_warning": warning}


def _reencode(data: bytes, *, protected: bytes | None = None,
              signature: bytes | None = None) -> bytes:
    outer = json.loads(data)
    if protected is not None:
        outer["protected"] = b64encode(protected)
    if signature is not None:
        outer["signature"] = b64encode(signature)
    return dump_json({"protected": outer["protected"], "signature": outer["signature"]})


def generate() -> list[dict[str, Any]]:
    valid = _sign(AUTHORITY)
    protected = b64decode(json.loads(valid)["protected"])
    tampered = protected.replace(b'"serial":2', b'"serial":3', 1)
    assert tampered != protected
    signature = bytearray(b64decode(json.loads(valid)["signature"]))
    signature[10] ^= 0x01

    forged_doc = protected  # names AUTHORITY's key id ...
    forged_sig = OTHER.sign(crypto.DIRECTORY_LABEL, forged_doc)  # ... signed by another key

    successor = sign_successor(AUTHORITY, OTHER.public_key, issued=ISSUED - 3600)

    # Clarified rules (SPEC.md §11.4, §11.6 step 3, §11.6.1).
    key_id_text = f'"authority":"{AUTHORITY.key_id}"'.encode()
    assert protected.count(key_id_text) == 1
    bad_authority = protected.replace(key_id_text, b'"authority":"' + b"A" * 21 + b'B"')
    v2_statement_bytes = dump_json({"v": 2, "predecessor": AUTHORITY.key_id,
                                    "successor": b64encode(OTHER.public_key),
                                    "issued": ISSUED - 3600})
    v2_statement = {"protected": b64encode(v2_statement_bytes),
                    "signature": b64encode(AUTHORITY.sign(crypto.AUTHORITY_SUCCESSOR_LABEL,
                                                          v2_statement_bytes))}
    zone_text = b'"timezone":"Asia/Manila"'
    assert protected.count(zone_text) == 1
    lower_zone = protected.replace(zone_text, b'"timezone":"asia/manila"')
    lower_zone_signed = _reencode(valid, protected=lower_zone,
                                  signature=AUTHORITY.sign(crypto.DIRECTORY_LABEL, lower_zone))
    return [
        _vector("directory-valid", "directory signed by the pinned authority, first load",
                valid, signer=AUTHORITY, expected=_ok()),
        _vector("directory-same-serial-fresh-store",
                "a store that remembers serial 2 but not the bytes accepts serial 2 again",
                valid, signer=AUTHORITY, expected=_ok(), held_serial=SERIAL),
        _vector("directory-tampered", "one byte of the protected document changed (serial "
                "2 -> 3) after signing", _reencode(valid, protected=tampered), signer=None,
                expected={"error": "bad_signature"}),
        _vector("directory-tampered-signature", "one bit of the signature flipped",
                _reencode(valid, signature=bytes(signature)), signer=None,
                expected={"error": "bad_signature"}),
        _vector("directory-wrong-authority", "signed by an authority key that is not pinned",
                _sign(OTHER), signer=OTHER, expected={"error": "untrusted_authority"}),
        _vector("directory-forged-authority-id", "names the pinned authority's key id but is "
                "signed by another key", _reencode(valid, signature=forged_sig), signer=OTHER,
                expected={"error": "bad_signature"}),
        _vector("directory-lower-serial", "valid signature, but the verifier already holds "
                "serial 3", valid, signer=AUTHORITY, held_serial=3,
                expected={"error": "stale_directory"}),
        _vector("directory-expired-in-grace", "one day past expires: still accepted, with the "
                "expired warning", valid, signer=AUTHORITY, now=EXPIRES + 24 * 3600,
                expected=_ok(warning=True)),
        _vector("directory-expired", "past expires by the whole grace period",
                valid, signer=AUTHORITY, now=EXPIRES + DIRECTORY_GRACE_SECONDS,
                expected={"error": "directory_expired"}),
        _vector("directory-successor", "signed by a new authority key; authority_chain "
                "carries the pinned key's successor statement naming it",
                _sign(OTHER, chain=[successor]), signer=OTHER, expected=_ok(),
                note="authority_chain[0] is signed by the pinned key with the label "
                     "'caseway/v1 authority-successor\\x00'"),
        _vector("directory-authority-not-key-id", "authority is 22 base64url characters but "
                "not canonical (last character 'B' has non-zero unused bits): bad_encoding "
                "before any key lookup", _reencode(valid, protected=bad_authority),
                signer=None, expected={"error": "bad_encoding"}),
        _vector("directory-successor-bad-version", "authority_chain[0] is a successor "
                "statement with v 2", _sign(OTHER, chain=[v2_statement]), signer=OTHER,
                expected={"error": "unsupported_version"}),
        _vector("directory-timezone-case", "signed by the pinned authority, but one entry's "
                "timezone is 'asia/manila': names match the tz database exactly, case "
                "included", lower_zone_signed, signer=AUTHORITY,
                expected={"error": "schema_invalid"}),
    ]
