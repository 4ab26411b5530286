"""Caseway seal/open beside the JOSE stack an integrator would otherwise pick.

    .venv/bin/pip install -e '.[bench]'   # jwcrypto
    .venv/bin/python benchmarks/jose_compare.py [--rounds 7] [--n 500]

JOSE construction, chosen to give the same guarantees as envelope v1: the referral is
encrypted with JWE (alg ECDH-ES, enc A256GCM, X25519 recipient key: ephemeral-static, like
the sealed box), and the compact JWE is signed with JWS EdDSA (Ed25519), so the signature
covers the ciphertext as Caseway's does. Open = verify JWS, then decrypt JWE. Strict-JSON
checks, binding and replay checks exist only on the Caseway side, so the comparison favours
JOSE slightly. Prints medians and Caseway ÷ JOSE for seal and open (below 1 = Caseway faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jwcrypto import jwe, jwk, jws
from jwcrypto.common import json_encode
from timing import median_per_op, pin_to_one_core

from envelope_helpers import Pair, SeenIds

REFERRAL = Path(__file__).resolve().parent.parent / "examples" / "referrals"


def sample_message() -> dict[str, object]:
    """The sample full referral if present (about 4 KiB), else a same-sized stand-in."""
    for path in sorted(REFERRAL.glob("*.json")):
        doc = json.loads(path.read_text("utf-8"))
        if isinstance(doc, dict) and doc.get("type") == "referral":
            return doc
    return {"type": "note", "text": "x" * 4000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    pin_to_one_core()

    message = sample_message()
    plaintext = json.dumps(message, separators=(",", ":")).encode()
    pair = Pair.fixed()
    sealed = pair.seal(message)
    seen = SeenIds()

    recipient = jwk.JWK.generate(kty="OKP", crv="X25519")
    recipient_public = jwk.JWK(**recipient.export_public(as_dict=True))
    signer = jwk.JWK.generate(kty="OKP", crv="Ed25519")
    verifier = jwk.JWK(**signer.export_public(as_dict=True))

    def jose_seal() -> str:
        enc = jwe.JWE(plaintext, protected=json_encode({"alg": "ECDH-ES", "enc": "A256GCM"}))
        enc.add_recipient(recipient_public)
        signed = jws.JWS(enc.serialize(compact=True).encode())
        signed.add_signature(signer, None, json_encode({"alg": "EdDSA"}))
        return str(signed.serialize(compact=True))

    token = jose_seal()

    def jose_open() -> bytes:
        outer = jws.JWS()
        outer.deserialize(token)
        outer.verify(verifier)
        inner = jwe.JWE()
        inner.deserialize(outer.payload.decode(), key=recipient)
        return bytes(inner.payload)

    assert json.loads(jose_open()) == message
    assert pair.open(sealed.data, seen=seen).message == message

    n, rounds = args.n, args.rounds
    results = {
        "caseway seal": median_per_op(lambda: pair.seal(message), n, rounds),
        "jose seal": median_per_op(jose_seal, n, rounds),
        "caseway open": median_per_op(lambda: pair.open(sealed.data, seen=seen), n, rounds),
        "jose open": median_per_op(jose_open, n, rounds),
    }
    print(f"message {len(plaintext)} bytes; caseway envelope {len(sealed.data)} bytes, "
          f"JOSE token {len(token)} bytes; median of {rounds} x {n}, one core")
    for name, seconds in results.items():
        print(f"  {name:<14} {seconds * 1e6:8.1f} µs  {1 / seconds:8.0f} /s")
    print(f"ratio caseway/jose seal = {results['caseway seal'] / results['jose seal']:.2f}")
    print(f"ratio caseway/jose open = {results['caseway open'] / results['jose open']:.2f}")


if __name__ == "__main__":
    main()
