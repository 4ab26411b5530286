"""Run one real Caseway node as its own process, so a test can SIGKILL it (issue 6).

    python tests/crash_node.py SPEC.json

``SPEC.json`` (written by the test) holds the node home, its participant and key seeds, the
peers it knows (public keys, endpoints, sectors), the listen port (0 for any) and optional
configuration overrides. The node is built from a real :class:`NodeConfig`
(``config.parse_config``) and run by :func:`caseway.node.app.run_node` with the real message
policy and lifecycle the node wires by default (ReferralPolicy over its consent store,
CaseLifecycle), exactly as the ``caseway node run`` command runs it, except that keys
and directory come from the spec instead of a keystore and a signed directory file.

When both listeners are up, the runner writes ``ready.json`` (ports, pid) into the home
atomically; the test polls for it. With ``feed`` set, the process also plays the agency's
case-management system: it queues referrals ``start .. start+count-1`` for ``recipient``
through :meth:`NodeService.send`, one at a time. It is idempotent across crashes: a
referral whose thread already exists was queued (queueing is one transaction with the
thread row) and is skipped, exactly like a client retrying with an idempotency key.

SIGTERM stops it gracefully; SIGKILL is the point.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from caseway.node.app import NodeServer, run_node
from caseway.node.config import parse_config
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair

from reliability_helpers import Directory, Keys, Peer, referral, thread_id

READY = "ready.json"


def load(spec_path: Path) -> tuple[Any, Keys, Directory, dict[str, Any]]:
    spec = json.loads(spec_path.read_text("utf-8"))
    home = Path(spec["home"])
    document: dict[str, Any] = {
        "participant": spec["participant"],
        "log_format": "json",
        "federation": {"listen": f"127.0.0.1:{spec.get('port', 0)}"},
        "local_api": {"listen": "127.0.0.1:0"},
        "directory": {"authority_keys": ["unused-peers-come-from-the-spec"]},
    }
    for section, values in spec.get("config", {}).items():
        document.setdefault(section, {}).update(values)
    config = parse_config(home, document, env={})
    from caseway.keys.identity import Identity

    identity = Identity(spec["participant"], SigningKeyPair(bytes.fromhex(spec["signing"])),
                        [EncryptionKeyPair(bytes.fromhex(spec["encryption"]))])
    keys = Keys(identity, bytes.fromhex(spec["storage_key"]))
    directory = Directory(Peer.from_json(p) for p in spec["peers"])
    return config, keys, directory, spec


async def feed(server: NodeServer, spec: dict[str, Any]) -> None:
    try:
        await _feed(server, spec)
    except Exception as exc:  # make a feeder bug visible in the node's output
        print(f"feed failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(3)  # fail fast: the test sees the process exit


async def _feed(server: NodeServer, spec: dict[str, Any]) -> None:
    node = server.node
    job = spec["feed"]
    for index in range(job["start"], job["start"] + job["count"]):
        if await node.storage.thread(thread_id(index)) is not None:
            continue  # queued before a crash: the thread row commits with the outbox row
        message = referral(index, now=node.clock.now(), recipient=job["recipient"])
        await node.service.send(message, job["recipient"], node.clock.now())


async def main(spec_path: Path) -> None:
    config, keys, directory, spec = load(spec_path)
    tasks: list[asyncio.Task[None]] = []

    def started(server: NodeServer) -> None:
        assert server.federation_address and server.local_api_address
        ready = {"pid": os.getpid(), "federation_port": server.federation_address[1],
                 "local_api_port": server.local_api_address[1]}
        tmp = config.home / (READY + ".tmp")
        tmp.write_text(json.dumps(ready), "utf-8")
        os.replace(tmp, config.home / READY)
        if spec.get("feed"):
            tasks.append(asyncio.get_running_loop().create_task(feed(server, spec)))

    # No policy or lifecycle given: the node's own defaults, ReferralPolicy over its
    # persisted consent store and CaseLifecycle, as `caseway node run` has them.
    await run_node(config, keys, directory, on_started=started)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
