"""Logging: structlog, one canonical line per request, identifiers only.

Rules of this module (SPEC.md "Operations"):

1. JSON lines when stderr is not a terminal (production, collectors), a readable console
   rendering when it is. ``log_format`` in the configuration can force either.
2. Request context lives in contextvars: cleared at the start of every request, so nothing
   bound for one request can leak into the next; code deeper down (the service) binds
   message id and participant ids as it learns them.
3. One line per request, written when it ends: method, route (the route pattern, never the
   raw path or query), status, duration, and whatever identifiers were bound. Never a
   body, a header value, a case field or an exception message; failures log the exception
   *type* only, because a message can quote data.
4. aiohttp's own access log is switched off (it would log raw paths and user agents).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import structlog
from aiohttp import web

from .clock import Clock

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def configure_logging(log_format: str = "auto", *, stream: TextIO | None = None,
                      level: int = logging.INFO) -> None:
    """Configure structlog for this process (call once, at start-up)."""
    stream = stream or sys.stderr
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    renderer: Any = (structlog.dev.ConsoleRenderer() if console
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def request_logging(listener: str, clock: Clock) -> Callable[..., Awaitable[Any]]:
    """An aiohttp middleware writing the canonical request line (rules 2–3)."""
    log = structlog.get_logger("caseway.request")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        structlog.contextvars.clear_contextvars()
        route = request.match_info.route.resource
        structlog.contextvars.bind_contextvars(
            listener=listener, method=request.method,
            route=route.canonical if route is not None else "unmatched")
        started = clock.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except BaseException as exc:
            structlog.contextvars.bind_contextvars(error_type=type(exc).__name__)
            raise
        finally:
            log.info("request", status=status,
                     duration_ms=round((clock.monotonic() - started) * 1000, 3))
            structlog.contextvars.clear_contextvars()

    return middleware
