"""The case lifecycle: the table, sequence numbers, expiry, and two sides agreeing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseway.keys.identity import PublicKey, StaticKeys
from caseway.protocol.consent import ConsentRecord
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.envelope import Sender, open_envelope, seal_envelope
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.lifecycle import (
    AWAITING,
    MAY_SKIP_SEQUENCE,
    TRANSITIONS,
    Role,
    State,
    ThreadState,
    check_onward,
    tombstone,
    withdrawal_targets,
)
from caseway.protocol.messages import MESSAGE_TYPES
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy, StaticSectors

ROOT = Path(__file__).resolve().parent.parent
SAMPLE: dict[str, Any] = json.loads(
    (ROOT / "examples/referrals/ph-return-full.json").read_text("utf-8"))
CASE, THREAD = SAMPLE["case_id"], SAMPLE["thread_id"]
CONSENT_ID = SAMPLE["consent"]["consent_id"]
T0 = SAMPLE["sent_at"]
RESPOND_BY = SAMPLE["respond_by"]
REF, RCV = Role.REFERRER, Role.RECEIVER


def msg(mtype: str, seq: int, sent_at: int = T0 + 60, **fields: Any) -> dict[str, Any]:
    if mtype in ("referral", "onward_referral"):
        out = copy.deepcopy(SAMPLE)
        out.update(type=mtype, seq=seq, sent_at=sent_at, **fields)
        return out
    base = {"type": mtype, "case_id": CASE, "thread_id": THREAD, "seq": seq,
            "sent_at": sent_at}
    if mtype in ("consent_withdrawal", "erasure_confirmation"):
        base["consent_id"] = CONSENT_ID
    return {**base, **fields}


# --- the table -------------------------------------------------------------------------

def test_table_mentions_only_known_types_and_ends_in_erased() -> None:
    assert {t for (_, _, t) in TRANSITIONS} == set(MESSAGE_TYPES)
    assert not [k for k in TRANSITIONS if k[0] is State.ERASED]
    # Every state that ever held case data can be withdrawn (BRIEF §4).
    held = {s for s in State if s not in (State.NEW, State.WITHDRAWN, State.ERASED)}
    assert {s for (s, r, t) in TRANSITIONS if t == "consent_withdrawal"} == held
    # Only the referrer opens, cancels and withdraws; only the receiver decides and closes.
    for (_, role, mtype) in TRANSITIONS:
        if mtype in ("referral", "onward_referral", "cancel", "consent_withdrawal",
                     "info_response"):
            assert role is REF
        else:
            assert role is RCV


def test_anything_not_in_the_table_names_role_state_and_type() -> None:
    sent = ThreadState().apply(msg("referral", 1), role=REF)
    with pytest.raises(CasewayError) as err:
        sent.apply(msg("close", 1, outcome="other"), role=RCV)
    assert err.value.code is ErrorCode.INVALID_TRANSITION
    assert "close" in err.value.detail and "receiver" in err.value.detail
    assert "sent" in err.value.detail


def test_sequence_numbers() -> None:
    sent = ThreadState().apply(msg("referral", 1), role=REF)
    with pytest.raises(CasewayError) as gap:
        sent.apply(msg("accept", 2), role=RCV)
    assert gap.value.code is ErrorCode.SEQUENCE_GAP and gap.value.retry
    accepted = sent.apply(msg("accept", 1), role=RCV)
    with pytest.raises(CasewayError) as dup:
        accepted.apply(msg("update", 1, kind="note", note="x"), role=RCV)
    assert dup.value.code is ErrorCode.INVALID_TRANSITION
    # Each side counts its own: the referrer is still at 2.
    assert accepted.next_seq(REF) == 2 and accepted.next_seq(RCV) == 2
    with pytest.raises(CasewayError) as first:
        ThreadState().apply(msg("referral", 2), role=REF)
    assert first.value.code is ErrorCode.SEQUENCE_GAP


def test_message_of_another_thread_or_consent_is_refused() -> None:
    sent = ThreadState().apply(msg("referral", 1), role=REF)
    other = msg("accept", 1)
    other["thread_id"] = "AAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(CasewayError) as err:
        sent.apply(other, role=RCV)
    assert err.value.code is ErrorCode.INVALID_TRANSITION
    with pytest.raises(CasewayError):
        sent.apply(msg("consent_withdrawal", 2, consent_id="AAAAAAAAAAAAAAAAAAAAAA",
                       withdrawn_at=T0), role=REF)


def test_expiry_by_timer_and_by_message_time() -> None:
    sent = ThreadState().apply(msg("referral", 1), role=REF)
    assert sent.expire(RESPOND_BY - 1) is sent
    expired = sent.expire(RESPOND_BY)
    assert expired.state is State.EXPIRED
    # An answer sent before respond_by but delivered late still counts, on both sides.
    on_time = msg("accept", 1, sent_at=RESPOND_BY - 1)
    assert expired.apply(on_time, role=RCV) == sent.apply(on_time, role=RCV)
    late = msg("accept", 1, sent_at=RESPOND_BY)
    for side in (sent, expired):
        with pytest.raises(CasewayError) as err:
            side.apply(late, role=RCV)
        assert err.value.code is ErrorCode.INVALID_TRANSITION
        assert "expired" in err.value.detail
    # Accepted threads do not expire.
    accepted = sent.apply(on_time, role=RCV)
    assert accepted.expire(RESPOND_BY + 10**6) is accepted
    # The receiver of an expired referral still holds data: withdrawal reaches it.
    withdrawn = expired.apply(msg("consent_withdrawal", 2, withdrawn_at=RESPOND_BY + 5),
                              role=REF)
    assert withdrawn.state is State.WITHDRAWN


def test_state_json_round_trip() -> None:
    state = ThreadState().apply(msg("referral", 1), role=REF).expire(RESPOND_BY)
    assert ThreadState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_onward_withdrawal_targets_and_tombstone() -> None:
    sent = ThreadState().apply(msg("referral", 1), role=REF)
    with pytest.raises(CasewayError) as err:
        check_onward(sent, consent_onward_allowed=True)
    assert err.value.code is ErrorCode.INVALID_TRANSITION
    accepted = sent.apply(msg("accept", 1), role=RCV)
    check_onward(accepted, consent_onward_allowed=True)
    with pytest.raises(CasewayError) as refused:
        check_onward(accepted, consent_onward_allowed=False)
    assert refused.value.code is ErrorCode.CONSENT_VIOLATION
    # The shelter received THREAD and opened an onward thread as referrer.
    onward = ThreadState().apply(msg("onward_referral", 1, thread_id="AAAAAAAAAAAAAAAAAAAAAA",
                                     previous_thread=THREAD), role=REF)
    mine = [(accepted, RCV), (onward, REF)]
    assert withdrawal_targets(mine, CONSENT_ID) == ["AAAAAAAAAAAAAAAAAAAAAA"]
    assert withdrawal_targets(mine, "BBBBBBBBBBBBBBBBBBBBBA") == []
    kept = tombstone(accepted, message_ids=["m2", "m1"], first_received_at=T0,
                     withdrawn_at=T0 + 5, erased_at=T0 + 9)
    assert kept["message_ids"] == ["m1", "m2"] and kept["thread_id"] == THREAD
    assert set(kept) == {"case_id", "thread_id", "consent_id", "message_ids",
                         "first_received_at", "withdrawn_at", "erased_at"}


# --- property: any sequence follows the table or is refused, and both sides agree -------

step = st.tuples(
    st.sampled_from(list(Role)),
    st.sampled_from(MESSAGE_TYPES),
    st.sampled_from([0, 0, 0, 0, 1, -1]),  # seq offset from the expected number
    st.booleans(),  # sent at or after respond_by
    st.booleans(),  # the referrer's local timer fires before this message
)


@settings(max_examples=400, deadline=None)
@given(start=st.booleans(), steps=st.lists(step, max_size=14))
def test_any_sequence_follows_the_table_or_is_refused(
        start: bool, steps: list[tuple[Role, str, int, bool, bool]]) -> None:
    referrer_side = receiver_side = ThreadState()
    if start:
        referrer_side = receiver_side = ThreadState().apply(msg("referral", 1), role=REF)
    for role, mtype, offset, late, timer in steps:
        if timer:
            referrer_side = referrer_side.expire(RESPOND_BY)
        truth = receiver_side  # never runs a timer
        seq = truth.next_seq(role) + offset
        message = msg(mtype, max(seq, 0), sent_at=RESPOND_BY + 10 if late else T0 + 60)
        effective = truth.state
        if effective in AWAITING and late:
            effective = State.EXPIRED
        key = (effective, role, mtype)

        outcomes = []
        for side in (referrer_side, receiver_side):
            try:
                outcomes.append(side.apply(message, role=role))
            except CasewayError as exc:
                outcomes.append(exc.code)
        a, b = outcomes
        if isinstance(a, ThreadState) and isinstance(b, ThreadState):
            assert a == b
            # Only a withdrawal or an erasure confirmation may skip ahead (SPEC §12.8).
            assert offset == 0 or (offset > 0 and mtype in MAY_SKIP_SEQUENCE)
            assert key in TRANSITIONS and a.state is TRANSITIONS[key]
            assert a.next_seq(role) == seq + 1
            referrer_side = receiver_side = a
        else:
            assert a == b, "one side accepted what the other refused"
            if offset > 0 and mtype not in MAY_SKIP_SEQUENCE:
                assert a is ErrorCode.SEQUENCE_GAP
            else:
                assert a is ErrorCode.INVALID_TRANSITION
                assert offset < 0 or key not in TRANSITIONS
    # The two sides differ at most by the referrer's local timer (a view, not a message).
    assert referrer_side in (receiver_side, receiver_side.expire(RESPOND_BY))


# --- scripted threads through envelopes, each side running the machine -----------------

DIRECTORY = {"ph-embassy-kl": ["embassy_consular"], "ph-shelter-manila": ["shelter"]}


class Node:
    """One side: its keys, its consent records and its copy of the thread state."""

    def __init__(self, participant: str, seed: int, role: Role):
        self.participant, self.role = participant, role
        self.signing = SigningKeyPair(bytes([seed]) * 32)
        self.encryption = EncryptionKeyPair(bytes([seed + 50]) * 32)
        self.consents = InMemoryConsentState()
        self.policy = ReferralPolicy(StaticSectors(DIRECTORY), self.consents)
        self.thread = ThreadState()
        self.counter = 0

    def decryption_key(self, key_id: str) -> EncryptionKeyPair | None:
        return self.encryption if key_id == self.encryption.key_id else None

    def seen(self, sender: str, message_id: str) -> bool:
        return False

    def send(self, peer: Node, mtype: str, now: int, **fields: Any) -> bytes:
        message = msg(mtype, self.thread.next_seq(self.role), sent_at=now, **fields)
        self.counter += 1
        data = seal_envelope(
            message, sender=Sender(self.participant, self.signing), recipient=peer.participant,
            recipient_public_key=peer.encryption.public_key,
            message_id=bytes([self.counter, self.role == REF]) + bytes(14), created=now,
            expires=now + 86400, ephemeral_secret=bytes([self.counter + 1]) * 32,
            policy=self.policy).data
        self._apply(message, self.role)  # after the policy let it out
        return data

    def receive(self, data: bytes, peer: Node, now: int) -> dict[str, Any]:
        keys = StaticKeys([PublicKey(peer.participant, peer.signing.public_key)])
        opened = open_envelope(data, me=self, keys=keys, replay=self, now=now,
                               policy=self.policy)
        self._apply(opened.message, peer.role)
        return opened.message

    def _apply(self, message: dict[str, Any], role: Role) -> None:
        self.thread = self.thread.apply(message, role=role)
        if message["type"] == "referral":
            self.consents.record_thread(THREAD, ConsentRecord.from_json(message["consent"]))


def exchange(sender: Node, receiver: Node, mtype: str, now: int, **fields: Any) -> None:
    receiver.receive(sender.send(receiver, mtype, now, **fields), sender, now + 5)
    assert sender.thread == receiver.thread, mtype


def test_scripted_referral_accept_updates_close() -> None:
    embassy = Node("ph-embassy-kl", 1, REF)
    shelter = Node("ph-shelter-manila", 2, RCV)
    t = T0
    exchange(embassy, shelter, "referral", t)
    exchange(shelter, embassy, "info_request", t + 100, categories=["health"])
    assert embassy.thread.state is State.INFO_REQUESTED
    exchange(embassy, shelter, "info_response", t + 200,
             sections={"health": {"conditions": "None new."}})
    exchange(shelter, embassy, "accept", t + 300, receiver_ref="SHM-1")
    exchange(shelter, embassy, "update", t + 400, kind="appointment", at=t + 86400)
    exchange(shelter, embassy, "update", t + 500, kind="service_delivered",
             service="safe_shelter")
    exchange(shelter, embassy, "close", t + 600, outcome="services_completed",
             services_delivered=["safe_shelter", "health"])
    assert embassy.thread.state is shelter.thread.state is State.CLOSED
    assert embassy.thread.next_seq(REF) == 3 and embassy.thread.next_seq(RCV) == 6
    # Nothing more from the receiver once closed; both sides refuse it.
    with pytest.raises(CasewayError) as err:
        shelter.send(embassy, "update", t + 700, kind="note", note="late")
    assert err.value.code is ErrorCode.INVALID_TRANSITION


def test_scripted_withdrawal_and_erasure_confirmation() -> None:
    embassy = Node("ph-embassy-kl", 1, REF)
    shelter = Node("ph-shelter-manila", 2, RCV)
    t = T0
    exchange(embassy, shelter, "referral", t)
    exchange(shelter, embassy, "accept", t + 100)
    # She withdraws: the embassy records it, then tells the shelter.
    embassy.consents.withdraw(CONSENT_ID)
    exchange(embassy, shelter, "consent_withdrawal", t + 200, withdrawn_at=t + 150)
    shelter.consents.withdraw(CONSENT_ID)
    assert shelter.thread.state is State.WITHDRAWN
    # Case data no longer flows: feedback is refused under a withdrawn consent.
    with pytest.raises(CasewayError):
        shelter.send(embassy, "update", t + 250, kind="note", note="x")
    kept = tombstone(shelter.thread, message_ids=["AAAAAAAAAAAAAAAAAAAAAA"],
                     first_received_at=t + 5, withdrawn_at=t + 205, erased_at=t + 290)
    exchange(shelter, embassy, "erasure_confirmation", t + 300, tombstone=kept)
    assert embassy.thread.state is shelter.thread.state is State.ERASED


def _messages_section() -> str:
    spec = (ROOT / "SPEC.md").read_text("utf-8")
    return spec.split("<!-- BEGIN messages (issue 4) -->")[1].split("<!-- END messages -->")[0]


def test_spec_reproduces_the_transition_table_line_by_line() -> None:
    rows = []
    for line in _messages_section().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in {s.value for s in State} \
                and cells[1] in ("referrer", "receiver"):
            rows.append((State(cells[0]), Role(cells[1]), cells[2], State(cells[3])))
    assert rows == [(s, r, t, n) for (s, r, t), n in TRANSITIONS.items()]
