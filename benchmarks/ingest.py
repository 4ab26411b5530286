"""Ingest: K concurrent senders → one node over loopback HTTP, beside a floor (issue 6).

    .venv/bin/python benchmarks/ingest.py [--senders 50] [--n 6000] [--rounds 3]

The node is a real process (tests/crash_node.py: ``run_node`` with its default rules, i.e.
ReferralPolicy over the consent store and CaseLifecycle, durable commits with
``synchronous=FULL``, JSON request logs to a file). Its rate limits are raised so that
one benchmark client may send thousands per second; everything else is the default.
The load generator is this process (a separate process from the node, so they do not
share an event loop); it posts pre-sealed full referrals (the ~4.7 kB sample with its own
ids, ~7 kB sealed; sealing is the sender's cost and is done before timing) from 50
concurrent connections, as 5 sender participants.

The floor, measured in the same run with the same client, is a bare aiohttp handler in its
own process that parses the body with ``json.loads`` and durably inserts it into SQLite
through aiosqlite with the node's pragmas (WAL, synchronous=FULL, secure_delete), one
commit per request. Beside it, the measured per-envelope cost of what a node must add:
open (strict parse, Ed25519 verify, sealed-box open), message validation + consent, and
signing the receipt.

Prints, per round and as medians: envelopes/s, p50/p99 latency, the node's peak RSS
(VmHWM), and the ratios node ÷ floor and node ÷ (floor + open + validation + signing).
Targets on a 2-core machine: ≥ 1,000 referrals/s, p99 ≤ 100 ms at 50 senders, ≥ 50 % of
the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp

from caseway.protocol.envelope import EnvelopeLayerOnly, open_envelope, seal_envelope
from caseway.protocol.messages import validate_message
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy
from caseway.protocol.receipt import sign_receipt

from crash_harness import RECEIVER_CONFIG, NodeProcess
from reliability_helpers import (
    SHELTER,
    Directory,
    Peer,
    fixed_identity,
    referral,
    seed,
)

SENDERS = [f"ph-embassy-{i}" for i in range(5)]
FLOOR_SERVER = '''
import asyncio, json, sys
import aiosqlite
from aiohttp import web

async def main(db_path, port_file):
    db = await aiosqlite.connect(db_path, isolation_level=None)
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                   "PRAGMA secure_delete=ON", "PRAGMA busy_timeout=5000"):
        await db.execute(pragma)
    await db.execute("CREATE TABLE IF NOT EXISTS envelopes (id TEXT PRIMARY KEY, body BLOB)")
    lock = asyncio.Lock()

    async def handle(request):
        body = await request.read()
        doc = json.loads(body)
        async with lock:
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("INSERT INTO envelopes VALUES (?, ?)",
                             (doc["protected"][:64], body))
            await db.execute("COMMIT")
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/caseway/v1/envelopes", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    open(port_file, "w").write(str(runner.addresses[0][1]))
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


def seal_all(n: int, now: int, tag: str) -> list[bytes]:
    shelter = fixed_identity(SHELTER)
    out = []
    for i in range(n):
        sender = fixed_identity(SENDERS[i % len(SENDERS)])
        message = referral(f"{tag}-{i}", now=now)
        out.append(seal_envelope(
            message, sender=sender.sender, recipient=SHELTER,
            recipient_public_key=shelter.encryption.public_key,
            message_id=seed("mid", tag, i)[:16], created=now, expires=now + 86400,
            ephemeral_secret=seed("eph", tag, i), policy=EnvelopeLayerOnly()).data)
    return out


def start_node(home: Path, profile: Path | None = None) -> tuple[NodeProcess, int]:
    """The shelter as a real node process; every sender in SENDERS is in its directory."""
    peers = [Peer.of(fixed_identity(SHELTER))] + [
        Peer.of(fixed_identity(p), sectors=("embassy_consular",)) for p in SENDERS]
    config = {"ingress": {**RECEIVER_CONFIG["ingress"], "max_concurrency": 256}}
    node = NodeProcess(home.name, SHELTER, home, peers, config=config,
                       interpreter_args=() if profile is None
                       else ("-m", "cProfile", "-o", str(profile)))
    node.start()
    return node, node.port


def start_floor(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = work / "floor.port"
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(work / "floor.db"),
                             str(port_file)])
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("floor server did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(port: int, bodies: list[bytes], senders: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/caseway/v1/envelopes"
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            for body in queue:
                started = time.perf_counter()
                async with http.post(url, data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)
                statuses[r.status] = statuses.get(r.status, 0) + 1

        # Warm the connections (not timed).
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(senders)))
        wall = time.perf_counter() - began
    latencies.sort()
    return {"rate": len(bodies) / wall, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000, "statuses": statuses}


def per_envelope_costs(bodies: list[bytes], now: int) -> dict[str, float]:
    """Microseconds per envelope: open (envelope layer), validation + consent, receipt."""
    shelter = fixed_identity(SHELTER)
    keys = Directory([Peer.of(fixed_identity(p), sectors=("embassy_consular",))
                      for p in SENDERS] + [Peer.of(shelter)])
    policy = ReferralPolicy(keys, InMemoryConsentState())

    class Unseen:
        def seen(self, sender: str, message_id: str) -> bool:
            return False

    for o in [open_envelope(b, me=shelter, keys=keys, replay=Unseen(), now=now,
                            policy=EnvelopeLayerOnly()) for b in bodies[:20]]:
        policy.check_incoming(o.message, sender=o.header.sender, recipient=SHELTER, now=now)
    sample = bodies[20:]  # after the warm-up (validators are compiled on first use)
    t0 = time.perf_counter()
    opened = [open_envelope(b, me=shelter, keys=keys, replay=Unseen(), now=now,
                            policy=EnvelopeLayerOnly()) for b in sample]
    t1 = time.perf_counter()
    for o in opened:
        validate_message(o.message)
        policy.check_incoming(o.message, sender=o.header.sender, recipient=SHELTER, now=now)
    t2 = time.perf_counter()
    for o in opened:
        sign_receipt(signer=shelter.signing, recipient=SHELTER, envelope_digest=o.digest,
                     message_id=o.header.message_id, sender=o.header.sender, received_at=now)
    t3 = time.perf_counter()
    n = len(sample)
    return {"open": (t1 - t0) / n * 1e6, "validate": (t2 - t1) / n * 1e6,
            "sign": (t3 - t2) / n * 1e6}


def profile_node(args: argparse.Namespace) -> None:
    import pstats

    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix="caseway-ingest-") as tmp:
        work = Path(tmp)
        profile = work / "node.prof"
        node, port = start_node(work / "node", profile)
        try:
            result = asyncio.run(load(port, seal_all(args.n, now, "p"), args.senders))
        finally:
            node.stop()
        print(f"under cProfile: {result['rate']:.0f}/s")
        stats = pstats.Stats(str(profile))
        stats.sort_stats("cumulative").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="run the node under cProfile (one round) and print where it spends")
    args = parser.parse_args()
    if args.profile:
        profile_node(args)
        return
    now = int(time.time())
    rows = []
    with tempfile.TemporaryDirectory(prefix="caseway-ingest-") as tmp:
        work = Path(tmp)
        costs = per_envelope_costs(seal_all(520, now, "cost"), now)
        for round_ in range(args.rounds):
            bodies = seal_all(args.n, now, f"r{round_}")
            warm = seal_all(200, now, f"w{round_}")
            node, port = start_node(work / f"node{round_}")
            try:
                asyncio.run(load(port, warm, args.senders))
                result = asyncio.run(load(port, bodies, args.senders))
                assert node.proc is not None
                rss = peak_rss_mb(node.proc.pid)
            finally:
                node.stop()
            floor, floor_port = start_floor(work)
            try:
                asyncio.run(load(floor_port, warm, args.senders))
                floor_result = asyncio.run(load(floor_port, bodies, args.senders))
            finally:
                floor.terminate()
                floor.wait(timeout=60)
                for suffix in ("", "-wal", "-shm"):
                    (work / f"floor.db{suffix}").unlink(missing_ok=True)
                (work / "floor.port").unlink(missing_ok=True)
            assert result["statuses"] == {200: args.n}, result["statuses"]
            rows.append((result, floor_result, rss))
            print(f"round {round_ + 1}: node {result['rate']:.0f}/s p50 {result['p50']:.1f} ms "
                  f"p99 {result['p99']:.1f} ms rss {rss:.0f} MB | floor "
                  f"{floor_result['rate']:.0f}/s p50 {floor_result['p50']:.1f} ms "
                  f"p99 {floor_result['p99']:.1f} ms", flush=True)
    med = statistics.median
    rate = med(r[0]["rate"] for r in rows)
    floor_rate = med(r[1]["rate"] for r in rows)
    p50, p99 = med(r[0]["p50"] for r in rows), med(r[0]["p99"] for r in rows)
    rss = med(r[2] for r in rows)
    crypto_us = costs["open"] + costs["validate"] + costs["sign"]
    model = 1 / (1 / floor_rate + crypto_us / 1e6)
    print(f"\ningest, {args.senders} concurrent senders, {args.n} full referrals per round, "
          f"median of {args.rounds} (real ReferralPolicy + CaseLifecycle, durable commits)")
    print(f"  node        {rate:8.0f} envelopes/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
          f"peak RSS {rss:.0f} MB")
    print(f"  floor       {floor_rate:8.0f} envelopes/s   (aiohttp + json.loads + durable "
          "SQLite insert)")
    print(f"  per envelope: open {costs['open']:.0f} µs, validation+consent "
          f"{costs['validate']:.0f} µs, receipt signing {costs['sign']:.0f} µs")
    print(f"  floor + those costs (one core, serial): {model:.0f} envelopes/s")
    print(f"  ratio node ÷ floor = {rate / floor_rate:.2f}   node ÷ (floor + costs) = "
          f"{rate / model:.2f}")
    print(f"  targets: ≥ 1000/s {'met' if rate >= 1000 else 'MISSED'}; p99 ≤ 100 ms "
          f"{'met' if p99 <= 100 else 'MISSED'}; ≥ 50 % of floor "
          f"{'met' if rate >= floor_rate / 2 else 'MISSED'}")
    print(f"  machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
