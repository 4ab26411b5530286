"""Consent enforcement on seal and on open (BRIEF §4, SPEC.md consent rules C1–C9)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseway.keys.identity import PublicKey, StaticKeys
from caseway.protocol.consent import ConsentRecord, check_consent, check_feedback
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.envelope import (
    EnvelopeLayerOnly,
    MessagePolicy,
    OpenedEnvelope,
    Sender,
    open_envelope,
    seal_envelope,
)
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.messages import DATA_CATEGORIES, SERVICES
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy, StaticSectors

ROOT = Path(__file__).resolve().parent.parent
SAMPLE: dict[str, Any] = json.loads(
    (ROOT / "examples/referrals/ph-return-full.json").read_text("utf-8"))
NOW = SAMPLE["sent_at"] + 60
CONSENT_ID = SAMPLE["consent"]["consent_id"]

EMBASSY = "ph-embassy-kl"
SHELTER = "ph-shelter-manila"
DIRECTORY = {
    EMBASSY: ["embassy_consular"],
    SHELTER: ["shelter", "social_services"],
    "my-immigration-kl": ["immigration_enforcement"],
    "my-agency-kl": ["recruitment_agency"],
    "ph-police-manila": ["police"],
    "ph-legal-cebu": ["legal_aid"],
}
SIGNING = {p: SigningKeyPair(bytes([i + 1]) * 32) for i, p in enumerate(DIRECTORY)}
ENCRYPTION = {p: EncryptionKeyPair(bytes([i + 101]) * 32) for i, p in enumerate(DIRECTORY)}


class Me:
    def __init__(self, participant: str):
        self.participant = participant

    def decryption_key(self, key_id: str) -> EncryptionKeyPair | None:
        key = ENCRYPTION[self.participant]
        return key if key.key_id == key_id else None


class NothingSeen:
    def seen(self, sender: str, message_id: str) -> bool:
        return False


def policy(state: InMemoryConsentState | None = None) -> ReferralPolicy:
    return ReferralPolicy(StaticSectors(DIRECTORY), state or InMemoryConsentState())


def seal(msg: dict[str, Any], recipient: str = SHELTER, *, sender: str = EMBASSY,
         pol: MessagePolicy | None = None, created: int = NOW - 30) -> bytes:
    return seal_envelope(
        msg, sender=Sender(sender, SIGNING[sender]), recipient=recipient,
        recipient_public_key=ENCRYPTION[recipient].public_key, message_id=bytes(16),
        created=created, expires=created + 86400, ephemeral_secret=bytes([7]) * 32,
        policy=pol or policy()).data


def open_(data: bytes, recipient: str = SHELTER, *, sender: str = EMBASSY,
          pol: MessagePolicy | None = None, now: int = NOW) -> OpenedEnvelope:
    keys = StaticKeys([PublicKey(sender, SIGNING[sender].public_key)])
    return open_envelope(data, me=Me(recipient), keys=keys, replay=NothingSeen(), now=now,
                         policy=pol or policy())


def refused_both_ways(msg: dict[str, Any], recipient: str = SHELTER, *,
                      state: InMemoryConsentState | None = None, sender: str = EMBASSY,
                      now: int = NOW) -> CasewayError:
    """The sender's seal refuses; a careless sender's envelope is refused again on open."""
    with pytest.raises(CasewayError) as on_seal:
        seal(msg, recipient, sender=sender, pol=policy(state), created=now - 30)
    careless = seal(msg, recipient, sender=sender, pol=EnvelopeLayerOnly(), created=now - 30)
    with pytest.raises(CasewayError) as on_open:
        open_(careless, recipient, sender=sender, pol=policy(state), now=now)
    assert (on_seal.value.code, on_seal.value.section) == \
        (on_open.value.code, on_open.value.section)
    assert on_seal.value.code.http_status == 403
    return on_open.value


def scoped(msg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    msg = copy.deepcopy(msg)
    scope = msg["consent"]["scope"]
    for key, value in changes.items():
        if key in ("participants", "sectors"):
            scope["recipients"][key] = value
        elif key in scope:
            scope[key] = value
        else:
            msg["consent"][key] = value
    return msg


def test_full_referral_goes_through_seal_and_open() -> None:
    opened = open_(seal(SAMPLE))
    assert opened.message == SAMPLE


@pytest.mark.parametrize("category", DATA_CATEGORIES)
def test_each_category_outside_scope_is_refused_on_seal_and_open(category: str) -> None:
    msg = scoped(SAMPLE, data_categories=[c for c in DATA_CATEGORIES if c != category])
    # Attachments name their own category; keep only those still in scope.
    msg["attachments"] = [a for a in msg["attachments"] if a["category"] != category]
    if not msg["attachments"]:
        del msg["attachments"]
    err = refused_both_ways(msg)
    assert err.code is ErrorCode.CONSENT_VIOLATION
    assert err.section == category
    # ... and once the section is left out, the same consent lets the rest through.
    del msg["sections"][category]
    assert open_(seal(msg)).message == msg


def test_attachment_category_outside_scope_is_refused() -> None:
    msg = scoped(SAMPLE, data_categories=[c for c in DATA_CATEGORIES if c != "legal"])
    del msg["sections"]["legal"]
    err = refused_both_ways(msg)
    assert (err.code, err.section) == (ErrorCode.CONSENT_VIOLATION, "attachments")


def test_expired_consent_is_refused() -> None:
    # Sealed at NOW - 30: expiry is "now >= expires_at", on either side's clock.
    msg = scoped(SAMPLE, given_at=NOW - 1000, expires_at=NOW - 30)
    err = refused_both_ways(msg)
    assert err.code is ErrorCode.CONSENT_EXPIRED
    # Valid while now < expires_at.
    assert open_(seal(scoped(msg, expires_at=NOW + 1))).message["type"] == "referral"


def test_consent_that_expires_in_transit_is_refused_on_open() -> None:
    msg = scoped(SAMPLE, given_at=NOW - 1000, expires_at=NOW + 10)
    data = seal(msg)
    with pytest.raises(CasewayError) as err:
        open_(data, now=NOW + 10)
    assert err.value.code is ErrorCode.CONSENT_EXPIRED


def test_withdrawn_consent_is_refused() -> None:
    state = InMemoryConsentState()
    state.withdraw(CONSENT_ID)
    err = refused_both_ways(SAMPLE, state=state)
    assert err.code is ErrorCode.CONSENT_WITHDRAWN


@pytest.mark.parametrize("recipient", ["my-immigration-kl", "my-agency-kl"])
def test_enforcement_recipient_refused_even_with_consent(recipient: str) -> None:
    msg = scoped(SAMPLE, participants=[recipient], sectors=["immigration_enforcement",
                                                            "recruitment_agency"])
    err = refused_both_ways(msg, recipient)
    assert err.code is ErrorCode.FIREWALL


def test_police_only_for_the_reporting_purpose_she_chose() -> None:
    police = "ph-police-manila"
    msg = scoped(SAMPLE, participants=[police])
    assert refused_both_ways(msg, police).code is ErrorCode.FIREWALL
    # She chose reporting: the referral may name it, and police may receive it.
    reporting = scoped(msg, purposes=["reporting", "service_provision"], services_refused=[])
    reporting["purposes"] = ["reporting"]
    assert open_(seal(reporting, police), police).message["purposes"] == ["reporting"]
    # The referral cannot claim a purpose she did not choose.
    claimed = copy.deepcopy(msg)
    claimed["purposes"] = ["reporting"]
    err = refused_both_ways(claimed, police)
    assert (err.code, err.section) == (ErrorCode.CONSENT_VIOLATION, "purposes")


def test_recipient_must_be_in_scope_by_participant_or_sector() -> None:
    by_sector = scoped(SAMPLE, participants=[], sectors=["shelter"])
    open_(seal(by_sector))
    neither = scoped(SAMPLE, participants=["ph-legal-cebu"], sectors=["health"])
    err = refused_both_ways(neither)
    assert (err.code, err.section) == (ErrorCode.CONSENT_VIOLATION, "recipient")


@settings(max_examples=40, deadline=None)
@given(refused=st.sets(st.sampled_from(SERVICES), min_size=1))
def test_a_refused_service_is_never_requested(refused: set[str]) -> None:
    msg = scoped(SAMPLE, services_refused=sorted(refused))
    requested = set(msg["sections"]["needs"]["services_requested"])
    record = ConsentRecord.from_json(msg["consent"])
    kwargs: dict[str, Any] = dict(consent=record, recipient=SHELTER,
                                  recipient_sectors=frozenset(DIRECTORY[SHELTER]), now=NOW,
                                  withdrawn=())
    if requested & refused:
        with pytest.raises(CasewayError) as err:
            check_consent(msg, **kwargs)
        assert err.value.section == "needs"
    else:
        check_consent(msg, **kwargs)


def test_consent_given_after_the_message_is_refused() -> None:
    err = refused_both_ways(scoped(SAMPLE, given_at=SAMPLE["sent_at"] + 1))
    assert (err.code, err.section) == (ErrorCode.CONSENT_VIOLATION, "consent")


def test_onward_referral_needs_onward_consent_and_the_same_consent() -> None:
    onward = copy.deepcopy(SAMPLE)
    onward.update(type="onward_referral", previous_thread=SAMPLE["thread_id"],
                  thread_id="AAAAAAAAAAAAAAAAAAAAAA")
    legal = "ph-legal-cebu"
    open_(seal(onward, legal, sender=SHELTER), legal, sender=SHELTER)
    err = refused_both_ways(scoped(onward, onward_referral_allowed=False), legal,
                            sender=SHELTER)
    assert (err.code, err.section) == (ErrorCode.CONSENT_VIOLATION, "onward_referral")
    # The shelter knows the previous thread's consent: a different one is refused.
    state = InMemoryConsentState()
    state.record_thread(SAMPLE["thread_id"], ConsentRecord.from_json(
        scoped(SAMPLE, consent_id="BBBBBBBBBBBBBBBBBBBBBA")["consent"]))
    with pytest.raises(CasewayError) as refused:
        seal(onward, legal, sender=SHELTER, pol=policy(state))
    assert refused.value.section == "consent"


def test_feedback_rules() -> None:
    record = ConsentRecord.from_json(scoped(SAMPLE, feedback_allowed=False)["consent"])
    base = {"case_id": SAMPLE["case_id"], "thread_id": SAMPLE["thread_id"], "seq": 2,
            "sent_at": NOW}
    update = {"type": "update", **base, "kind": "note", "note": "x"}
    close = {"type": "close", **base, "outcome": "services_completed"}
    silent = {"type": "close", **base, "outcome": "outcome_not_shared"}
    for msg in (update, close, {**silent, "note": "x"}):
        with pytest.raises(CasewayError) as err:
            check_feedback(msg, consent=record, now=NOW, withdrawn=())
        assert (err.value.code, err.value.section) == (ErrorCode.CONSENT_VIOLATION,
                                                       "feedback")
    check_feedback(silent, consent=record, now=NOW, withdrawn=())
    allowed = ConsentRecord.from_json(SAMPLE["consent"])
    for msg in (update, close):
        check_feedback(msg, consent=allowed, now=NOW, withdrawn=())
    with pytest.raises(CasewayError) as err:
        check_feedback(update, consent=allowed, now=NOW, withdrawn={CONSENT_ID})
    assert err.value.code is ErrorCode.CONSENT_WITHDRAWN


def test_consent_record_round_trip() -> None:
    record = ConsentRecord.from_json(SAMPLE["consent"])
    assert ConsentRecord.from_json(record.to_json()) == record
    assert record.to_json() == SAMPLE["consent"]  # the sample's lists are sorted
    with pytest.raises(CasewayError):
        ConsentRecord.from_json({**SAMPLE["consent"], "expires_at": record.given_at})


def test_refusals_never_name_case_values() -> None:
    values = [SAMPLE["sections"]["identity"]["given_name"], SAMPLE["survivor_ref"],
              SAMPLE["consent"]["recorded_by"], CONSENT_ID]
    cases = [scoped(SAMPLE, data_categories=["needs"]), scoped(SAMPLE, expires_at=NOW - 1,
                                                               given_at=NOW - 9)]
    for msg in cases:
        with pytest.raises(CasewayError) as err:
            seal(msg)
        assert not any(v in str(err.value) for v in values)
