"""Backlog: 100,000 envelopes queued for an offline peer, then the peer returns (issue 6).

    .venv/bin/python benchmarks/backlog.py [--n 100000] [--drain 10000]

The sender is a real node in this process (``open_node`` with its default rules: each
``service.send`` seals, runs ReferralPolicy and CaseLifecycle and commits durably). It
queues ``--n`` compact referrals (identity and needs sections, ~2.9 kB sealed) for a peer
whose address nobody listens on. Then the peer (a real node process, tests/crash_node.py)
starts at that address and the outbox drains, FIFO, one envelope in flight at a time
(the documented delivery order); ``--drain`` limits how many are drained (0: all).

Prints: enqueue cost (median ms per send) for the first and the last 1,000 sends and their
ratio (target ≤ 2×), this process's peak RSS (target ≤ 200 MB), the database size, and
the drain rate (envelopes/s with verified receipts).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from caseway.node.clock import SystemClock
from caseway.node.delivery import DeliveryAttempt
from caseway.node.logs import configure_logging

from crash_harness import RECEIVER_CONFIG, NodeProcess
from reliability_helpers import (
    EMBASSY,
    SHELTER,
    Directory,
    LiveNode,
    Peer,
    fixed_identity,
    referral,
)


def compact_referral(index: int, now: int) -> dict[str, Any]:
    message = referral(f"backlog-{index}", now=now)
    message["sections"] = {k: v for k, v in message["sections"].items()
                           if k in ("identity", "needs")}
    message.pop("attachments", None)
    return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(work: Path, port: int) -> NodeProcess:
    """The shelter as a real node process at ``port`` (where the outbox has been trying)."""
    receiver = NodeProcess("receiver", SHELTER, work / "shelter",
                           [Peer.of(fixed_identity(SHELTER)), Peer.of(fixed_identity(EMBASSY))],
                           config=RECEIVER_CONFIG)
    receiver.port = port
    receiver.start()
    return receiver


async def run(args: argparse.Namespace, work: Path) -> None:
    log = (work / "sender.log").open("w")
    configure_logging("json", stream=log)  # as in production: JSON lines to a file
    port = free_port()
    directory = Directory()
    directory.add_identity(fixed_identity(EMBASSY))
    directory.add_identity(fixed_identity(SHELTER), endpoint=f"http://127.0.0.1:{port}")
    embassy = LiveNode(fixed_identity(EMBASSY), work / "embassy", directory, SystemClock())
    await embassy.start()
    service = embassy.running.service
    costs: list[float] = []
    started = time.perf_counter()
    for i in range(args.n):
        now = int(time.time())
        message = compact_referral(i, now)
        t0 = time.perf_counter()
        await service.send(message, SHELTER, now)
        costs.append(time.perf_counter() - t0)
        if (i + 1) % 10000 == 0:
            print(f"  queued {i + 1:>7}  {(i + 1) / (time.perf_counter() - started):6.0f}/s  "
                  f"rss {peak_rss_mb():.0f} MB", flush=True)
    enqueue_wall = time.perf_counter() - started
    window = min(1000, args.n // 4)
    first = statistics.median(costs[:window]) * 1000
    last = statistics.median(costs[-window:]) * 1000
    depth = (await embassy.running.storage.outbox_depths())[SHELTER]
    db_mb = sum(p.stat().st_size for p in (work / "embassy").iterdir()) / 2**20
    rss_queued = peak_rss_mb()
    print(f"\nbacklog of {depth} envelopes for an offline peer ({db_mb:.0f} MB on disk)")
    print(f"  enqueue: {args.n / enqueue_wall:.0f}/s overall; median {first:.2f} ms per send "
          f"for the first {window}, {last:.2f} ms for the last {window}: ratio "
          f"{last / first:.2f} (target ≤ 2: {'met' if last <= 2 * first else 'MISSED'})")
    print(f"  peak RSS while queueing: {rss_queued:.0f} MB (target ≤ 200 MB: "
          f"{'met' if rss_queued <= 200 else 'MISSED'})")

    # A first attempt while the peer is down, so the drain also exercises the retry path.
    [attempt] = await embassy.running.outbox.deliver_due(int(time.time()))
    assert attempt.outcome == "retry", attempt
    receiver = start_receiver(work, port)
    try:
        target = depth if args.drain == 0 else min(args.drain, depth)
        delivered = 0
        done = asyncio.get_running_loop().create_future()

        def on_attempt(a: DeliveryAttempt) -> None:
            nonlocal delivered
            delivered += a.outcome == "delivered"
            if delivered >= target and not done.done():
                done.set_result(None)

        embassy.running.outbox.add_listener(on_attempt)
        item = await embassy.running.storage.outbox_head(SHELTER)
        assert item is not None
        t0 = time.perf_counter()
        drain = asyncio.ensure_future(embassy.running.outbox.deliver_destination(
            SHELTER, item.next_attempt_at))
        await asyncio.wait([done, drain], return_when=asyncio.FIRST_COMPLETED)
        elapsed = time.perf_counter() - t0
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
    finally:
        receiver.stop()
    print(f"  drain when the peer returns: {delivered} delivered with verified receipts in "
          f"{elapsed:.1f} s = {delivered / elapsed:.0f} envelopes/s (FIFO, one in flight); "
          f"a full {depth}-envelope backlog drains in ~{depth / (delivered / elapsed) / 60:.0f}"
          " min")
    print(f"  peak RSS overall: {peak_rss_mb():.0f} MB")
    await embassy.stop()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--drain", type=int, default=10_000,
                        help="envelopes to drain after the peer returns (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="caseway-backlog-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
