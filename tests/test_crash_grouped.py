"""Crash consistency with concurrent deliveries: kill -9 in the middle of group commits.

The receiver commits the envelopes that arrive together in one transaction (SPEC.md
§13.3, "Group commit"), and answers each only after that transaction has committed. The sender
node of ``test_crash_consistency.py`` delivers one envelope at a time, so a kill there
rarely lands inside a group. Here the test itself plays many senders: it posts
pre-sealed referrals with 32 requests in flight to a real receiver process, retries each
until it holds a receipt that verifies, and SIGKILLs the receiver at 12 random moments.

At the end every referral is stored exactly once, every receipt the test holds verifies
against the receiver's key, names the digest of the bytes sent and is byte-identical to
the receipt the receiver stored, and the receiver's audit chain verifies with one entry
per envelope. No waiting by sleeping: progress is polled with deadlines.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from caseway.node import audit
from caseway.node.storage import SqliteStorage
from caseway.protocol.envelope import EnvelopeLayerOnly, seal_envelope
from caseway.protocol.errors import CasewayError
from caseway.protocol.receipt import Receipt, verify_receipt

from crash_harness import RECEIVER_CONFIG, NodeProcess, scalar, wait_until
from reliability_helpers import EMBASSY, SHELTER, Directory, Peer, fixed_identity, referral

COUNT = 800
IN_FLIGHT = 32
KILLS = 12
DEFAULT_SEED = 20260117
DEADLINE = 180.0


def seal_all(now: int) -> list[tuple[bytes, bytes]]:
    """COUNT referrals from the embassy to the shelter: (envelope bytes, digest)."""
    embassy, shelter = fixed_identity(EMBASSY), fixed_identity(SHELTER)
    sealed = []
    for index in range(COUNT):
        envelope = seal_envelope(
            referral(f"grouped-{index}", now=now), sender=embassy.sender, recipient=SHELTER,
            recipient_public_key=shelter.encryption.public_key,
            message_id=os.urandom(16), created=now, expires=now + 86400,
            ephemeral_secret=os.urandom(32), policy=EnvelopeLayerOnly())
        sealed.append((envelope.data, envelope.digest))
    return sealed


async def deliver(session: aiohttp.ClientSession, url: str, data: bytes, digest: bytes,
                  keys: Directory, gate: asyncio.Semaphore, stats: Counter[str]) -> Receipt:
    """Post until an accepted receipt verifies; every other outcome is retried."""
    while True:
        async with gate:
            stats["in_flight"] += 1
            stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            try:
                async with session.post(url, data=data,
                                        headers={"Content-Type": "application/json"}) as r:
                    body = await r.read()
            except (TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                stats["in_flight"] -= 1
        try:
            receipt = verify_receipt(body, keys=keys, expected_recipient=SHELTER,
                                     expected_digest=digest)
        except CasewayError:
            receipt = None
        if receipt is not None and receipt.accepted:
            return receipt
        stats["retries"] += 1
        await asyncio.sleep(0.1)  # client retry interval while the receiver restarts


async def test_kill_9_during_group_commits_loses_and_duplicates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(int(os.environ.get("CASEWAY_CRASH_SEED", DEFAULT_SEED)))
    receiver = NodeProcess("receiver", SHELTER, tmp_path / "shelter",
                           [Peer.of(fixed_identity(EMBASSY)), Peer.of(fixed_identity(SHELTER))],
                           config=RECEIVER_CONFIG)
    keys = Directory([Peer.of(fixed_identity(SHELTER))])
    sealed = seal_all(int(time.time()))
    received = f"SELECT COUNT(*) FROM envelopes_in WHERE sender = '{EMBASSY}'"
    stats: Counter[str] = Counter()

    async def killer() -> None:
        for moment in sorted(rng.sample(range(1, COUNT), KILLS)):
            await asyncio.to_thread(
                wait_until, lambda m=moment: scalar(receiver.database, received) >= m,
                DEADLINE, f"{moment} envelopes stored", receiver)
            await asyncio.sleep(rng.uniform(0.0, 0.02))  # where in the group the kill lands
            await asyncio.to_thread(receiver.kill)
            await asyncio.to_thread(receiver.start)

    await asyncio.to_thread(receiver.start)
    url = receiver.url + "/caseway/v1/envelopes"
    try:
        gate = asyncio.Semaphore(IN_FLIGHT)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            kills = asyncio.create_task(killer())
            receipts = await asyncio.wait_for(asyncio.gather(
                *(deliver(session, url, data, digest, keys, gate, stats)
                  for data, digest in sealed)), DEADLINE)
            await asyncio.wait_for(kills, DEADLINE)
    finally:
        await asyncio.to_thread(receiver.stop)

    storage = await SqliteStorage.open(receiver.database, read_only=True)
    try:
        stored = {}
        for receipt, (_, digest) in zip(receipts, sealed, strict=True):
            assert receipt.message_id is not None
            theirs = await storage.inbound(EMBASSY, receipt.message_id)
            assert theirs is not None and theirs.digest == digest
            assert theirs.receipt == receipt.data  # the one receipt, byte for byte
            stored[receipt.message_id] = theirs
        counts = await storage.row_counts()
        report = await audit.verify_entries(storage.audit_entries())
        events = Counter([e.event async for e in storage.audit_entries()])
    finally:
        await storage.close()
    lost = COUNT - len(stored)
    duplicated = counts["envelopes_in"] - COUNT
    with capsys.disabled():  # the counts belong in the CI log
        print(f"\ngrouped crash test: {COUNT} referrals, {KILLS} kills, lost {lost}, "
              f"duplicated {duplicated}, receipted {len(receipts)}, up to "
              f"{stats['max_in_flight']} in flight, {stats['retries']} retries, "
              f"{receiver.starts} starts")
    assert (lost, duplicated) == (0, 0)
    assert counts["threads"] == COUNT
    assert report.ok, report.describe()
    assert events[audit.RECEIVE] == COUNT
    assert stats["max_in_flight"] > 1  # deliveries really were concurrent
