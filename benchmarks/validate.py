"""Schema validation of a full referral beside opening its envelope, in the same run.

    .venv/bin/python benchmarks/validate.py [--runs N]

Uses the ~4 KiB sample ``examples/referrals/ph-return-full.json``. Reports medians (µs per
call) of:

- ``open (envelope only)``: open_envelope with the envelope-layer-only policy: size, strict
  parse, header, Ed25519 verify, sealed-box decrypt, inner parse and binding;
- ``schema: registry $refs``: the cached Draft 2020-12 validator of
  ``caseway.schemas.validator``, whose ``$ref``s resolve through the ``referencing``
  registry on every use;
- ``schema: bundled``: the same documents with every ``$ref`` inlined, compiled once
  (``caseway.protocol.messages.bundled_validator``; ``validate_message`` uses it only to
  explain a refusal);
- ``schema: bundled, is_valid``: its ``is_valid`` fast path (stops at the first error);
- ``schema: bundled, no formats``: without the ``date`` format checker;
- ``schema: fresh validator``: bundling and building a validator per call (no caching);
- ``schema: jsonschema-rs``: the compiled validator over the same bundled schema, which
  decides the accept path of ``validate_message`` (``fast_validator``);
- ``validate_message``: jsonschema-rs plus the inline-attachment digest checks;
- ``policy.check_incoming``: validate_message plus consent and firewall;
- ``open + ReferralPolicy``: everything a receiver does before the lifecycle.

Then says whether validation dominates the cost of opening.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from caseway import schemas
from caseway.keys.identity import PublicKey, StaticKeys
from caseway.protocol.consent import ConsentRecord
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.encoding import dump_json
from caseway.protocol.envelope import EnvelopeLayerOnly, Sender, open_envelope, seal_envelope
from caseway.protocol.messages import (
    _inline,
    bundled_validator,
    fast_validator,
    validate_message,
)
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy, StaticSectors

ROOT = Path(__file__).resolve().parent.parent
SAMPLE: dict[str, Any] = json.loads(
    (ROOT / "examples/referrals/ph-return-full.json").read_text("utf-8"))
NOW = SAMPLE["sent_at"] + 60


class _Me:
    participant = "ph-shelter-manila"

    def __init__(self, key: EncryptionKeyPair):
        self.key = key

    def decryption_key(self, key_id: str) -> EncryptionKeyPair | None:
        return self.key if key_id == self.key.key_id else None


class _Unseen:
    def seen(self, sender: str, message_id: str) -> bool:
        return False


def median_us(fn: Callable[[], Any], runs: int) -> float:
    for _ in range(max(10, runs // 20)):  # warm caches
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    runs = parser.parse_args().runs

    signing = SigningKeyPair(bytes.fromhex("01" * 32))
    encryption = EncryptionKeyPair(bytes.fromhex("04" * 32))
    state = InMemoryConsentState()
    state.record_thread(SAMPLE["thread_id"], ConsentRecord.from_json(SAMPLE["consent"]))
    policy = ReferralPolicy(StaticSectors({"ph-embassy-kl": ["embassy_consular"],
                                           "ph-shelter-manila": ["shelter"]}), state)
    data = seal_envelope(SAMPLE, sender=Sender("ph-embassy-kl", signing),
                         recipient="ph-shelter-manila",
                         recipient_public_key=encryption.public_key, message_id=bytes(16),
                         created=NOW - 30, expires=NOW + 86400,
                         ephemeral_secret=bytes.fromhex("e0" * 32), policy=policy).data
    keys = StaticKeys([PublicKey("ph-embassy-kl", signing.public_key)])
    me, unseen = _Me(encryption), _Unseen()

    registry = schemas.validator("referral")
    bundled = bundled_validator("referral")
    fast = fast_validator("referral")
    no_formats = Draft202012Validator(bundled.schema)

    def fresh() -> None:
        root = schemas.load("referral")
        Draft202012Validator(_inline(root, root, depth=0),
                             format_checker=Draft202012Validator.FORMAT_CHECKER
                             ).is_valid(SAMPLE)

    rows = [
        ("open (envelope only)", lambda: open_envelope(
            data, me=me, keys=keys, replay=unseen, now=NOW, policy=EnvelopeLayerOnly())),
        ("schema: registry $refs", lambda: list(registry.iter_errors(SAMPLE))),
        ("schema: bundled", lambda: list(bundled.iter_errors(SAMPLE))),
        ("schema: bundled, is_valid", lambda: bundled.is_valid(SAMPLE)),
        ("schema: bundled, no formats", lambda: list(no_formats.iter_errors(SAMPLE))),
        ("schema: fresh validator", fresh),
        ("schema: jsonschema-rs", lambda: fast.is_valid(SAMPLE)),
        ("validate_message", lambda: validate_message(SAMPLE)),
        ("policy.check_incoming", lambda: policy.check_incoming(
            SAMPLE, sender="ph-embassy-kl", recipient="ph-shelter-manila", now=NOW)),
        ("open + ReferralPolicy", lambda: open_envelope(
            data, me=me, keys=keys, replay=unseen, now=NOW, policy=policy)),
    ]
    print(f"referral: {len(dump_json(SAMPLE))} bytes of message JSON, envelope "
          f"{len(data)} bytes; {runs} runs each, median µs per call")
    results: dict[str, float] = {}
    for name, fn in rows:
        results[name] = median_us(fn, runs if name != "schema: fresh validator"
                                  else max(50, runs // 20))
        print(f"  {name:<28} {results[name]:10.1f}")
    envelope, schema = results["open (envelope only)"], results["validate_message"]
    print(f"validation / envelope opening = {schema / envelope:.2f}; "
          f"validation {'dominates' if schema > envelope else 'does not dominate'} "
          f"(share of open + policy: {schema / results['open + ReferralPolicy']:.0%})")


if __name__ == "__main__":
    main()
