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
4. The local API here is a placeholder route table (``/healthz``, ``/metrics``); the local
   API issue fills it in.
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

from caseway.keys.identity import Identity
from caseway.protocol.envelope import MAX_ENVELOPE_BYTES, EnvelopeLayerOnly, MessagePolicy

from . import federation
from .clock import Clock, RandomSource, SystemClock, SystemRandom
from .config import DeliverySettings, IngressSettings, Listen, NodeConfig
from .delivery import Backoff, Outbox
from .logs import configure_logging, request_logging
from .metrics import CONTENT_TYPE, NodeMetrics
from .ratelimit import RateLimiter
from .service import NodeService, PeerDirectory
from .storage import SqliteStorage
from .storage_crypto import StorageCipher
from .threads import NoLifecycle, ThreadRules

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
    extra: dict[str, Any] = field(default_factory=dict)


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
) -> AsyncIterator[Node]:
    """Open the database and build the node's objects; close them on exit.

    ``policy`` defaults to the envelope layer only and ``threads`` to no lifecycle until
    the message policy and lifecycle machine are plugged in.
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
        service = NodeService(
            identity=keys.identity, peers=peers, storage=storage,
            cipher=StorageCipher(keys.storage_key), policy=policy or EnvelopeLayerOnly(),
            threads=threads or NoLifecycle(), clock=clock, random=random, metrics=metrics,
            sender_limiter=RateLimiter(rate=ingress.sender_rate, burst=ingress.sender_burst,
                                       monotonic=clock.monotonic),
            envelope_lifetime=delivery.envelope_lifetime, on_enqueued=outbox.wake)
        limits = federation.Ingress(
            asyncio.Semaphore(ingress.max_concurrency),
            RateLimiter(rate=ingress.address_rate, burst=ingress.address_burst,
                        monotonic=clock.monotonic),
            ingress.body_timeout)
        yield Node(keys.identity, peers, storage, service, outbox, metrics, clock, limits,
                   session)
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


def local_api_app(node: Node) -> web.Application:
    """The local API listener (placeholder routes until the local API issue lands)."""
    app = web.Application(middlewares=[request_logging("local_api", node.clock)])
    app[NODE] = node
    app.router.add_get("/healthz", federation.healthz)
    app.router.add_get("/metrics", metrics_handler)
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
                   configure_logs: bool = True) -> None:
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
                         ingress=config.ingress) as node:
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
