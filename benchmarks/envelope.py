"""Seal and open per second on one core, beside the primitives they are built from.

    .venv/bin/python benchmarks/envelope.py [--rounds 7] [--n 2000]

Prints medians over rounds. The floor is what any implementation of v1 must pay:
open = Ed25519 verify + sealed-box open + parsing the three JSON layers (outer, header,
plaintext) with the stdlib parser; seal = Ed25519 sign + sealed-box seal + serialising them.
The ratio open ÷ floor says how much Caseway's own checks (strict parsing, base64url
canonical form, header rules, binding) add. Target: ≤ 1.5.
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nacl.bindings as sodium
from timing import median_per_op, pin_to_one_core

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode

from envelope_helpers import NOW, Pair, SeenIds

REFERRAL_LIKE = {
    "type": "referral", "case_id": "c" * 22, "thread_id": "t" * 22, "seq": 1, "sent_at": NOW,
    "sections": {name: {"text": "x" * 300, "codes": ["a", "b", "c"]} for name in
                 ("identity", "contact_safety", "location_return", "incident", "needs",
                  "migration_context", "children_dependants")},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    pin_to_one_core()

    pair = Pair.fixed()
    sealed = pair.seal(REFERRAL_LIKE)
    data = sealed.data
    seen = SeenIds()
    outer = json.loads(data)
    protected = b64decode(outer["protected"])
    signature = b64decode(outer["signature"])
    header = json.loads(protected)
    ciphertext = b64decode(header["ciphertext"])
    plaintext = crypto.sealed_box_open(ciphertext, pair.bob.encryption)
    bob_pk, bob_sk = pair.bob.encryption.public_key, pair.bob.encryption.secret
    alice_pk = pair.alice.signing.public_key
    signing_input = crypto.ENVELOPE_LABEL + protected
    secret64 = pair.alice.signing._secret
    n, rounds = args.n, args.rounds
    to_std = bytes.maketrans(b"-_", b"+/")

    def timed(fn: Callable[[], object]) -> float:
        return median_per_op(fn, n, rounds)

    t = {
        "seal (caseway)": timed(lambda: pair.seal(REFERRAL_LIKE)),
        "open (caseway)": timed(lambda: pair.open(data, seen=seen)),
        "ed25519 sign": timed(lambda: sodium.crypto_sign(signing_input, secret64)),
        "ed25519 verify": timed(lambda: sodium.crypto_sign_open(signature + signing_input,
                                                                 alice_pk)),
        "sealed box seal": timed(lambda: sodium.crypto_box_seal(plaintext, bob_pk)),
        "sealed box open": timed(lambda: sodium.crypto_box_seal_open(ciphertext, bob_pk,
                                                                      bob_sk)),
        "json parse x3": timed(lambda: (json.loads(data), json.loads(protected),
                                         json.loads(plaintext))),
        # The fastest plain decode (no validation): bytes.translate + binascii.
        "base64url decode x2": timed(lambda: (
            binascii.a2b_base64(outer["protected"].encode().translate(to_std) + b"=="),
            binascii.a2b_base64(header["ciphertext"].encode().translate(to_std) + b"=="))),
        "json dump x3": timed(lambda: (json.dumps(REFERRAL_LIKE), json.dumps(header),
                                       json.dumps(outer))),
    }
    crypto_json_floor = t["ed25519 verify"] + t["sealed box open"] + t["json parse x3"]
    open_floor = crypto_json_floor + t["base64url decode x2"]
    seal_floor = t["ed25519 sign"] + t["sealed box seal"] + t["json dump x3"]
    print(f"envelope: {len(data)} bytes, plaintext {len(plaintext)} bytes; "
          f"median of {rounds} rounds x {n} ops, one core")
    for name, seconds in t.items():
        print(f"  {name:<20} {seconds * 1e6:8.1f} µs   {1 / seconds:9.0f} /s")
    print(f"  open floor         {open_floor * 1e6:8.1f} µs   "
          "(verify + seal-open + parse x3 + base64url x2)")
    print(f"  seal floor         {seal_floor * 1e6:8.1f} µs   (sign + seal + dump x3)")
    print(f"ratio open / floor = {t['open (caseway)'] / open_floor:.2f}   (target <= 1.5)")
    print(f"ratio open / (crypto + json only) = {t['open (caseway)'] / crypto_json_floor:.2f}")
    print(f"ratio seal / floor = {t['seal (caseway)'] / seal_floor:.2f}")


if __name__ == "__main__":
    main()
