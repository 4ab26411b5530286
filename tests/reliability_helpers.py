"""Shared builders for the reliability, hostile-input and confidentiality tests (issue 6).

Not a test module. Everything here is also used by ``tests/crash_node.py`` (the node
runner started as a subprocess) and by the corpus generator, so it imports nothing from
pytest or conftest.

- :func:`referral` builds a real, schema- and consent-valid referral (the full sample
  ``examples/referrals/ph-return-full.json``) with its own case, thread and consent ids
  and times relative to ``now``, so it passes :class:`ReferralPolicy` at any date.
- :class:`Directory` is a :class:`~caseway.node.service.PeerDirectory` and a
  :class:`~caseway.protocol.policy.ParticipantSectors` over fixed public keys, with
  revocation (what the signed trust directory gives a node).
- :class:`LiveNode` is one in-process node on an ephemeral loopback port with fixed keys
  and the real message policy (:class:`ReferralPolicy` + :class:`CaseLifecycle`).
- :func:`home_snapshot` / :func:`logical_dump` capture a node home byte for byte and the
  database's logical content (see the WAL note there).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caseway.keys.identity import Identity, PublicKey, StaticKeys
from caseway.node.app import Node, NodeServer
from caseway.node.clock import Clock, RandomSource, SeededRandom
from caseway.node.config import DeliverySettings, IngressSettings
from caseway.node.threads import CaseLifecycle, ThreadRules
from caseway.protocol import crypto
from caseway.protocol.consent import ConsentRecord
from caseway.protocol.crypto import EncryptionKeyPair, SigningKeyPair
from caseway.protocol.encoding import b64encode
from caseway.protocol.envelope import MessagePolicy
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.policy import InMemoryConsentState, ReferralPolicy

from loopback_node import LoopbackNode

ROOT = Path(__file__).resolve().parent.parent
SAMPLE: dict[str, Any] = json.loads(
    (ROOT / "examples" / "referrals" / "ph-return-full.json").read_text("utf-8"))
NOW = 1768435200  # 2026-01-15T00:00:00Z, as in the vectors and conftest
DAY = 24 * 3600

EMBASSY = "ph-embassy-kl"
SHELTER = "ph-shelter-manila"
SECTORS: dict[str, tuple[str, ...]] = {
    EMBASSY: ("embassy_consular", "labour_attache"),
    SHELTER: ("shelter", "social_services"),
}


def ident(*parts: object) -> str:
    """A deterministic 16-byte id in canonical base64url (22 characters)."""
    text = "/".join(str(p) for p in parts).encode("utf-8")
    return b64encode(hashlib.blake2b(text, digest_size=16).digest())


def seed(*parts: object) -> bytes:
    return hashlib.blake2b("/".join(str(p) for p in parts).encode("utf-8"),
                           digest_size=32).digest()


def fixed_identity(participant: str, label: str = "v1") -> Identity:
    return Identity(participant, SigningKeyPair(seed(participant, label, "signing")),
                    [EncryptionKeyPair(seed(participant, label, "encryption"))])


def referral(index: int | str, *, now: int, recipient: str = SHELTER,
             sample: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full sample referral as referral number ``index``: fresh ids, times around
    ``now`` (consent given two days before, valid 180 days, answer due in 7)."""
    message = copy.deepcopy(dict(sample or SAMPLE))
    message["case_id"] = case_id(index)
    message["thread_id"] = thread_id(index)
    message["seq"] = 1
    message["sent_at"] = now
    message["respond_by"] = now + 7 * DAY
    consent = message["consent"]
    consent["consent_id"] = ident("consent", index)
    consent["given_at"] = now - 2 * DAY
    consent["expires_at"] = now + 180 * DAY
    consent["scope"]["recipients"]["participants"] = [recipient]
    return message


def case_id(index: int | str) -> str:
    return ident("case", index)


def thread_id(index: int | str) -> str:
    return ident("thread", index)


# ----------------------------------------------------------------------------- directory


@dataclass
class Peer:
    participant: str
    signing_public: bytes
    encryption_public: bytes
    endpoint: str | None = None
    sectors: tuple[str, ...] = ("shelter",)
    revoked_at: int | None = None

    @classmethod
    def of(cls, identity: Identity, endpoint: str | None = None,
           sectors: tuple[str, ...] | None = None, revoked_at: int | None = None) -> Peer:
        return cls(identity.participant, identity.signing.public_key,
                   identity.encryption.public_key, endpoint,
                   sectors or SECTORS.get(identity.participant, ("shelter",)), revoked_at)

    def to_json(self) -> dict[str, Any]:
        return {"participant": self.participant, "signing": self.signing_public.hex(),
                "encryption": self.encryption_public.hex(), "endpoint": self.endpoint,
                "sectors": list(self.sectors), "revoked_at": self.revoked_at}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Peer:
        return cls(obj["participant"], bytes.fromhex(obj["signing"]),
                   bytes.fromhex(obj["encryption"]), obj["endpoint"], tuple(obj["sectors"]),
                   obj["revoked_at"])


class Directory:
    """PeerDirectory + ParticipantSectors over fixed public keys (a signed directory's
    content without the signature), with key revocation."""

    def __init__(self, peers: Iterable[Peer] = ()) -> None:
        self.peers: dict[str, Peer] = {}
        self._keys = StaticKeys()
        for peer in peers:
            self.add(peer)

    def add(self, peer: Peer) -> None:
        self.peers[peer.participant] = peer
        self._keys.add(PublicKey(peer.participant, peer.signing_public,
                                 revoked_at=peer.revoked_at))

    def add_identity(self, identity: Identity, endpoint: str | None = None,
                     revoked_at: int | None = None) -> None:
        self.add(Peer.of(identity, endpoint, revoked_at=revoked_at))

    def signing_key(self, participant: str, key_id: str, at: int) -> bytes:
        return self._keys.signing_key(participant, key_id, at)

    def encryption_key(self, participant: str, at: int) -> tuple[bytes, str]:
        peer = self.peers.get(participant)
        if peer is None:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "participant not in the directory")
        return peer.encryption_public, crypto.key_id(peer.encryption_public)

    def endpoint(self, participant: str) -> str | None:
        peer = self.peers.get(participant)
        return None if peer is None else peer.endpoint

    def sectors(self, participant: str) -> frozenset[str]:  # type: ignore[override]
        peer = self.peers.get(participant)
        if peer is None:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "participant not in the directory")
        return frozenset(peer.sectors)


class RecordingConsents(InMemoryConsentState):
    """The node's consent state as the wiring keeps it: the consent of every referral
    thread seen, and withdrawals."""

    def remember(self, message: Mapping[str, Any]) -> None:
        if message.get("type") in ("referral", "onward_referral"):
            self.record_thread(message["thread_id"], ConsentRecord.from_json(message["consent"]))


def real_policy(directory: Directory,
                consents: InMemoryConsentState | None = None) -> ReferralPolicy:
    return ReferralPolicy(directory, consents or RecordingConsents())


# ----------------------------------------------------------------------------- live node


@dataclass
class Keys:
    identity: Identity
    storage_key: bytes


@dataclass
class LiveNode(LoopbackNode):
    """One in-process node with fixed keys on an ephemeral loopback port; restartable on
    the same port and database (like conftest's NodeHarness, plus a message policy)."""

    identity: Identity
    home: Path
    directory: Directory
    clock: Clock
    policy: MessagePolicy | None = None
    threads: ThreadRules | None = field(default_factory=CaseLifecycle)
    ingress: IngressSettings | None = None
    delivery: DeliverySettings | None = None
    background_delivery: bool = False
    random: RandomSource | None = None
    port: int = 0
    node: Node | None = None
    _server: NodeServer | None = None
    _stack: AsyncExitStack | None = None

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.storage_key = seed(self.identity.participant, "storage")
        if self.random is None:
            self.random = SeededRandom(self.identity.participant.encode())

    @property
    def participant(self) -> str:
        return self.identity.participant

    @property
    def database(self) -> Path:
        return self.home / "caseway.db"

    def node_arguments(self) -> dict[str, Any]:
        return {"keys": Keys(self.identity, self.storage_key), "peers": self.directory,
                "database": self.database, "policy": self.policy, "threads": self.threads,
                "clock": self.clock, "random": self.random,
                "delivery": self.delivery or DeliverySettings(request_timeout=10.0),
                "ingress": self.ingress}

    def on_started(self) -> None:
        peer = self.directory.peers.get(self.participant)
        if peer is not None:
            peer.endpoint = self.url


# ----------------------------------------------------------------------------- snapshots


def home_snapshot(home: Path, *, exclude: Collection[str] = ("caseway.db-shm",)
                  ) -> dict[str, str]:
    """SHA-256 of every file under ``home`` (relative path -> hex), except ``exclude``.

    The WAL index (``-shm``) is excluded by default: it is a shared-memory map that SQLite
    *readers* write to (read marks and locks), so merely answering a duplicate lookup
    legitimately changes its bytes. It holds no data of its own (SQLite rebuilds it from the
    WAL after a crash). The database file and the WAL itself are compared byte for byte: a
    rejected request makes no write transaction, so neither may change at all.
    """
    out = {}
    for path in sorted(home.rglob("*")):
        if path.is_file() and path.name not in exclude:
            out[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def logical_dump(database: Path) -> list[tuple[Any, ...]]:
    """Every row of every table, in a stable order (the logical content). Opened
    read-only through a URI so this reader cannot checkpoint or change anything."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows: list[tuple[Any, ...]] = []
        for table in tables:
            for row in db.execute(f"SELECT * FROM {table} ORDER BY 1"):
                rows.append((table, *row))
        return rows
    finally:
        db.close()
