"""Large envelope: peak memory to seal, open and store a referral of the maximum size.

    .venv/bin/python benchmarks/large_envelope.py [--rounds 3]

The largest valid referral: the full sample with inline attachments (up to 48 KiB each,
at most 8) filling the inner plaintext to just under MAX_PLAINTEXT_BYTES (512 KiB), which
is what bounds an envelope: sealed and base64url-encoded twice, it comes to ~0.9 MiB, just
under MAX_ENVELOPE_BYTES (1 MiB). Measured in a fresh subprocess per round: two in-process
nodes with their default rules; the sender's ``service.send`` seals and stores it in its
outbox, the receiver's ``service.receive`` opens, validates and stores it.

Peak RSS is the process's high-water mark (VmHWM) above its resident size just before
each operation (the high-water mark is reset through /proc/self/clear_refs, after a
warm-up round with a small referral, so interpreter, imports and compiled validators are
not counted), for the sender's seal + store and the receiver's open + validate + store
separately (a node does one or the other per request). Target: peak ≤ 6 × the envelope.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def build_max_referral(now: int) -> dict[str, Any]:
    from caseway.protocol import crypto
    from caseway.protocol.encoding import b64encode, dump_json
    from caseway.protocol.envelope import MAX_PLAINTEXT_BYTES
    from caseway.protocol.messages import MAX_INLINE_BYTES

    from reliability_helpers import referral

    message = referral("large", now=now)

    def attachment(i: int, size: int) -> dict[str, Any]:
        content = crypto.digest(b"%d" % i) * (size // 32) + b"x" * (size % 32)
        return {"digest": b64encode(crypto.digest(content)), "size": len(content),
                "media_type": "application/pdf", "category": "legal",
                "description": f"scan {i}", "inline": b64encode(content)}

    message["attachments"] = [attachment(i, MAX_INLINE_BYTES) for i in range(7)]
    overhead = 200  # the inner wrapper: v, id, sender, recipient
    room = MAX_PLAINTEXT_BYTES - overhead - len(dump_json(message))
    last = max(1, (room - 250) * 3 // 4)
    message["attachments"].append(attachment(7, min(last, MAX_INLINE_BYTES)))
    return message


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


async def child() -> dict[str, Any]:
    from caseway.node.clock import SystemClock
    from caseway.node.logs import configure_logging

    from reliability_helpers import (
        EMBASSY,
        SHELTER,
        Directory,
        LiveNode,
        fixed_identity,
        referral,
    )

    with tempfile.TemporaryDirectory(prefix="caseway-large-") as tmp:
        configure_logging("json", stream=(Path(tmp) / "log").open("w"))
        directory = Directory()
        directory.add_identity(fixed_identity(EMBASSY))
        directory.add_identity(fixed_identity(SHELTER), endpoint="http://127.0.0.1:9")
        sender = LiveNode(fixed_identity(EMBASSY), Path(tmp) / "embassy", directory,
                          SystemClock())
        receiver = LiveNode(fixed_identity(SHELTER), Path(tmp) / "shelter", directory,
                            SystemClock())
        await sender.start()
        await receiver.start()
        now = int(time.time())

        peaks: dict[str, int] = {}

        def reset() -> int:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            return vm("VmRSS")

        async def round_trip(message: dict[str, Any]) -> tuple[int, str]:
            before = reset()
            sent = await sender.running.service.send(message, SHELTER, now)
            peaks["seal+store"] = vm("VmHWM") - before
            item = await sender.running.storage.outbox_item(sent.outbox_id)
            assert item is not None
            envelope = item.envelope
            del item
            before = reset()
            result = await receiver.running.service.receive(envelope, now)
            peaks["open+store"] = vm("VmHWM") - before
            return len(envelope), result.outcome

        await round_trip(referral("warm", now=now))  # warm-up: validators, caches
        message = build_max_referral(now)
        first = reset()
        t0 = time.perf_counter()
        size, outcome = await round_trip(message)
        elapsed = time.perf_counter() - t0
        peaks["all"] = vm("VmHWM") - first  # HWM since the last reset (before open)
        await sender.stop()
        await receiver.stop()
    return {"envelope_bytes": size, "outcome": outcome, "seal": peaks["seal+store"],
            "open": peaks["open+store"], "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child())))
        return
    results = []
    for _ in range(args.rounds):
        out = subprocess.run([sys.executable, __file__, "--child"], capture_output=True,
                             text=True, timeout=300, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["outcome"] == "accepted", result
        results.append(result)
        print(f"  envelope {result['envelope_bytes']} bytes: seal+store peak +"
              f"{result['seal'] / 2**20:.1f} MiB, open+validate+store peak +"
              f"{result['open'] / 2**20:.1f} MiB, {result['seconds']:.2f} s")
    size = results[0]["envelope_bytes"]
    print(f"\nlargest referral: envelope {size} bytes ({size / 2**20:.2f} MiB), median of "
          f"{len(results)}, {statistics.median(r['seconds'] for r in results):.2f} s for both")
    for key, label in (("seal", "sender: seal + store"),
                       ("open", "receiver: open + validate + store")):
        peak = statistics.median(r[key] for r in results)
        ratio = peak / size
        print(f"  {label:36} peak RSS +{peak / 2**20:5.1f} MiB = {ratio:4.1f} × the envelope "
              f"(target ≤ 6: {'met' if ratio <= 6 else 'MISSED'})")


if __name__ == "__main__":
    main()
