"""Envelope round trip in memory, narrated: seal → wire → open → receipt.

    python examples/envelope_demo.py

Two freshly generated identities (a Philippine embassy in Kuala Lumpur and a shelter in
Manila) exchange one envelope over an in-memory "wire". No network, no disk.
"""

from __future__ import annotations

import json
import os
import sys
import time

from caseway.keys.identity import Identity, StaticKeys
from caseway.protocol.crypto import digest
from caseway.protocol.encoding import b64decode
from caseway.protocol.envelope import EnvelopeLayerOnly, open_envelope, seal_envelope
from caseway.protocol.errors import CasewayError
from caseway.protocol.receipt import sign_receipt, verify_receipt


class SeenIds:
    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()

    def seen(self, sender: str, message_id: str) -> bool:
        return (sender, message_id) in self.pairs


def say(step: str, text: str) -> None:
    print(f"\n[{step}] {text}")


def main() -> int:
    now = int(time.time())
    say("1", "Two agencies generate their keys: an Ed25519 signing key and a separate X25519 "
        "encryption key each.")
    embassy = Identity.generate("ph-embassy-kl")
    shelter = Identity.generate("ph-shelter-manila")
    for who in (embassy, shelter):
        keys = who.public_keys()
        print(f"    {who.participant:<18} signing key id {keys['signing_key_id']}, "
              f"encryption key id {keys['encryption_key_id']}")
    directory = StaticKeys()
    directory.add_identity(embassy)
    directory.add_identity(shelter)

    message = {"type": "note", "text": "Return referral follows; she arrives at NAIA on the 14th."}
    say("2", "The embassy seals a message to the shelter: encrypted to the shelter's key, "
        "signed with the embassy's key.")
    sealed = seal_envelope(message, sender=embassy.sender, recipient=shelter.participant,
                           recipient_public_key=shelter.encryption.public_key,
                           message_id=os.urandom(16), created=now, expires=now + 7 * 86400,
                           ephemeral_secret=os.urandom(32), policy=EnvelopeLayerOnly())
    header = json.loads(b64decode(json.loads(sealed.data)["protected"]))
    print(f"    envelope: {len(sealed.data)} bytes; what anyone on the wire can read:")
    for field in ("id", "sender", "recipient", "created", "expires"):
        print(f"      {field:<10} {header[field]}")
    print(f"      ciphertext {len(header['ciphertext'])} base64url characters (the message, "
          "its type and every personal datum are in here)")

    wire = bytes(sealed.data)  # the in-memory wire
    say("3", "The shelter opens it: size, strict JSON, version, header, sender key, "
        "signature, addressing, time, replay, decryption, binding — in that order.")
    seen = SeenIds()
    opened = open_envelope(wire, me=shelter, keys=directory, replay=seen, now=now,
                           policy=EnvelopeLayerOnly())
    seen.pairs.add((opened.header.sender, opened.header.message_id))
    print(f"    opened message from {opened.header.sender}: {opened.message['text']!r}")

    say("4", "The shelter signs a receipt naming the digest of the exact bytes it received.")
    receipt = sign_receipt(signer=shelter.signing, recipient=shelter.participant,
                           envelope_digest=digest(wire), message_id=opened.header.message_id,
                           sender=opened.header.sender, received_at=now)
    proof = verify_receipt(receipt, keys=directory, expected_recipient=shelter.participant,
                           expected_digest=sealed.digest)
    print(f"    embassy verified the receipt: outcome {proof.outcome!r} for message "
          f"{proof.message_id}")

    say("5", "The same bytes again are a replay; a forged copy fails its signature.")
    outer = json.loads(wire)
    first = outer["signature"][0]
    outer["signature"] = ("B" if first == "A" else "A") + outer["signature"][1:]
    forged = json.dumps(outer, separators=(",", ":")).encode()
    for label, data in (("replay", wire), ("forgery", forged)):
        try:
            open_envelope(data, me=shelter, keys=directory, replay=seen, now=now,
                          policy=EnvelopeLayerOnly())
            print(f"    {label}: ACCEPTED (this is a bug)")
            return 1
        except CasewayError as exc:
            print(f"    {label}: refused with {exc.code.value!r}")
    print("\nDone: sealed, delivered, opened and receipted.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
