"""Shared fixtures: real Caseway nodes on ephemeral loopback ports.

A :class:`NodeHarness` is one node (keys, database file, both listeners) that a test can
stop and start again on the same port and the same database, as an operator would restart
it. Nodes resolve each other through :class:`StaticPeers`, a tiny in-memory stand-in for the
signed trust directory built on :class:`~caseway.keys.identity.StaticKeys`.

Nothing of the node is mocked: messages travel over real HTTP between real aiohttp servers.
Time is a shared :class:`~caseway.node.clock.FakeClock`, so retry schedules are exact and
no test sleeps.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from caseway.keys.identity import Identity, StaticKeys
from caseway.node.api import create_token
from caseway.node.app import Node, NodeServer
from caseway.node.clock import FakeClock, SeededRandom
from caseway.node.config import DeliverySettings, IngressSettings
from caseway.node.threads import NoLifecycle, ThreadRules
from caseway.protocol import crypto
from caseway.protocol.envelope import EnvelopeLayerOnly, MessagePolicy
from caseway.protocol.errors import CasewayError, ErrorCode

from loopback_node import LoopbackNode

NOW = 1768435200  # 2026-01-15T00:00:00Z, as in the vectors
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class StaticPeers:
    """The node's :class:`~caseway.node.service.PeerDirectory` over fixed identities."""

    def __init__(self) -> None:
        self.keys = StaticKeys()
        self.identities: dict[str, Identity] = {}
        self.endpoints: dict[str, str | None] = {}
        self.sector_map: dict[str, tuple[str, ...]] = {}
        #: participant -> X25519 public key to hand out instead of the real one (a peer
        #: that rotated its key without us knowing).
        self.stale_encryption: dict[str, bytes] = {}

    def add(self, identity: Identity, endpoint: str | None = None,
            sectors: tuple[str, ...] = ("shelter",)) -> None:
        self.keys.add_identity(identity)
        self.identities[identity.participant] = identity
        self.endpoints[identity.participant] = endpoint
        self.sector_map[identity.participant] = sectors

    def signing_key(self, participant: str, key_id: str, at: int) -> bytes:
        return self.keys.signing_key(participant, key_id, at)

    def encryption_key(self, participant: str, at: int) -> tuple[bytes, str]:
        identity = self.identities.get(participant)
        if identity is None:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "participant not in the directory")
        public = self.stale_encryption.get(participant, identity.encryption.public_key)
        return public, crypto.key_id(public)

    def endpoint(self, participant: str) -> str | None:
        return self.endpoints.get(participant)

    def sectors(self, participant: str) -> Collection[str]:
        return self.sector_map.get(participant, ())


@dataclass
class Keys:
    identity: Identity
    storage_key: bytes


class NodeHarness(LoopbackNode):
    """One node that can be stopped and restarted on the same port and database."""

    def __init__(self, participant: str, home: Path, peers: StaticPeers, clock: FakeClock,
                 *, background_delivery: bool = False,
                 ingress: IngressSettings | None = None,
                 threads: ThreadRules | None = None,
                 real_rules: bool = False) -> None:
        self.participant = participant
        self.home = home
        self.database = home / "caseway.db"
        self.keys = Keys(Identity.generate(participant), os.urandom(32))
        self.peers = peers
        self.clock = clock
        self.random = SeededRandom(participant.encode())
        self.background_delivery = background_delivery
        self.ingress = ingress
        # Envelope-layer tests send messages that are not referrals: they opt out of the
        # node's default rules explicitly. ``real_rules`` keeps the defaults
        # (ReferralPolicy over the node's consent store, CaseLifecycle).
        self.real_rules = real_rules
        self.threads = threads if threads is not None or real_rules else NoLifecycle()
        self.policy: MessagePolicy | None = None if real_rules else EnvelopeLayerOnly()
        self.port = 0
        self.node: Node | None = None
        self._server: NodeServer | None = None
        self._stack: AsyncExitStack | None = None
        peers.add(self.keys.identity)

    @property
    def identity(self) -> Identity:
        return self.keys.identity

    def node_arguments(self) -> dict[str, Any]:
        return {"keys": self.keys, "peers": self.peers, "database": self.database,
                "clock": self.clock, "random": self.random,
                "delivery": DeliverySettings(request_timeout=10.0), "ingress": self.ingress,
                "threads": self.threads, "policy": self.policy}

    def on_started(self) -> None:
        self.peers.endpoints[self.participant] = self.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def peers() -> StaticPeers:
    return StaticPeers()


@pytest.fixture
async def pair(tmp_path: Path, peers: StaticPeers,
               clock: FakeClock) -> AsyncIterator[tuple[NodeHarness, NodeHarness]]:
    """An embassy (sender) and a shelter (receiver), both running, outbox driven by hand."""
    embassy = NodeHarness("ph-embassy-kl", _home(tmp_path, "embassy"), peers, clock)
    shelter = NodeHarness("ph-shelter-manila", _home(tmp_path, "shelter"), peers, clock)
    await embassy.start()
    await shelter.start()
    try:
        yield embassy, shelter
    finally:
        await embassy.stop()
        await shelter.stop()


def _home(root: Path, name: str) -> Path:
    home = root / name
    home.mkdir()
    return home


# ----------------------------------------------------------------------------- local API

ROLES = ("caseworker", "supervisor", "admin", "auditor")
EMBASSY, SHELTER = "ph-embassy-kl", "ph-shelter-manila"


@dataclass
class ApiReply:
    status: int
    body: Any
    content_type: str
    raw: bytes


class ApiNode:
    """A running node with one API token per role (named ``<role>-1``)."""

    def __init__(self, harness: NodeHarness, http: aiohttp.ClientSession) -> None:
        self.harness = harness
        self.http = http
        self.tokens: dict[str, str] = {}

    async def make_tokens(self) -> None:
        for role in ROLES:
            self.tokens[role] = await create_token(self.harness.running.storage,
                                                   name=f"{role}-1", role=role, now=NOW)

    async def call(self, method: str, path: str, body: Any = None, *,
                   role: str | None = "caseworker", token: str | None = None,
                   data: bytes | None = None,
                   content_type: str = "application/json") -> ApiReply:
        headers = {}
        secret = token if token is not None else (None if role is None else self.tokens[role])
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        if data is None and body is not None:
            data = json.dumps(body).encode("utf-8")
        if data is not None:
            headers["Content-Type"] = content_type
        async with self.http.request(method, self.harness.local_url + path, data=data,
                                     headers=headers) as response:
            raw = await response.read()
            kind = response.content_type
            parsed = json.loads(raw) if kind in ("application/json",
                                                 "application/problem+json") else raw
            return ApiReply(response.status, parsed, kind, raw)


@dataclass
class ApiPair:
    embassy: ApiNode
    shelter: ApiNode
    peers: StaticPeers
    clock: FakeClock

    async def deliver(self) -> int:
        """Run both outboxes until nothing is due (no sleeps: each pass is synchronous)."""
        total = 0
        while True:
            done = 0
            for node in (self.embassy, self.shelter):
                done += len(await node.harness.running.outbox.deliver_due(self.clock.now()))
            total += done
            if not done:
                # A minute passes between steps, so timelines order by time.
                self.clock.advance(60)
                return total


@pytest.fixture
async def api_pair(tmp_path: Path, peers: StaticPeers,
                   clock: FakeClock) -> AsyncIterator[ApiPair]:
    """An embassy and a shelter with the real rules (policy, consent store, lifecycle)."""
    embassy = NodeHarness(EMBASSY, _home(tmp_path, "embassy"), peers, clock, real_rules=True)
    shelter = NodeHarness(SHELTER, _home(tmp_path, "shelter"), peers, clock, real_rules=True)
    peers.sector_map[EMBASSY] = ("embassy_consular",)
    await embassy.start()
    await shelter.start()
    async with aiohttp.ClientSession() as http:
        pair = ApiPair(ApiNode(embassy, http), ApiNode(shelter, http), peers, clock)
        try:
            await pair.embassy.make_tokens()
            await pair.shelter.make_tokens()
            yield pair
        finally:
            await embassy.stop()
            await shelter.stop()


def referral_request(**consent_scope: Any) -> dict[str, Any]:
    """The sample referral (examples/referrals) as staff give it to the API."""
    sample = json.loads((EXAMPLES / "referrals" / "ph-return-full.json").read_text("utf-8"))
    request = {k: sample[k] for k in ("purposes", "consent", "survivor_ref", "sections",
                                      "attachments")}
    request["to"] = SHELTER
    request["respond_by"] = NOW + 14 * 86400
    request["consent"]["scope"].update(consent_scope)
    return request
