"""The firewall end to end: the sample directory's immigration office can never be sealed
to, whatever the consent says (issue 3 acceptance; BRIEF §4)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from caseway.keys.trust import TrustStore
from caseway.protocol.encoding import b64decode
from caseway.protocol.envelope import Sender, seal_envelope
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy

EXAMPLES = Path(__file__).parent.parent / "examples"
REFERRAL = json.loads((EXAMPLES / "referrals" / "ph-return-full.json").read_text())


def _trust() -> tuple[TrustStore, int]:
    directory = (EXAMPLES / "directory" / "directory.json").read_bytes()
    authority = json.loads((EXAMPLES / "directory" / "authority.pub.json").read_text())["key"]
    store = TrustStore([b64decode(authority, length=32)])
    issued = json.loads(b64decode(json.loads(directory)["protected"]))["issued"]
    store.load(directory, issued + 60)
    return store, issued + 60


def _seal_to(recipient: str, message: dict[str, object]) -> None:
    from caseway.protocol.crypto import SigningKeyPair

    store, now = _trust()
    public, _ = store.encryption_key(recipient, now)
    policy = ReferralPolicy(store, InMemoryConsentState())
    message = {**message, "sent_at": now}
    seal_envelope(message, sender=Sender("ph-embassy-kl", SigningKeyPair(bytes([1]) * 32)),
                  recipient=recipient, recipient_public_key=public, message_id=bytes(16),
                  created=now, expires=now + 3600, ephemeral_secret=bytes([7]) * 32,
                  policy=policy)


def _consenting_to(recipient: str, sector: str, purposes: list[str]) -> dict[str, object]:
    """The sample referral, with a consent scope that names this recipient explicitly."""
    message = copy.deepcopy(REFERRAL)
    scope = message["consent"]["scope"]
    scope["recipients"]["participants"].append(recipient)
    scope["recipients"]["sectors"].append(sector)
    scope["purposes"] = sorted(set(scope["purposes"]) | set(purposes))
    message["purposes"] = purposes
    message["consent"]["given_at"] = 0
    return message


def test_sample_referral_seals_to_the_shelter() -> None:
    message = copy.deepcopy(REFERRAL)
    message["consent"]["given_at"] = 0
    _seal_to("ph-shelter-manila", message)


def test_immigration_office_is_refused_even_with_explicit_consent() -> None:
    message = _consenting_to("my-immigration-kl", "immigration_enforcement",
                             ["case_management"])
    with pytest.raises(CasewayError) as info:
        _seal_to("my-immigration-kl", message)
    assert info.value.code is ErrorCode.FIREWALL
