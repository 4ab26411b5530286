"""Assembling a running node: storage, service, outbox and the two listeners.

Rules of this module:

1. No global state. :func:`open_node` builds one :class:`Node` (every long-lived object a
   node has) from keys, a peer directory and a database path, and closes it on exit.
2. Two listeners, two aiohttp applications: the federation endpoint (peers) and the local
   API (staff and the case-management system; loopback by default). The outbox loops are
   background work owned by the federation app's ``cleanup_ctx``: started when it starts,
   cancelled and awaited when it stops.
3. Graceful shutdown: stop accepting, let in-flight requests finish (up to
   ``SHUTDOWN_TIMEOUT``), stop the outbox loops, then close the database. A delivery cut
   short is retried after restart (delivery.py rule 5).
4. By default a node enforces the real rules: :class:`ReferralPolicy` (consent and
   firewall) over the node's persisted consent store and :class:`CaseLifecycle`.
   ``EnvelopeLayerOnly``/``NoLifecycle`` are explicit options for envelope-layer tests.
   :func:`serve_from_config` is the production entry point: keystore, trust store
   (pinned authority keys and the signed directory file from the configuration), rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import structlog
from aiohttp import web

from caseway.keys.directory import Directory
from caseway.keys.identity import Identity
from caseway.keys.trust import TrustStore
from caseway.protocol.envelope import MAX_ENVELOPE_BYTES, MessagePolicy
from caseway.protocol.errors import CasewayError
from caseway.protocol.policy import ReferralPolicy

from . import api, federation
from .cases import Casework, DirectoryRefresh, DirectorySource
from .clock import Clock, RandomSource, SystemClock, SystemRandom
from .config import ConfigError, DeliverySettings, IngressSettings, Listen, NodeConfig
from .delivery import Backoff, Outbox
from .logs import configure_logging, request_logging
from .metrics import CONTENT_TYPE, NodeMetrics
from .ratelimit import RateLimiter
from .service import NodeService, PeerDirectory
from .storage import SqliteStorage
from .storage_crypto import StorageCipher
from .threads import CaseLifecycle, NodeConsents, ThreadRules

log = structlog.get_logger("caseway.node")

SHUTDOWN_TIMEOUT = 30.0


class NodeKeys(Protocol):
    """What the keystore gives a node (``caseway.keys.keystore.KeystoreContents``)."""

    @property
    def identity(self) -> Identity: ...

    @property
    def storage_key(self) -> bytes: ...


@dataclass
class Node:
    """Every long-lived object of one running node."""

    identity: Identity
    peers: PeerDirectory
    storage: SqliteStorage
    service: NodeService
    outbox: Outbox
    metrics: NodeMetrics
    clock: Clock
    ingress: federation.Ingress
    session: aiohttp.ClientSession
    casework: Casework | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cases(self) -> Casework:
        assert self.casework is not None
        return self.casework


class _DirectorySectors:
    """The policy's :class:`ParticipantSectors` over the node's peer directory."""

    def __init__(self, peers: PeerDirectory) -> None:
        self._peers = peers

    def sectors(self, participant: str) -> frozenset[str]:
        return frozenset(self._peers.sectors(participant))


NODE = web.AppKey("node", Node)


@asynccontextmanager
async def open_node(
    *,
    keys: NodeKeys,
    peers: PeerDirectory,
    database: Path | str,
    policy: MessagePolicy | None = None,
    threads: ThreadRules | None = None,
    clock: Clock | None = None,
    random: RandomSource | None = None,
    delivery: DeliverySettings | None = None,
    ingress: IngressSettings | None = None,
    directory: DirectorySource | None = None,
    refresh_directory: DirectoryRefresh | None = None,
) -> AsyncIterator[Node]:
    """Open the database and build the node's objects; close them on exit.

    ``policy`` defaults to :class:`ReferralPolicy` over ``peers`` and the node's consent
    store, ``threads`` to :class:`CaseLifecycle` (rule 4). ``directory`` gives the
    current signed directory for search; ``refresh_directory`` reloads it (admin API).
    """
    clock = clock or SystemClock()
    random = random or SystemRandom()
    delivery = delivery or DeliverySettings()
    ingress = ingress or IngressSettings()
    metrics = NodeMetrics()
    storage = await SqliteStorage.open(database)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=delivery.request_timeout))
    try:
        outbox = Outbox(storage=storage, peers=peers, session=session, clock=clock,
                        random=random, metrics=metrics,
                        backoff=Backoff(delivery.backoff_base, delivery.backoff_multiplier,
                                        delivery.backoff_cap),
                        request_timeout=delivery.request_timeout)
        consents = NodeConsents()
        service = NodeService(
            identity=keys.identity, peers=peers, storage=storage,
            cipher=StorageCipher(keys.storage_key),
            policy=policy or ReferralPolicy(_DirectorySectors(peers), consents),
            threads=threads or CaseLifecycle(), clock=clock, random=random, metrics=metrics,
            sender_limiter=RateLimiter(rate=ingress.sender_rate, burst=ingress.sender_burst,
                                       monotonic=clock.monotonic),
            envelope_lifetime=delivery.envelope_lifetime, on_enqueued=outbox.wake,
            consents=consents)
        await service.load_consents()
        casework = Casework(service=service, storage=storage, clock=clock, random=random,
                            directory=directory or _directory_of(peers),
                            refresh=refresh_directory)
        service.on_withdrawal = casework.withdrawal_received
        await casework.resume_withdrawals(clock.now())
        limits = federation.Ingress(
            asyncio.Semaphore(ingress.max_concurrency),
            RateLimiter(rate=ingress.address_rate, burst=ingress.address_burst,
                        monotonic=clock.monotonic),
            ingress.body_timeout)
        yield Node(keys.identity, peers, storage, service, outbox, metrics, clock, limits,
                   session, casework)
    finally:
        await session.close()
        await storage.close()


# --------------------------------------------------------------------------- applications


def federation_app(node: Node, *, background_delivery: bool = True) -> web.Application:
    """The federation listener. ``background_delivery=False`` leaves the outbox to be
    driven by :meth:`Outbox.deliver_due` (tests with a fake clock)."""
    app = web.Application(client_max_size=MAX_ENVELOPE_BYTES,
                          middlewares=[request_logging("federation", node.clock)])
    app[NODE] = node
    app[federation.SERVICE] = node.service
    app[federation.INGRESS] = node.ingress
    app[federation.CLOCK] = node.clock
    federation.add_routes(app)
    if background_delivery:
        app.cleanup_ctx.append(_outbox_loops)
    return app


async def _outbox_loops(app: web.Application) -> AsyncIterator[None]:
    outbox = app[NODE].outbox
    await outbox.start()
    yield
    await outbox.stop()


def _directory_of(peers: PeerDirectory) -> DirectorySource:
    """Search reads the trust store's directory when the peers are a trust store."""
    def current() -> Directory | None:
        held = getattr(peers, "directory", None)
        return held if isinstance(held, Directory) else None
    return current


def local_api_app(node: Node) -> web.Application:
    """The local API listener (``caseway.node.api``)."""
    app = api.build_local_api(node.cases, node.clock, metrics_handler)
    app[NODE] = node
    return app


async def metrics_handler(request: web.Request) -> web.Response:
    node = request.app[NODE]
    text = node.metrics.render(await node.storage.outbox_depths())
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})


# --------------------------------------------------------------------------- listeners


class NodeServer:
    """Both listeners of one node, started and stopped together."""

    def __init__(self, node: Node, *, background_delivery: bool = True) -> None:
        self.node = node
        self._runners = [
            web.AppRunner(federation_app(node, background_delivery=background_delivery),
                          access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT),
            web.AppRunner(local_api_app(node), access_log=None,
                          shutdown_timeout=SHUTDOWN_TIMEOUT),
        ]
        self.federation_address: tuple[str, int] | None = None
        self.local_api_address: tuple[str, int] | None = None

    async def start(self, *, federation: Listen, local_api: Listen,
                    ssl_context: ssl.SSLContext | None = None,
                    local_ssl_context: ssl.SSLContext | None = None) -> None:
        try:
            addresses = []
            for runner, listen, context in zip(
                    self._runners, (federation, local_api), (ssl_context, local_ssl_context),
                    strict=True):
                await runner.setup()
                site = web.TCPSite(runner, listen.host, listen.port, ssl_context=context)
                await site.start()
                addresses.append(runner.addresses[0][:2])
        except BaseException:
            await self.stop()
            raise
        self.federation_address, self.local_api_address = addresses

    async def stop(self) -> None:
        """Graceful: in-flight requests finish first (rule 3). Local API goes first."""
        for runner in reversed(self._runners):
            await runner.cleanup()

    @property
    def federation_url(self) -> str:
        if self.federation_address is None:
            raise RuntimeError("federation listener not started")
        host, port = self.federation_address
        return f"http://{host}:{port}"


def tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def run_node(config: NodeConfig, keys: NodeKeys, peers: PeerDirectory, *,
                   policy: MessagePolicy | None = None, threads: ThreadRules | None = None,
                   stop: asyncio.Event | None = None,
                   on_started: Callable[[NodeServer], None] | None = None,
                   configure_logs: bool = True,
                   refresh_directory: DirectoryRefresh | None = None) -> None:
    """Run both listeners until SIGINT/SIGTERM (or ``stop`` is set), then shut down
    gracefully. The caller loads ``config`` (config.py), ``keys`` (the keystore) and
    ``peers`` (the trust directory). ``on_started`` receives the running server (its bound
    addresses, when a port was 0)."""
    if configure_logs:
        configure_logging(config.log_format)
    if keys.identity.participant != config.participant:
        raise ValueError("the keystore belongs to another participant than the configuration")
    context = tls_context(config)
    async with open_node(keys=keys, peers=peers, database=config.database, policy=policy,
                         threads=threads, delivery=config.delivery,
                         ingress=config.ingress,
                         refresh_directory=refresh_directory) as node:
        server = NodeServer(node)
        await server.start(federation=config.federation, local_api=config.local_api,
                           ssl_context=context,
                           local_ssl_context=None if config.local_api.is_loopback else context)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        if on_started is not None:
            on_started(server)
        log.info("node_started", participant=config.participant,
                 federation=str(config.federation), local_api=str(config.local_api),
                 tls=context is not None)
        try:
            await stop.wait()
        finally:
            log.info("node_stopping")
            await server.stop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)


def load_keys(config: NodeConfig, passphrase: bytes) -> NodeKeys:
    """Open the node's keystore (``caseway.keys.keystore``)."""
    from caseway.keys.keystore import open_keystore

    contents: NodeKeys = open_keystore(config.keystore, passphrase)
    return contents


def load_trust_store(config: NodeConfig, now: int) -> TrustStore:
    """The pinned authority keys of the configuration and the signed directory file."""
    from caseway.protocol import crypto
    from caseway.protocol.encoding import b64decode

    try:
        pins = [b64decode(k, length=crypto.PUBLIC_KEY_BYTES, field="authority key")
                for k in config.authority_keys]
    except CasewayError:
        raise ConfigError("a pinned authority key is not a base64url Ed25519 public key",
                          key="directory.authority_keys") from None
    trust = TrustStore(pins)
    trust.load(_read_directory(config), now)
    return trust


def _read_directory(config: NodeConfig) -> bytes:
    try:
        return config.directory.read_bytes().rstrip(b"\n")
    except FileNotFoundError:
        raise ConfigError(f"no signed directory at {config.directory} (copy the one the "
                          "authority published there)", key="directory.path") from None


async def serve_from_config(config: NodeConfig, passphrase: bytes, *,
                            on_started: Callable[[NodeServer], None] | None = None,
                            stop: asyncio.Event | None = None,
                            configure_logs: bool = True,
                            clock: Clock | None = None) -> None:
    """Run the node an operator configured: its keystore, its trust store (pinned keys and
    directory file), the referral policy over its consent store, and the case lifecycle.
    ``POST /api/v1/directory/refresh`` re-reads the directory file."""
    clock = clock or SystemClock()
    keys = load_keys(config, passphrase)
    trust = load_trust_store(config, clock.now())

    def refresh(now: int) -> Directory:
        return trust.load(_read_directory(config), now)

    await run_node(config, keys, trust, stop=stop, on_started=on_started,
                   configure_logs=configure_logs, refresh_directory=refresh)
