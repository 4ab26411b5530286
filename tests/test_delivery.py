"""The outbox over real HTTP: offline peers, restarts, expiry, backoff, FIFO, bad receipts.

Time is a shared fake clock and the outbox is driven one pass at a time with
``deliver_due(now)``, so schedules spanning days are checked exactly and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from caseway.keys.identity import Identity
from caseway.node import audit
from caseway.node.clock import FakeClock
from caseway.node.delivery import Backoff, DeliveryAttempt
from caseway.protocol.receipt import verify_receipt

from conftest import NOW, NodeHarness, StaticPeers

Pair = tuple[NodeHarness, NodeHarness]
DAY = 24 * 3600


def message(n: int, thread: str = "thread-0001") -> dict[str, Any]:
    return {"type": "update", "case_id": "case-0001", "thread_id": thread, "seq": n,
            "sent_at": NOW, "sections": {"incident": {"note": f"update {n}"}}}


async def received_seqs(node: NodeHarness) -> list[int]:
    rows = await node.running.service.read_case("case-0001", actor="test", now=NOW)
    return [row.message["seq"] for row in rows if row.direction == "in"]


async def test_receiver_down_then_back_delivers_in_order(pair: Pair, clock: FakeClock) -> None:
    embassy, shelter = pair
    await shelter.stop()
    for n in (1, 2, 3):
        await embassy.running.service.send(message(n), shelter.participant, NOW)
    [attempt] = await embassy.running.outbox.deliver_due(NOW)  # only the head is tried
    assert attempt.outcome == "retry" and attempt.error is not None
    assert attempt.error.startswith("network:")
    assert await embassy.running.storage.outbox_depths() == {shelter.participant: 3}
    await shelter.start()
    assert attempt.next_attempt_at is not None
    clock.set(attempt.next_attempt_at)
    attempts = await embassy.running.outbox.deliver_due(clock.now())
    assert [a.outcome for a in attempts] == ["delivered"] * 3
    assert await received_seqs(shelter) == [1, 2, 3]
    assert await embassy.running.storage.outbox_depths() == {}


async def test_a_restarted_sender_resumes_its_schedule_from_the_database(
        pair: Pair, clock: FakeClock) -> None:
    embassy, shelter = pair
    await shelter.stop()
    sent = await embassy.running.service.send(message(1), shelter.participant, NOW)
    [attempt] = await embassy.running.outbox.deliver_due(NOW)
    assert attempt.outcome == "retry" and attempt.next_attempt_at is not None
    await embassy.stop()
    await embassy.start()
    item = await embassy.running.storage.outbox_item(sent.outbox_id)
    assert item is not None and item.state == "queued" and item.attempts == 1
    assert item.next_attempt_at == attempt.next_attempt_at
    await shelter.start()
    clock.set(item.next_attempt_at - 1)
    assert await embassy.running.outbox.deliver_due(clock.now()) == []  # not due yet
    clock.set(item.next_attempt_at)
    [attempt] = await embassy.running.outbox.deliver_due(clock.now())
    assert attempt.outcome == "delivered"
    assert await received_seqs(shelter) == [1]


async def test_an_envelope_still_queued_at_expiry_is_dead_lettered(
        pair: Pair, clock: FakeClock) -> None:
    embassy, shelter = pair
    await shelter.stop()
    sent = await embassy.running.service.send(message(1), shelter.participant, NOW)
    await embassy.running.outbox.deliver_due(NOW)
    clock.set(sent.expires)
    [attempt] = await embassy.running.outbox.deliver_due(clock.now())
    assert (attempt.outcome, attempt.error) == ("expired", "expired")
    [dead] = await embassy.running.storage.outbox_items(state="dead")
    assert dead.id == sent.outbox_id and dead.last_error == "expired"
    events = [e.event async for e in embassy.running.storage.audit_entries()]
    assert events == [audit.SEND, audit.DEAD_LETTER]


async def test_three_days_offline_follow_the_documented_backoff(
        pair: Pair, clock: FakeClock) -> None:
    embassy, shelter = pair
    outbox = embassy.running.outbox
    assert outbox.backoff == Backoff(base=5.0, multiplier=2.0, cap=3600.0)
    await shelter.stop()
    for n in (1, 2):
        await embassy.running.service.send(message(n), shelter.participant, NOW)
    delays: list[int] = []
    while clock.now() < NOW + 3 * DAY:
        [attempt] = await outbox.deliver_due(clock.now())
        assert attempt.outcome == "retry" and attempt.next_attempt_at is not None
        delays.append(attempt.next_attempt_at - clock.now())
        clock.set(attempt.next_attempt_at)
    for failures, delay in enumerate(delays, start=1):
        low, high = outbox.backoff.bounds(failures)
        assert low <= delay <= high, (failures, delay)
    assert outbox.backoff.bounds(1) == (3, 5) and outbox.backoff.bounds(30) == (1800, 3600)
    # Capped at an hour with jitter: at least 72 and at most about 150 tries in 3 days.
    assert 72 <= len(delays) <= 160
    await shelter.start()
    attempts = await outbox.deliver_due(clock.now())
    assert [a.outcome for a in attempts] == ["delivered", "delivered"]
    assert await received_seqs(shelter) == [1, 2]


async def test_a_failing_peer_does_not_block_another(
        tmp_path: Path, pair: Pair, peers: StaticPeers, clock: FakeClock) -> None:
    embassy, shelter = pair
    home = tmp_path / "legal"
    home.mkdir()
    legal = NodeHarness("ph-legal-cebu", home, peers, clock)
    await legal.start()
    await legal.stop()  # known endpoint, nobody listening
    await embassy.running.service.send(message(1, "thread-legal"), legal.participant, NOW)
    await embassy.running.service.send(message(1), shelter.participant, NOW)
    attempts = await embassy.running.outbox.deliver_due(NOW)
    outcomes = {a.destination: a.outcome for a in attempts}
    assert outcomes == {legal.participant: "retry", shelter.participant: "delivered"}


async def test_a_final_rejection_is_dead_lettered_and_the_queue_moves_on(
        pair: Pair, peers: StaticPeers) -> None:
    embassy, shelter = pair
    # The shelter rotated its encryption key and we still hold the old one: not_for_me.
    peers.stale_encryption[shelter.participant] = Identity.generate("x").encryption.public_key
    stale = await embassy.running.service.send(message(1), shelter.participant, NOW)
    del peers.stale_encryption[shelter.participant]
    await embassy.running.service.send(message(2), shelter.participant, NOW)
    attempts = await embassy.running.outbox.deliver_due(NOW)
    assert [(a.outcome, a.error) for a in attempts] == [("rejected", "not_for_me"),
                                                         ("delivered", None)]
    item = await embassy.running.storage.outbox_item(stale.outbox_id)
    assert item is not None and item.state == "dead" and item.last_error == "not_for_me"
    assert item.receipt is not None
    rejection = verify_receipt(item.receipt, keys=peers, expected_recipient=shelter.participant,
                               expected_digest=stale.digest)
    assert rejection.error == "not_for_me"


async def test_a_rejection_with_a_code_unknown_to_us_is_final(
        pair: Pair, peers: StaticPeers) -> None:
    """SPEC §8: codes may be added within v1; a sender treats one it does not know as
    "do not retry" (and must not crash on it)."""
    from aiohttp import web

    from caseway.protocol import crypto
    from caseway.protocol.receipt import sign_receipt

    embassy, shelter = pair

    async def newer_shelter(request: web.Request) -> web.Response:
        body = await request.read()
        receipt = sign_receipt(signer=shelter.identity.signing, recipient=shelter.participant,
                               envelope_digest=crypto.digest(body), message_id=None,
                               sender=None, received_at=NOW, error=None)
        # Re-sign as a rejection with a code this node has never heard of.
        from caseway.protocol.encoding import b64decode, b64encode, dump_json

        protected = json.loads(b64decode(json.loads(receipt)["protected"]))
        protected.update(outcome="rejected", error="some_future_code")
        raw = dump_json(protected)
        signature = shelter.identity.signing.sign(crypto.RECEIPT_LABEL, raw)
        answer = dump_json({"protected": b64encode(raw), "signature": b64encode(signature)})
        return web.Response(status=403, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/caseway/v1/envelopes", newer_shelter)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        peers.endpoints[shelter.participant] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sent = await embassy.running.service.send(message(1), shelter.participant, NOW)
        [attempt] = await embassy.running.outbox.deliver_due(NOW)
    finally:
        await runner.cleanup()
    assert (attempt.outcome, attempt.error) == ("rejected", "some_future_code")
    item = await embassy.running.storage.outbox_item(sent.outbox_id)
    assert item is not None and item.state == "dead" and item.last_error == "some_future_code"


async def test_a_receipt_that_does_not_verify_is_no_receipt(
        pair: Pair, peers: StaticPeers) -> None:
    embassy, shelter = pair
    # The directory points the shelter at the embassy's own listener: whatever answers
    # there is not signed by the shelter, so the envelope stays queued.
    peers.endpoints[shelter.participant] = embassy.url
    sent = await embassy.running.service.send(message(1), shelter.participant, NOW)
    [attempt] = await embassy.running.outbox.deliver_due(NOW)
    assert attempt.outcome == "retry"
    assert attempt.error == "http_421:no_receipt:not_for_me"
    item = await embassy.running.storage.outbox_item(sent.outbox_id)
    assert item is not None and item.state == "queued" and item.receipt is None


async def test_resending_after_a_lost_delivered_mark_is_idempotent(
        pair: Pair) -> None:
    """A crash between receiving the receipt and marking "delivered" re-sends the envelope;
    the receiver answers with the receipt it already gave and stores nothing new."""
    embassy, shelter = pair
    sent = await embassy.running.service.send(message(1), shelter.participant, NOW)
    await embassy.running.outbox.deliver_due(NOW)
    item = await embassy.running.storage.outbox_item(sent.outbox_id)
    assert item is not None and item.receipt is not None
    counts = await shelter.running.storage.row_counts()
    async with aiohttp.ClientSession() as http, http.post(
            shelter.envelopes_url, data=item.envelope,
            headers={"Content-Type": "application/json"}) as response:
        assert response.status == 200 and await response.read() == item.receipt
    assert await shelter.running.storage.row_counts() == counts


@pytest.fixture
async def background_pair(tmp_path: Path, peers: StaticPeers,
                          clock: FakeClock) -> AsyncIterator[Pair]:
    homes = [tmp_path / "embassy", tmp_path / "shelter"]
    for home in homes:
        home.mkdir()
    embassy = NodeHarness("ph-embassy-kl", homes[0], peers, clock, background_delivery=True)
    shelter = NodeHarness("ph-shelter-manila", homes[1], peers, clock)
    await shelter.start()
    await embassy.start()
    try:
        yield embassy, shelter
    finally:
        await embassy.stop()
        await shelter.stop()


async def test_the_background_loop_delivers_what_is_queued(background_pair: Pair) -> None:
    embassy, shelter = background_pair
    done: asyncio.Future[DeliveryAttempt] = asyncio.get_running_loop().create_future()

    def on_attempt(attempt: DeliveryAttempt) -> None:
        if not done.done():
            done.set_result(attempt)

    embassy.running.outbox.add_listener(on_attempt)
    await embassy.running.service.send(message(1), shelter.participant, NOW)
    attempt = await asyncio.wait_for(done, timeout=30)  # a guard against hanging, not a sleep
    assert attempt.outcome == "delivered"
    assert await received_seqs(shelter) == [1]


async def test_the_background_loops_resume_a_queue_at_start(
        tmp_path: Path, peers: StaticPeers, clock: FakeClock) -> None:
    homes = [tmp_path / "embassy", tmp_path / "shelter"]
    for home in homes:
        home.mkdir()
    embassy = NodeHarness("ph-embassy-kl", homes[0], peers, clock)
    shelter = NodeHarness("ph-shelter-manila", homes[1], peers, clock)
    await shelter.start()
    await embassy.start()
    await embassy.running.service.send(message(1), shelter.participant, NOW)  # not delivered
    await embassy.stop()
    embassy.background_delivery = True
    await embassy.start()
    done: asyncio.Future[DeliveryAttempt] = asyncio.get_running_loop().create_future()
    embassy.running.outbox.add_listener(lambda a: done.done() or done.set_result(a))
    try:
        # The loop may already have run before the listener was added: check the DB too.
        item = (await embassy.running.storage.outbox_items())[0]
        if item.state == "queued":
            assert (await asyncio.wait_for(done, timeout=30)).outcome == "delivered"
        assert await received_seqs(shelter) == [1]
    finally:
        await embassy.stop()
        await shelter.stop()


def test_backoff_numbers() -> None:
    backoff = Backoff()
    assert [backoff.bounds(n) for n in (1, 2, 3, 4)] == [(3, 5), (5, 10), (10, 20), (20, 40)]
    assert backoff.delay(1, 0.0) == 3 and backoff.delay(1, 0.999) == 5
    assert backoff.delay(50, 0.5) == 2700  # capped: 3600 * 0.75
    assert backoff.delay(1, 0.0, retry_after=120) == 120
    assert backoff.delay(1, 0.0, retry_after=10**9) == 3600  # a peer cannot park us forever
