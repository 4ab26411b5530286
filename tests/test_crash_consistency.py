"""Crash consistency (issue 6, item 1): kill -9 while 2,000 referrals stream between nodes.

Two real node processes (``tests/crash_node.py``, i.e. ``run_node`` with the real
ReferralPolicy and CaseLifecycle, a real NodeConfig, real HTTP on loopback). The sender
queues 2,000 full referrals (the ~4.7 KB sample with its own ids) and delivers them; the
test SIGKILLs one of the two processes at 20 moments and restarts it each time:

- ``receiver``: kill moments are 20 distinct random counts of accepted envelopes in
  [1, 2000), each followed by a random 0–20 ms delay, so kills land before, inside and
  after the receiver's commit and before or after its answer;
- ``sender``: 20 random points of its progress (queued + delivered, in [1, 4000)), so kills
  land while it queues referrals, between a receipt arriving and "delivered" being
  recorded, and while it waits for the next retry.

The RNG seed is printed; set ``CASEWAY_CRASH_SEED`` to replay a schedule. Nothing waits by
sleeping: the test polls the two databases for progress, every wait has a deadline.

At the end, with both processes stopped: every referral is stored exactly once at the
receiver (by case id, none lost, none duplicated), the sender holds for each one a
receipt that verifies against the receiver's signing key and names the digest of the
exact bytes it sent (and is byte-identical to the receipt the receiver stored), every
thread on both sides is in the one state its messages allow, and both audit chains verify
with exactly one entry per event.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from caseway.node import audit
from caseway.node.storage import SqliteStorage
from caseway.protocol import crypto
from caseway.protocol.errors import CasewayError
from caseway.protocol.receipt import verify_receipt

from crash_harness import RECEIVER_CONFIG, NodeProcess, scalar, wait_until
from reliability_helpers import (
    EMBASSY,
    SHELTER,
    Directory,
    Peer,
    case_id,
    fixed_identity,
)

COUNT = 2000
KILLS = 20
DEFAULT_SEED = 20260115
PROGRESS_DEADLINE = 120.0
# Retry every second, whatever the failure count (the schedule itself is tested with a
# fake clock in test_offline_peer.py); the receiver has no rate limits
# in the way (crash_harness.RECEIVER_CONFIG).
SENDER_CONFIG = {"delivery": {"backoff_base": 1.0, "backoff_multiplier": 1.0,
                              "backoff_cap": 1.0, "request_timeout": 10.0}}


def run_phase(tmp_path: Path, victim: str, rng_seed: int) -> dict[str, int]:
    rng = random.Random(rng_seed)
    embassy_id, shelter_id = fixed_identity(EMBASSY), fixed_identity(SHELTER)
    shelter_peer = Peer.of(shelter_id)
    receiver = NodeProcess("receiver", SHELTER, tmp_path / "shelter",
                           [Peer.of(embassy_id), shelter_peer], config=RECEIVER_CONFIG)
    sender = NodeProcess("sender", EMBASSY, tmp_path / "embassy",
                         [Peer.of(embassy_id), shelter_peer], config=SENDER_CONFIG,
                         feed={"recipient": SHELTER, "start": 0, "count": COUNT})
    received = f"SELECT COUNT(*) FROM envelopes_in WHERE sender = '{EMBASSY}'"
    queued = "SELECT COUNT(*) FROM outbox"
    delivered = "SELECT COUNT(*) FROM outbox WHERE state = 'delivered'"

    def receiver_progress() -> int:
        return scalar(receiver.database, received)

    def sender_progress() -> int:
        return scalar(sender.database, queued) + scalar(sender.database, delivered)

    started = time.monotonic()
    try:
        receiver.start()
        shelter_peer.endpoint = receiver.url  # the sender's directory entry for the shelter
        sender.start()
        target, progress, span = ((receiver, receiver_progress, COUNT) if victim == "receiver"
                                  else (sender, sender_progress, 2 * COUNT))
        moments = sorted(rng.sample(range(1, span), KILLS))
        for moment in moments:
            wait_until(lambda m=moment: progress() >= m, PROGRESS_DEADLINE,
                       f"progress {moment}/{span}", target)
            time.sleep(rng.uniform(0.0, 0.02))  # where in the request the kill lands
            target.kill()
            target.start()
        wait_until(lambda: scalar(sender.database, delivered) == COUNT, PROGRESS_DEADLINE,
                   "every referral delivered", sender)
    finally:
        sender.stop()
        receiver.stop()
    return {"seconds": round(time.monotonic() - started), "starts": target.starts,
            "kills": KILLS}


async def check_consistency(tmp_path: Path) -> tuple[dict[str, int], list[str]]:
    """Counts (lost, duplicated, receipted) and every inconsistency found."""
    problems: list[str] = []

    def expect(condition: bool, problem: str) -> None:
        if not condition and len(problems) < 20:
            problems.append(problem)

    keys = Directory([Peer.of(fixed_identity(SHELTER))])
    expected = {case_id(i) for i in range(COUNT)}
    sender = await SqliteStorage.open(tmp_path / "embassy" / "caseway.db")
    receiver = await SqliteStorage.open(tmp_path / "shelter" / "caseway.db")
    try:
        # Every envelope the receiver holds, whether or not the sender knows of it.
        per_case = Counter(case for case, _ in await _rows(
            tmp_path / "shelter" / "caseway.db", "SELECT case_id, message_id FROM envelopes_in"))
        lost = len(expected - set(per_case))
        duplicated = sum(n - 1 for n in per_case.values()) + len(set(per_case) - expected)

        outbox = await sender.outbox_items(limit=10 * COUNT)
        expect(Counter(row.case_id for row in outbox) == Counter(expected),
               "the sender did not queue each referral exactly once")
        receipted = 0
        for row in outbox:
            if row.state != "delivered" or row.receipt is None:
                expect(False, f"{row.message_id}: {row.state} ({row.last_error})")
                continue
            expect(row.digest == crypto.digest(row.envelope), f"{row.message_id}: digest")
            try:
                receipt = verify_receipt(row.receipt, keys=keys, expected_recipient=SHELTER,
                                         expected_digest=row.digest)
            except CasewayError as exc:
                expect(False, f"{row.message_id}: receipt does not verify ({exc.code})")
                continue
            theirs = await receiver.inbound(EMBASSY, row.message_id)
            ok = (receipt.accepted and receipt.message_id == row.message_id
                  and theirs is not None and theirs.digest == row.digest
                  and theirs.receipt == row.receipt)  # the one receipt, byte for byte
            expect(ok, f"{row.message_id}: receipt or stored envelope differs")
            receipted += ok

        # Threads: one per referral on each side, each in the state its messages give.
        for name, storage, role, out_next, in_next, direction in (
                ("sender", sender, "initiator", 2, 1, "out"),
                ("receiver", receiver, "responder", 1, 2, "in")):
            expect((await storage.row_counts())["threads"] == COUNT, f"{name}: thread count")
            for case in sorted(expected):
                contents = await storage.case_contents(case)
                if [c.direction for c in contents] != [direction]:
                    expect(not per_case or name == "sender" or case not in per_case,
                           f"{name} {case}: contents {[c.direction for c in contents]}")
                    continue
                thread = await storage.thread(contents[0].thread_id)
                expect(thread is not None and thread.case_id == case
                       and (thread.role, thread.state, thread.next_seq_out,
                            thread.next_seq_in) == (role, "sent", out_next, in_next)
                       and thread.machine is not None and thread.machine["state"] == "sent"
                       and thread.machine["next_seq"] == {"referrer": 2, "receiver": 1},
                       f"{name} {case}: impossible thread state {thread}")

        # Audit chains intact, one entry per event (no event recorded twice by a resend).
        for name, storage, wanted in (
                ("sender", sender, {audit.SEND: COUNT, audit.RECEIPT: COUNT}),
                ("receiver", receiver, {audit.RECEIVE: COUNT})):
            report = await audit.verify_entries(storage.audit_entries())
            expect(report.ok, f"{name}: {report.describe()}")
            events = Counter([e.event async for e in storage.audit_entries()])
            expect(events == wanted, f"{name}: audit events {dict(events)}")
    finally:
        await sender.close()
        await receiver.close()
    return {"lost": lost, "duplicated": duplicated, "receipted": receipted}, problems


async def _rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(database)
    try:
        return list(db.execute(sql))
    finally:
        db.close()


@pytest.mark.parametrize("victim", ["receiver", "sender"])
async def test_kill_9_loses_and_duplicates_nothing(
        victim: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng_seed = int(os.environ.get("CASEWAY_CRASH_SEED", DEFAULT_SEED)) + (victim == "sender")
    with capsys.disabled():
        print(f"\ncrash test: {victim} killed {KILLS} times, seed {rng_seed}", flush=True)
    stats = run_phase(tmp_path, victim, rng_seed)
    counts, problems = await check_consistency(tmp_path)
    result = {**counts, **stats}
    with capsys.disabled():
        print(f"crash test ({victim} killed): {COUNT} referrals, lost {result['lost']}, "
              f"duplicated {result['duplicated']}, receipted {result['receipted']}, "
              f"{result['starts']} starts, {result['seconds']} s", flush=True)
    assert (result["lost"], result["duplicated"], result["receipted"]) == (0, 0, COUNT)
    assert problems == []
