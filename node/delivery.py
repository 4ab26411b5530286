"""The outbox worker: deliver queued envelopes, first in first out, one loop per destination.

Rules of this module (SPEC.md "Delivery"):

1. FIFO per destination. Only the oldest queued envelope of a destination is ever
   attempted; the next one waits until it is delivered or dead. Peers see a thread's
   messages in order, and a destination that is down does not hold up any other, because
   each destination has its own loop.
2. An envelope leaves the queue only on a receipt that verifies against the recipient's
   signing key and names the exact digest of the bytes we sent. ``accepted`` -> delivered;
   ``rejected`` with a code the sender must not retry -> dead, code kept. A retryable code,
   any response without a valid receipt (429, 5xx, a proxy page) and any network error ->
   retry later.
3. Retry schedule, persisted in the database so a restart resumes it: after the n-th
   failed attempt the next one is due after
   ``ceil(min(cap, base * multiplier**(n-1)) * (0.5 + 0.5*u))`` seconds, ``u`` uniform in
   [0, 1) from the injected random source, and not before a peer's ``Retry-After`` (itself
   capped). Defaults: base 5 s, multiplier 2, cap 1 h.
4. At its expiry an envelope still queued is dead-lettered (``expired``) and stays visible
   in the outbox.
5. Crash safety: a delivery whose receipt arrived but whose "delivered" mark did not reach
   the disk is simply sent again; the receiver answers a duplicate with its original
   receipt, so nothing is lost and nothing is stored twice.
6. Deterministic core: :meth:`Outbox.deliver_due` runs one pass at a given time and returns
   what it did. The background loops are thin wrappers that wait for the next due time or
   a wake-up; tests drive the core with a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import structlog

from caseway.protocol.envelope import KeyResolver
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import MAX_RECEIPT_BYTES, verify_receipt

from .clock import Clock, RandomSource
from .metrics import NodeMetrics
from .storage import OutboxItem, Storage

log = structlog.get_logger("caseway.delivery")

FEDERATION_PATH = "/caseway/v1/envelopes"
DELIVERED, RETRY, REJECTED, EXPIRED = "delivered", "retry", "rejected", "expired"
STORAGE_FAILURE_PAUSE = 5.0  # seconds a loop waits after its database call failed


class Endpoints(KeyResolver, Protocol):
    def endpoint(self, participant: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 5.0
    multiplier: float = 2.0
    cap: float = 3600.0

    def delay(self, failures: int, u: float, retry_after: int | None = None) -> int:
        """Seconds until the next attempt after ``failures`` failed ones (rule 3)."""
        nominal = min(self.cap, self.base * self.multiplier ** max(0, failures - 1))
        delay = math.ceil(nominal * (0.5 + 0.5 * u))
        if retry_after is not None:
            delay = max(delay, min(retry_after, math.ceil(self.cap)))
        return max(1, delay)

    def bounds(self, failures: int) -> tuple[int, int]:
        """The smallest and largest delay :meth:`delay` can give (for tests and docs)."""
        nominal = min(self.cap, self.base * self.multiplier ** max(0, failures - 1))
        return max(1, math.ceil(nominal * 0.5)), max(1, math.ceil(nominal))


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """What one pass did with one envelope."""

    item_id: int
    destination: str
    message_id: str
    outcome: str  # delivered | retry | rejected | expired
    at: int
    error: str | None = None
    next_attempt_at: int | None = None


def federation_url(endpoint: str) -> str:
    """Directory endpoints are base URLs; the envelope path is fixed by SPEC.md."""
    return endpoint.rstrip("/") + FEDERATION_PATH


class Outbox:
    def __init__(
        self,
        *,
        storage: Storage,
        peers: Endpoints,
        session: aiohttp.ClientSession,
        clock: Clock,
        random: RandomSource,
        backoff: Backoff | None = None,
        metrics: NodeMetrics | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        self._storage = storage
        self._peers = peers
        self._session = session
        self._clock = clock
        self._random = random
        self.backoff = backoff or Backoff()
        self._metrics = metrics or NodeMetrics()
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._locks: dict[str, asyncio.Lock] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._listeners: list[Callable[[DeliveryAttempt], None]] = []

    # ------------------------------------------------------------------ deterministic core

    async def deliver_due(self, now: int) -> list[DeliveryAttempt]:
        """One pass over every destination at time ``now`` (destinations in parallel)."""
        destinations = await self._storage.outbox_destinations()
        results = await asyncio.gather(*(self.deliver_destination(d, now)
                                         for d in destinations))
        return [attempt for attempts in results for attempt in attempts]

    async def deliver_destination(self, destination: str, now: int) -> list[DeliveryAttempt]:
        """Work through ``destination``'s queue head until it is empty or not yet due."""
        attempts: list[DeliveryAttempt] = []
        async with self._locks.setdefault(destination, asyncio.Lock()):
            while True:
                head = await self._storage.outbox_head(destination)
                if head is None:
                    break
                if head.expires <= now:
                    attempt = await self._expire(head, now)
                elif head.next_attempt_at <= now:
                    attempt = await self._attempt(head, now)
                else:
                    break
                attempts.append(attempt)
                for listener in self._listeners:
                    listener(attempt)
                if attempt.outcome == RETRY:
                    break
        return attempts

    async def _expire(self, item: OutboxItem, now: int) -> DeliveryAttempt:
        await self._storage.mark_dead(item.id, reason=EXPIRED, receipt=None, at=now)
        self._metrics.messages_out.inc(EXPIRED)
        log.warning("delivery_expired", message_id=item.message_id,
                    destination=item.destination, attempts=item.attempts)
        return DeliveryAttempt(item.id, item.destination, item.message_id, EXPIRED, now,
                               EXPIRED)

    async def _attempt(self, item: OutboxItem, now: int) -> DeliveryAttempt:
        endpoint = self._peers.endpoint(item.destination)
        if endpoint is None:
            return await self._retry(item, now, "no_endpoint")
        try:
            async with self._session.post(
                federation_url(endpoint), data=item.envelope, timeout=self._timeout,
                headers={"Content-Type": "application/json"}, allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                body = await _read_bounded(response.content, MAX_RECEIPT_BYTES)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return await self._retry(item, now, f"network:{type(exc).__name__}")
        if body is None:
            return await self._retry(item, now, f"http_{status}:oversized_body", retry_after)
        try:
            receipt = verify_receipt(body, keys=self._peers,
                                     expected_recipient=item.destination,
                                     expected_digest=item.digest)
        except CasewayError as exc:
            # Rule 2: a receipt that does not verify is no receipt, whatever the status.
            return await self._retry(item, now, f"http_{status}:no_receipt:{exc.code.value}",
                                     retry_after)
        if receipt.accepted:
            await self._storage.mark_delivered(item.id, receipt=body, at=now)
            self._metrics.messages_out.inc(DELIVERED)
            self._metrics.delivery_latency.observe(max(0, now - item.created))
            log.info("delivered", message_id=item.message_id, destination=item.destination,
                     attempts=item.attempts + 1)
            return DeliveryAttempt(item.id, item.destination, item.message_id, DELIVERED, now)
        # A rejected receipt always names a well-formed code, possibly one added to v1 after
        # this node was built; SPEC §8: an unknown code means "do not retry".
        reason = receipt.error or ErrorCode.INTERNAL_ERROR.value
        known = {code.value: code for code in ErrorCode}.get(reason)
        if known is not None and known.retry:
            return await self._retry(item, now, reason, retry_after)
        await self._storage.mark_dead(item.id, reason=reason, receipt=body, at=now)
        self._metrics.messages_out.inc(REJECTED)
        log.warning("delivery_rejected", message_id=item.message_id,
                    destination=item.destination, error=reason)
        return DeliveryAttempt(item.id, item.destination, item.message_id, REJECTED, now,
                               reason)

    async def _retry(self, item: OutboxItem, now: int, error: str,
                     retry_after: int | None = None) -> DeliveryAttempt:
        failures = item.attempts + 1
        next_at = now + self.backoff.delay(failures, self._random.uniform(), retry_after)
        await self._storage.schedule_retry(item.id, attempts=failures, next_attempt_at=next_at,
                                           last_error=error)
        self._metrics.messages_out.inc(RETRY)
        log.info("delivery_retry", message_id=item.message_id, destination=item.destination,
                 attempts=failures, error=error, next_attempt_at=next_at)
        return DeliveryAttempt(item.id, item.destination, item.message_id, RETRY, now, error,
                               next_at)

    # ------------------------------------------------------------------ background loops

    def add_listener(self, listener: Callable[[DeliveryAttempt], None]) -> None:
        """Call ``listener`` with every attempt (metrics, tests waiting for a delivery)."""
        self._listeners.append(listener)

    def wake(self, destination: str) -> None:
        """Something was queued for ``destination``: make sure its loop runs now."""
        if not self._running:
            return
        self._wakeups.setdefault(destination, asyncio.Event()).set()
        if destination not in self._loops:
            self._loops[destination] = asyncio.create_task(
                self._destination_loop(destination), name=f"outbox:{destination}")

    async def start(self) -> None:
        """Start one loop for every destination that has queued envelopes (resume)."""
        self._running = True
        for destination in await self._storage.outbox_destinations():
            self.wake(destination)

    async def stop(self) -> None:
        self._running = False
        loops = list(self._loops.values())
        self._loops.clear()
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _destination_loop(self, destination: str) -> None:
        wakeup = self._wakeups.setdefault(destination, asyncio.Event())
        while True:
            wakeup.clear()
            try:
                await self.deliver_destination(destination, self._clock.now())
                wake_at = await self._storage.outbox_next_wake(destination)
                delay: float | None = (None if wake_at is None
                                       else max(0, wake_at - self._clock.now()))
            except Exception as exc:  # the database failed: log the type, try again later
                log.error("delivery_loop_failed", destination=destination,
                          error_type=type(exc).__name__)
                delay = STORAGE_FAILURE_PAUSE
            if delay is None:
                await wakeup.wait()
            elif delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=delay)


def _retry_after(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None  # HTTP-date form is not used between Caseway nodes
    return int(value.strip())


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """Read at most ``limit`` bytes; ``None`` if the body is longer (a peer cannot make us
    buffer an unbounded answer)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
