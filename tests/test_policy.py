"""ReferralPolicy: which checks run for which message, and its small interfaces."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from caseway.protocol.consent import ConsentRecord
from caseway.protocol.envelope import MessagePolicy
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.policy import (
    ConsentState,
    InMemoryConsentState,
    ParticipantSectors,
    ReferralPolicy,
    StaticSectors,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE: dict[str, Any] = json.loads(
    (ROOT / "examples/referrals/ph-return-full.json").read_text("utf-8"))
NOW = SAMPLE["sent_at"] + 60
THREAD, CONSENT_ID = SAMPLE["thread_id"], SAMPLE["consent"]["consent_id"]
SECTORS = StaticSectors({"ph-embassy-kl": ["embassy_consular"],
                         "ph-shelter-manila": ["shelter"],
                         "my-immigration-kl": ["immigration_enforcement"]})


def control(mtype: str, **fields: Any) -> dict[str, Any]:
    return {"type": mtype, "case_id": SAMPLE["case_id"], "thread_id": THREAD, "seq": 2,
            "sent_at": NOW, **fields}


def both(policy: ReferralPolicy, message: dict[str, Any], recipient: str) -> None:
    policy.check_outgoing(message, sender="x", recipient=recipient, now=NOW)
    policy.check_incoming(message, sender="x", recipient=recipient, now=NOW)


def test_interfaces_are_satisfied_by_the_in_memory_implementations() -> None:
    sectors: ParticipantSectors = SECTORS
    consents: ConsentState = InMemoryConsentState()
    policy: MessagePolicy = ReferralPolicy(sectors, consents)
    assert policy is not None


def test_unknown_recipient_is_unknown_sender() -> None:
    with pytest.raises(CasewayError) as err:
        both(ReferralPolicy(SECTORS, InMemoryConsentState()), SAMPLE, "ph-nowhere")
    assert err.value.code is ErrorCode.UNKNOWN_SENDER


def test_schema_is_checked_before_consent() -> None:
    state = InMemoryConsentState()
    state.withdraw(CONSENT_ID)
    bad = copy.deepcopy(SAMPLE)
    bad["seq"] = 0
    with pytest.raises(CasewayError) as err:
        both(ReferralPolicy(SECTORS, state), bad, "ph-shelter-manila")
    assert err.value.code is ErrorCode.SCHEMA_INVALID


def test_withdrawal_and_erasure_always_get_through() -> None:
    state = InMemoryConsentState()
    state.record_thread(THREAD, ConsentRecord.from_json(SAMPLE["consent"]))
    state.withdraw(CONSENT_ID)
    policy = ReferralPolicy(SECTORS, state)
    both(policy, control("consent_withdrawal", consent_id=CONSENT_ID, withdrawn_at=NOW),
         "ph-shelter-manila")
    tomb = {"case_id": SAMPLE["case_id"], "thread_id": THREAD, "consent_id": CONSENT_ID,
            "message_ids": [], "first_received_at": NOW, "withdrawn_at": NOW,
            "erased_at": NOW}
    both(policy, control("erasure_confirmation", consent_id=CONSENT_ID, tombstone=tomb),
         "ph-embassy-kl")
    for mtype, fields in (("accept", {}), ("decline", {"reason": "other"}),
                          ("cancel", {"reason": "other"}),
                          ("info_request", {"categories": ["health"]})):
        both(policy, control(mtype, **fields), "ph-embassy-kl")
    with pytest.raises(CasewayError) as err:
        both(policy, control("info_response", sections={"health": {"pregnant": False}}),
             "ph-shelter-manila")
    assert err.value.code is ErrorCode.CONSENT_WITHDRAWN


def test_thread_consent_is_needed_for_info_response_and_feedback() -> None:
    policy = ReferralPolicy(SECTORS, InMemoryConsentState())
    for message in (control("info_response", sections={"health": {"pregnant": False}}),
                    control("update", kind="note", note="x"),
                    control("close", outcome="outcome_not_shared")):
        with pytest.raises(CasewayError) as err:
            both(policy, message, "ph-embassy-kl")
        assert (err.value.code, err.value.section) == (ErrorCode.CONSENT_VIOLATION,
                                                       "consent")


def test_info_response_uses_the_thread_consent_and_firewall() -> None:
    state = InMemoryConsentState()
    state.record_thread(THREAD, ConsentRecord.from_json(SAMPLE["consent"]))
    policy = ReferralPolicy(SECTORS, state)
    response = control("info_response", sections={"health": {"pregnant": False}})
    both(policy, response, "ph-shelter-manila")
    with pytest.raises(CasewayError) as err:
        both(policy, response, "my-immigration-kl")
    assert err.value.code is ErrorCode.FIREWALL
