"""A receiver unreachable for three simulated days (issue 6, item 2).

Extends tests/test_delivery.py (which checks the schedule for one queue head and a single
expiry) with a realistic outage, driven entirely by a fake clock and
``Outbox.deliver_due(now)`` at the times the outbox itself asks to be woken
(``outbox_next_wake``), as the background loop would:

- day 0–1: nobody listens at the receiver's address (connection refused);
- day 1–2: a proxy in front of it answers ``503`` with ``Retry-After: 100000`` and no
  receipt (honoured as a minimum, capped at the backoff cap);
- day 2–3: the proxy answers ``200`` with a receipt signed by the wrong key (no receipt);
- the sender restarts at day 1.5 (the schedule resumes from its database);
- referrals have a 2.5-day lifetime: those queued at day 0 expire during the outage,
  those queued at day 1 survive it.

Asserted: every retry delay lies within ``Backoff.bounds(n)`` for the envelope's n-th
failure (raised to the capped Retry-After where one was sent); only the queue head is ever
attempted; the persisted attempt count survives the restart; the expired referrals are
dead-lettered in order and reported (outbox state and reason, the attempt list, the audit
log, the metrics); when the receiver returns, the rest arrive in the order they were
queued, each with a verified receipt. Real referrals, real policy, real HTTP.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from caseway.node import audit
from caseway.node.clock import FakeClock
from caseway.node.config import DeliverySettings
from caseway.node.delivery import Backoff, DeliveryAttempt
from caseway.protocol.receipt import sign_receipt, verify_receipt

from reliability_helpers import (
    DAY,
    EMBASSY,
    NOW,
    SHELTER,
    Directory,
    LiveNode,
    case_id,
    fixed_identity,
    referral,
)

LIFETIME = 2 * DAY + DAY // 2  # day-0 referrals expire in the outage, day-1 ones after it
EARLY, LATE = range(0, 4), range(4, 8)  # referral numbers queued at day 0 and at day 1


class Proxy:
    """A misbehaving reverse proxy in front of the receiver's address."""

    def __init__(self) -> None:
        self.mode = "503"
        self.hits = 0
        self.forger = fixed_identity(SHELTER, "forged")
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.mode == "503":
            return web.Response(status=503, text="<html>upstream down</html>",
                                headers={"Retry-After": "100000"})
        from caseway.protocol import crypto

        forged = sign_receipt(signer=self.forger.signing, recipient=SHELTER,
                              envelope_digest=crypto.digest(body), message_id=None,
                              sender=None, received_at=NOW)
        return web.Response(status=200, body=forged, content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/caseway/v1/envelopes", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    p = Proxy()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_three_days_offline_backoff_expiry_restart_and_fifo_return(
        tmp_path: Path, proxy: Proxy) -> None:
    clock = FakeClock(NOW)
    directory = Directory()
    embassy_id, shelter_id = fixed_identity(EMBASSY), fixed_identity(SHELTER)
    directory.add_identity(embassy_id)
    directory.add_identity(shelter_id)
    embassy = LiveNode(embassy_id, tmp_path / "embassy", directory, clock,
                       delivery=DeliverySettings(envelope_lifetime=LIFETIME,
                                                 request_timeout=10.0))
    shelter = LiveNode(shelter_id, tmp_path / "shelter", directory, clock)
    await shelter.start()
    await shelter.stop()  # the directory knows its address; nobody listens there
    await embassy.start()
    outbox = embassy.running.outbox
    assert outbox.backoff == Backoff(5.0, 2.0, 3600.0)  # the documented defaults

    items: dict[int, str] = {}  # outbox id -> case id, in queueing order
    for n in EARLY:
        sent = await embassy.running.service.send(referral(n, now=clock.now()), SHELTER,
                                                  clock.now())
        items[sent.outbox_id] = case_id(n)
    failures: Counter[int] = Counter()
    attempts: list[DeliveryAttempt] = []
    retry_after_phase: set[int] = set()  # indexes of attempts answered with Retry-After
    restarted = queued_late = False

    while clock.now() < NOW + 3 * DAY:
        if not queued_late and clock.now() >= NOW + DAY:
            for n in LATE:
                sent = await embassy.running.service.send(referral(n, now=clock.now()),
                                                          SHELTER, clock.now())
                items[sent.outbox_id] = case_id(n)
            queued_late = True
            directory.peers[SHELTER].endpoint = proxy.url  # day 1: the proxy appears
        if clock.now() >= NOW + 2 * DAY:
            proxy.mode = "forged"
        if not restarted and clock.now() >= NOW + DAY + DAY // 2:
            await embassy.stop()
            await embassy.start()
            outbox = embassy.running.outbox
            restarted = True
            for item_id, count in failures.items():  # the schedule survived the restart
                item = await embassy.running.storage.outbox_item(item_id)
                assert item is not None and item.attempts == count
        batch = await outbox.deliver_due(clock.now())
        assert batch, "woken with nothing due"
        for attempt in batch:
            if attempt.outcome == "retry":
                failures[attempt.item_id] += 1
                if proxy.mode == "503" and queued_late:
                    retry_after_phase.add(len(attempts))
            attempts.append(attempt)
        wake = await embassy.running.storage.outbox_next_wake(SHELTER)
        assert wake is not None and wake > clock.now()
        clock.set(min(wake, NOW + 3 * DAY))

    # Every retry on the documented schedule.
    per_item: Counter[int] = Counter()
    for index, attempt in enumerate(attempts):
        if attempt.outcome != "retry":
            continue
        per_item[attempt.item_id] += 1
        low, high = outbox.backoff.bounds(per_item[attempt.item_id])
        if index in retry_after_phase:  # Retry-After 100000, capped at the cap (3600)
            low, high = max(low, 3600), max(high, 3600)
        assert attempt.next_attempt_at is not None
        delay = attempt.next_attempt_at - attempt.at
        assert low <= delay <= high, (attempt, per_item[attempt.item_id], delay)
    errors = {a.error.split(":")[0] for a in attempts if a.outcome == "retry" and a.error}
    assert errors == {"network", "http_503", "http_200"}
    assert proxy.hits > 0 and restarted

    # Only the queue head is ever attempted: retries follow queueing order.
    order = list(items)
    tried = [a.item_id for a in attempts]
    assert tried == sorted(tried, key=order.index)

    # The early referrals expired during the outage: dead-lettered, in order, and reported.
    expired = [a for a in attempts if a.outcome == "expired"]
    assert [items[a.item_id] for a in expired] == [case_id(n) for n in EARLY]
    assert all(a.at == NOW + LIFETIME for a in expired)
    dead = await embassy.running.storage.outbox_items(state="dead")
    assert [(items[d.id], d.last_error, d.receipt) for d in dead] == \
        [(case_id(n), "expired", None) for n in EARLY]
    letters = [e async for e in embassy.running.storage.audit_entries()
               if e.event == audit.DEAD_LETTER]
    assert [(e.detail["reason"]) for e in letters] == ["expired"] * len(EARLY)
    metrics = embassy.running.metrics.render(await embassy.running.storage.outbox_depths())
    assert f'caseway_messages_out_total{{outcome="expired"}} {len(EARLY)}' in metrics
    assert f'caseway_outbox_depth{{destination="{SHELTER}"}} {len(LATE)}' in metrics

    # Day 3: the receiver is back at its own address. Delivery resumes in order.
    await shelter.start()
    wake = await embassy.running.storage.outbox_next_wake(SHELTER)
    assert wake is not None and wake - clock.now() <= 3600  # never parked beyond the cap
    clock.set(wake)
    final = await outbox.deliver_due(clock.now())
    assert [(items[a.item_id], a.outcome) for a in final] == \
        [(case_id(n), "delivered") for n in LATE]
    by_rowid = await _received_order(shelter)
    assert by_rowid == [case_id(n) for n in LATE]
    for item in await embassy.running.storage.outbox_items(state="delivered"):
        assert item.receipt is not None
        verify_receipt(item.receipt, keys=directory, expected_recipient=SHELTER,
                       expected_digest=item.digest)
    assert await embassy.running.storage.outbox_depths() == {}
    await embassy.stop()
    await shelter.stop()


async def _received_order(node: LiveNode) -> list[str]:
    import sqlite3

    db = sqlite3.connect(f"file:{node.database}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT case_id FROM envelopes_in ORDER BY rowid")]
    finally:
        db.close()


async def test_a_late_wakeup_makes_one_attempt_not_a_burst(tmp_path: Path) -> None:
    """A node that wakes long after several retries fell due (a suspended laptop, a
    stalled loop) makes one attempt for the head, on the schedule of its next failure."""
    clock = FakeClock(NOW)
    directory = Directory()
    embassy_id, shelter_id = fixed_identity(EMBASSY), fixed_identity(SHELTER)
    directory.add_identity(embassy_id)
    directory.add_identity(shelter_id, endpoint="http://127.0.0.1:9")  # discard port
    embassy = LiveNode(embassy_id, tmp_path / "embassy", directory, clock)
    await embassy.start()
    try:
        for n in range(3):
            await embassy.running.service.send(referral(n, now=NOW), SHELTER, NOW)
        [first] = await embassy.running.outbox.deliver_due(NOW)
        clock.advance(10 * 3600)
        batch = await embassy.running.outbox.deliver_due(clock.now())
        assert [(a.item_id, a.outcome) for a in batch] == [(first.item_id, "retry")]
        assert batch[0].next_attempt_at is not None
        low, high = embassy.running.outbox.backoff.bounds(2)
        assert low <= batch[0].next_attempt_at - clock.now() <= high
    finally:
        await embassy.stop()


def test_bounds_cover_every_jitter_value() -> None:
    """``Backoff.bounds`` is what ``delay`` can return, for u at both ends and between."""
    backoff = Backoff()
    by_failures: defaultdict[int, set[int]] = defaultdict(set)
    for failures in range(1, 40):
        for step in range(0, 1000, 7):
            by_failures[failures].add(backoff.delay(failures, step / 1000))
        low, high = backoff.bounds(failures)
        assert min(by_failures[failures]) == low and max(by_failures[failures]) <= high
        assert backoff.delay(failures, 1 - 2**-53) == high
