"""Consent withdrawal over the API: the cascade, erasure at the shelter, signed confirmation."""

from __future__ import annotations

import sqlite3
from typing import Any

from caseway.protocol import crypto
from caseway.protocol.receipt import verify_receipt

from conftest import EMBASSY, SHELTER, ApiPair, referral_request


def rows(database: Any, query: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return list(db.execute(query, params))
    finally:
        db.close()


async def test_withdrawal_erases_at_the_shelter_with_a_signed_confirmation(
        api_pair: ApiPair) -> None:
    pair = api_pair
    sent = (await pair.embassy.call("POST", "/api/v1/cases", referral_request())).body
    await pair.deliver()
    thread, case, consent = sent["thread_id"], sent["case_id"], sent["consent_id"]
    base = f"/api/v1/threads/{thread}"
    assert (await pair.shelter.call("POST", f"{base}/accept", {})).status == 201
    await pair.deliver()
    # An update is queued at the shelter but not delivered when the withdrawal arrives:
    # it must never leave (it would carry data after withdrawal).
    update = (await pair.shelter.call("POST", f"{base}/updates",
                                      {"kind": "note", "note": "first session done"})).body

    # Only a supervisor records a withdrawal.
    denied = await pair.embassy.call("POST", f"/api/v1/consents/{consent}/withdrawal", {})
    assert denied.status == 403
    reply = await pair.embassy.call("POST", f"/api/v1/consents/{consent}/withdrawal", {},
                                    role="supervisor")
    assert reply.status == 201, reply.body
    status = reply.body
    assert status["withdrawn"] is True
    [recipient] = status["recipients"]
    assert (recipient["participant"], recipient["status"]) == (SHELTER, "pending")
    # The referrer erased its own copy too and keeps a tombstone.
    assert [t["case_id"] for t in status["local"]] == [case]
    again = await pair.embassy.call("POST", f"/api/v1/consents/{consent}/withdrawal", {},
                                    role="supervisor")
    assert again.status == 409

    # Deliver the embassy's withdrawal only: the shelter erases and queues its confirmation.
    shelter, embassy = pair.shelter.harness.running, pair.embassy.harness.running
    [attempt] = await embassy.outbox.deliver_due(pair.clock.now())
    assert attempt.outcome == "delivered"
    # Only the confirmation written after erasure remains: it holds the tombstone (ids).
    kinds = {i.message_id: i.kind for i in await shelter.storage.case_outbox(case)}
    assert [kinds.get(c.message_id) for c in await shelter.storage.case_contents(case)] == \
        ["erasure_confirmation"]
    tombstone = await shelter.storage.tombstone(case)
    assert tombstone is not None and tombstone.reason == "consent_withdrawn"
    assert rows(pair.shelter.harness.database,
                "SELECT COUNT(*) FROM envelopes_in WHERE case_id = ? AND envelope IS NOT NULL",
                case) == [(0,)]
    cancelled = await shelter.storage.outbox_item(update["outbox_id"])
    assert cancelled is not None and cancelled.state == "dead"
    assert cancelled.last_error == "consent_withdrawn" and cancelled.envelope == b""
    # The consent record went with the referral's contents; its ids remain.
    assert rows(pair.shelter.harness.database,
                "SELECT c.consent_id, k.id FROM consents c LEFT JOIN case_contents k "
                "ON k.message_id = c.message_id WHERE c.thread_id = ?", thread) == \
        [(consent, None)]

    # The confirmation goes back (past the cancelled update's sequence number).
    [attempt] = await shelter.outbox.deliver_due(pair.clock.now())
    assert attempt.outcome == "delivered"
    status = (await pair.embassy.call("GET", f"/api/v1/consents/{consent}/erasure")).body
    [recipient] = status["recipients"]
    assert recipient["status"] == "confirmed"
    assert recipient["tombstone"]["case_id"] == case
    assert recipient["tombstone"]["thread_id"] == thread
    assert set(recipient["tombstone"]) == {"case_id", "thread_id", "consent_id", "message_ids",
                                           "first_received_at", "withdrawn_at", "erased_at"}
    # Proof of erasure: the shelter's signed envelope as received and our receipt for it.
    [(envelope, receipt)] = rows(
        pair.embassy.harness.database,
        "SELECT envelope, receipt FROM envelopes_in WHERE message_id = ?",
        recipient["confirmation_message_id"])
    assert envelope is not None
    proof = verify_receipt(receipt, keys=pair.peers, expected_recipient=EMBASSY,
                           expected_digest=crypto.digest(envelope))
    assert proof.accepted and proof.sender == SHELTER
    # ...and the shelter holds our receipt for its confirmation, verified on arrival.
    item = await shelter.storage.outbox_item(attempt.item_id)
    assert item is not None and item.receipt is not None
    verify_receipt(item.receipt, keys=pair.peers, expected_recipient=EMBASSY,
                   expected_digest=item.digest)
    assert (await pair.embassy.call("GET", f"/api/v1/consents/{consent}/erasure",
                                    role="auditor")).status == 200

    # Both sides end in `erased`; the shelter's timeline shows ids and states, no content.
    for node in (pair.embassy, pair.shelter):
        timeline = (await node.call("GET", f"/api/v1/cases/{case}")).body
        assert timeline["threads"][0]["state"] == "erased"
        assert timeline["tombstone"] is not None
    shelter_view = (await pair.shelter.call("GET", f"/api/v1/cases/{case}")).body
    assert all(m["message"] is None for m in shelter_view["messages"]
               if m["type"] != "erasure_confirmation")
    upstream = (await pair.shelter.call("GET", f"/api/v1/consents/{consent}/erasure")).body
    assert upstream["upstream"][0]["confirmation_delivery"] == "delivered"

    # Nothing under the withdrawn consent passes any more, on either side.
    refused = await pair.shelter.call("POST", f"{base}/updates", {"kind": "note",
                                                                  "note": "x"})
    assert refused.status in (403, 409)
    assert shelter.service.consents.is_withdrawn(consent)


async def test_a_restarted_shelter_still_knows_the_withdrawal(api_pair: ApiPair) -> None:
    pair = api_pair
    sent = (await pair.embassy.call("POST", "/api/v1/cases", referral_request())).body
    await pair.deliver()
    assert (await pair.embassy.call("POST", f"/api/v1/consents/{sent['consent_id']}/withdrawal",
                                    {}, role="supervisor")).status == 201
    await pair.deliver()
    await pair.shelter.harness.stop()
    await pair.shelter.harness.start()
    consents = pair.shelter.harness.running.service.consents
    assert consents.is_withdrawn(sent["consent_id"])
    assert consents.consent_for_thread(sent["thread_id"]) is not None
    status = (await pair.embassy.call(
        "GET", f"/api/v1/consents/{sent['consent_id']}/erasure")).body
    assert status["recipients"][0]["status"] == "confirmed"


async def test_a_referral_still_queued_is_cancelled_not_withdrawn(api_pair: ApiPair) -> None:
    pair = api_pair
    sent = (await pair.embassy.call("POST", "/api/v1/cases", referral_request())).body
    reply = await pair.embassy.call("POST", f"/api/v1/consents/{sent['consent_id']}/withdrawal",
                                    {}, role="supervisor")
    assert reply.status == 201
    assert reply.body["recipients"][0]["status"] == "not_sent"
    assert await pair.deliver() == 0  # nothing leaves: no data, and nobody to tell
    assert await pair.shelter.harness.running.storage.inbound_items() == []
