"""The federation listener's handlers: peers POST envelopes and get signed receipts.

Rules of this module (SPEC.md "Federation endpoint"):

1. Transport limits come first and cost almost nothing, in this order: media type (415),
   declared length (413), per-address rate (429), concurrency (503), then the body is read
   with a hard byte limit and a deadline, so neither a chunked body nor a slow sender can
   make the node buffer more than ``MAX_ENVELOPE_BYTES`` or hold a slot indefinitely.
2. Everything after that is one call, :meth:`NodeService.receive`, which applies the open
   order, the per-sender rate limit, duplicate handling and the storage transaction.
3. Every answer to ``POST`` is a signed receipt (``application/json``) with the status
   SPEC.md gives its code, plus ``Retry-After`` when the code says the sender may retry.
   An unexpected failure is ``internal_error`` (500), never a traceback; the log line names
   the exception type only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from caseway.protocol.envelope import MAX_ENVELOPE_BYTES
from caseway.protocol.errors import CasewayError, ErrorCode

from .clock import Clock
from .delivery import FEDERATION_PATH
from .ratelimit import RateLimiter
from .service import NodeService, ReceiveResult

log = structlog.get_logger("caseway.federation")

JSON = "application/json"


@dataclass
class Ingress:
    """The federation listener's limits (rule 1)."""

    semaphore: asyncio.Semaphore
    address_limiter: RateLimiter
    body_timeout: float


SERVICE = web.AppKey("service", NodeService)
INGRESS = web.AppKey("ingress", Ingress)
CLOCK = web.AppKey("clock", Clock)


def receipt_response(result: ReceiveResult, *, close: bool = False) -> web.Response:
    headers = {}
    if result.retry_after is not None:
        headers["Retry-After"] = str(result.retry_after)
    response = web.Response(status=result.status, body=result.receipt, content_type=JSON,
                            headers=headers)
    if close:
        # The body was not read; closing is cheaper than draining it.
        response.force_close()
    return response


async def post_envelope(request: web.Request) -> web.Response:
    service, ingress = request.app[SERVICE], request.app[INGRESS]
    clock = request.app[CLOCK]
    if request.content_type != JSON:
        return receipt_response(service.reject(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                                               now=clock.now()), close=True)
    if request.content_length is not None and request.content_length > MAX_ENVELOPE_BYTES:
        return receipt_response(service.reject(ErrorCode.TOO_LARGE, now=clock.now()),
                                close=True)
    if not ingress.address_limiter.allow(request.remote or "unknown"):
        return receipt_response(service.reject(ErrorCode.RATE_LIMITED, now=clock.now()),
                                close=True)
    if ingress.semaphore.locked():
        return receipt_response(service.reject(ErrorCode.UNAVAILABLE, now=clock.now()),
                                close=True)
    async with ingress.semaphore:
        try:
            body = await read_body(request, MAX_ENVELOPE_BYTES, ingress.body_timeout)
        except CasewayError as exc:
            return receipt_response(service.reject(exc.code, now=clock.now()), close=True)
        try:
            result = await service.receive(body, clock.now())
        except Exception as exc:  # receive() does not raise; this is the last fence
            log.error("handler_failed", error_type=type(exc).__name__)
            result = service.reject(ErrorCode.INTERNAL_ERROR, data=body, now=clock.now())
    return receipt_response(result)


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """Read the body, refusing it as soon as it passes ``limit`` bytes (a chunked body has
    no declared length) or takes longer than ``timeout`` seconds (slow senders)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise CasewayError(ErrorCode.TOO_LARGE,
                                       f"envelope longer than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise CasewayError(ErrorCode.MALFORMED,
                           f"body not received within {timeout:g} seconds") from None
    except (aiohttp.ClientPayloadError, ConnectionError):
        raise CasewayError(ErrorCode.MALFORMED, "body truncated") from None
    return b"".join(chunks)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_post(FEDERATION_PATH, post_envelope)
    app.router.add_get("/healthz", healthz)
