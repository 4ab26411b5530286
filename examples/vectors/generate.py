"""Regenerate every test vector: ``python examples/vectors/generate.py``.

Each ``gen_<kind>.py`` beside this file exposes ``generate() -> list[dict]``; every vector
dict has ``name`` (file stem), ``kind``, ``description``, its inputs, intermediate values
and ``expected`` ({"result": "ok"} or {"error": "<code>"}). Vectors are deterministic: all
keys, ids, ephemeral secrets and times are fixed, so a run reproduces them byte for byte.
Files go to ``examples/vectors/<kind>/<name>.json``; ``index.json`` lists them all.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


DEFAULT_OPERATION = {"directory": "load", "message": "seal-and-open-with-policy"}

#: What every vector of a kind holds, and what to do with it (examples/README.md walks
#: through each). Paths are dotted; "a|b" means at least one of them.
KINDS = {
    "envelope": {
        "spec": "SPEC.md §4, §5, §10",
        "operations": {
            "seal-and-open": "re-seal from inputs (signing_seed_hex, ephemeral_secret_hex, "
                             "message_id_hex, created, expires, message) and compare the bytes "
                             "with 'envelope'; then open it",
            "open": "open 'envelope' as inputs.recipient with inputs.known_keys, inputs.seen "
                    "and inputs.now; a negative vector must fail with exactly expected.error",
            "seal": "sealing must fail with expected.error",
        },
        "fields": ["inputs.operation", "inputs.policy", "inputs.sender.signing_seed_hex",
                   "inputs.recipient.encryption_secret_hex", "inputs.known_keys",
                   "inputs.seen", "inputs.now", "inputs.message_id_hex",
                   "inputs.ephemeral_secret_hex", "inputs.created", "inputs.expires",
                   "inputs.message", "expected", "spec"],
        "intermediate": ["plaintext", "plaintext_hex", "ephemeral_public_key_hex", "nonce_hex",
                         "shared_secret_hex", "box_key_hex", "mac_hex", "ciphertext_b64",
                         "protected", "protected_b64", "signing_input_hex", "signature_hex",
                         "tampered_after_signing", "received"],
    },
    "receipt": {
        "spec": "SPEC.md §6, §10",
        "operations": {
            "sign-and-verify": "re-sign from inputs.fields with inputs.signer.signing_seed_hex "
                               "and compare with 'receipt'; then verify it",
            "verify": "verify 'receipt' expecting inputs.expected_recipient and "
                      "inputs.expected_envelope_digest_hex",
        },
        "fields": ["inputs.operation", "inputs.signer.signing_seed_hex", "inputs.fields",
                   "inputs.expected_recipient", "inputs.expected_envelope_digest_hex",
                   "receipt", "expected", "spec"],
        "intermediate": ["protected", "protected_b64", "signing_input_hex", "signature_hex"],
    },
    "directory": {
        "spec": "SPEC.md §11.6, §11.7, §11.13",
        "operations": {"load": "load inputs.directory into a trust store pinning "
                               "inputs.pinned_authority_keys, holding inputs.held_serial, at "
                               "inputs.now with inputs.grace_seconds"},
        "fields": ["inputs.pinned_authority_keys", "inputs.held_serial", "inputs.now",
                   "inputs.grace_seconds", "inputs.directory", "expected", "spec"],
        "intermediate": ["protected_b64", "protected_text", "signing_input_hex",
                         "signature_b64", "signature_hex", "authority_chain"],
    },
    "message": {
        "spec": "SPEC.md §12.11",
        "operations": {"seal-and-open-with-policy": "re-seal without the policy and compare "
                       "bytes; then seal with the policy and open with it (applying "
                       "inputs.thread when given): both must give expected"},
        "fields": ["inputs.sender_signing_seed", "inputs.recipient_encryption_secret",
                   "inputs.message_id", "inputs.ephemeral_secret", "inputs.created",
                   "inputs.expires", "inputs.now", "inputs.directory", "inputs.consent_state",
                   "inputs.message", "envelope", "expected", "spec"],
        "intermediate": ["plaintext", "protected", "ephemeral_public_key_hex", "nonce_hex",
                         "shared_secret_hex", "box_key_hex", "mac_hex", "signing_input_hex",
                         "signature_hex", "envelope_digest_hex"],
    },
}


def main() -> None:
    index = []
    for gen in sorted(HERE.glob("gen_*.py")):
        for vector in _load(gen).generate():
            kind, name = vector["kind"], vector["name"]
            out = HERE / kind / f"{name}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(vector, indent=2, ensure_ascii=False) + "\n", "utf-8")
            index.append({"file": f"{kind}/{name}.json", "kind": kind,
                          "description": vector["description"], "expected": vector["expected"],
                          "name": name,
                          "operation": vector["inputs"].get("operation") or DEFAULT_OPERATION[kind],
                          "spec": vector.get("spec")})
    index.sort(key=lambda entry: entry["file"])
    (HERE / "index.json").write_text(json.dumps({"vectors": index, "kinds": KINDS}, indent=2,
                                                ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {len(index)} vectors")


if __name__ == "__main__":
    main()
