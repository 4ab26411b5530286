"""The local API: staff and the agency's case-management system talk to their own node.

Rules of this module (SPEC.md "Local API"):

1. Thin handlers: each parses and checks its input at the edge (query parameters, a
   strict JSON body), calls one :class:`~caseway.node.cases.Casework` method and returns
   JSON. Every protocol decision is made below it.
2. One place turns errors into HTTP: :func:`problem_middleware`. A ``CasewayError``
   becomes RFC 9457 problem+json (``type`` ``urn:caseway:error:<code>``, ``title``,
   ``status``, ``detail``, ``section`` when set); aiohttp's own 404/405/413 become the same
   shape; anything unexpected is ``internal_error`` 500 with the exception *type* logged.
   A detail never quotes a value from the request (codes and field names only).
3. Every route is registered with its OpenAPI ``operationId`` (:data:`ROUTES`); the
   wrapper authenticates the bearer token (401) and checks the role matrix of
   :mod:`caseway.node.tokens` (403) before the handler runs. ``/healthz``, ``/metrics``
   and the OpenAPI document are public. The token's name is the audit actor.
4. ``node/openapi.json`` describes exactly these routes (a test checks both directions).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from caseway.keys.search import Query, parse_day
from caseway.protocol.encoding import parse_json
from caseway.protocol.errors import CasewayError, ErrorCode

from . import audit
from .cases import Casework
from .clock import Clock
from .logs import request_logging
from .tokens import ROLE_OPERATIONS, Staff, authenticate, check_name_and_role, token_json
from .tokens import create_token as create_token

log = structlog.get_logger("caseway.api")

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 1024 * 1024
API = "/api/v1"
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
#: Problem codes for aiohttp's own HTTP errors (rule 2).
HTTP_CODES = {400: "malformed", 404: "not_found", 405: "method_not_allowed",
              413: "too_large", 415: "unsupported_media_type"}

Handler = Callable[[web.Request, Staff], Awaitable[web.StreamResponse]]
PublicHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class LocalApi:
    casework: Casework
    clock: Clock


LOCAL_API = web.AppKey("local_api", LocalApi)


# --------------------------------------------------------------------------- problems


def problem(status: int, code: str, detail: str, *, title: str | None = None,
            section: str | None = None, retry: bool | None = None) -> web.Response:
    body: dict[str, Any] = {"type": f"urn:caseway:error:{code}",
                            "title": title or code.replace("_", " "), "status": status,
                            "detail": detail}
    if section is not None:
        body["section"] = section
    if retry is not None:
        body["retry"] = retry
    return web.Response(status=status, body=json.dumps(body).encode("utf-8"),
                        content_type=PROBLEM_JSON)


def error_problem(exc: CasewayError) -> web.Response:
    code = exc.code
    return problem(code.http_status, code.value, exc.detail, title=code.info.meaning,
                   section=exc.section, retry=code.retry)


@web.middleware
async def problem_middleware(request: web.Request,
                             handler: PublicHandler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CasewayError as exc:
        structlog.contextvars.bind_contextvars(outcome=exc.code.value)
        return error_problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        return problem(exc.status, code, exc.reason)
    except Exception as exc:
        # The exception text may quote request data: log its type only (SPEC "Operations").
        structlog.contextvars.bind_contextvars(error_type=type(exc).__name__)
        log.error("local_api_failed", error_type=type(exc).__name__)
        return error_problem(CasewayError(ErrorCode.INTERNAL_ERROR))


# --------------------------------------------------------------------------- edge parsing


async def json_body(request: web.Request) -> Any:
    """A strict JSON body: 415 unless ``application/json``; 413 over 1 MiB; 400 if not
    strict JSON (SPEC.md §2.1)."""
    if request.content_type != "application/json":
        raise CasewayError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "request body must be "
                           "application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise CasewayError(ErrorCode.TOO_LARGE, f"request body over {MAX_BODY_BYTES} bytes")
    data = await request.read()
    return parse_json(data, max_bytes=MAX_BODY_BYTES)


def query_int(request: web.Request, name: str, default: int, *, low: int = 1,
              high: int = MAX_LIMIT) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise CasewayError(ErrorCode.MALFORMED, f"query parameter {name} must be an integer "
                           f"from {low} to {high}", section=name)
    return int(raw)


def query_bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false", "1", "0"):
        raise CasewayError(ErrorCode.MALFORMED, f"query parameter {name} must be true or "
                           "false", section=name)
    return raw in ("true", "1")


def query_text(request: web.Request, name: str, *, choices: tuple[str, ...] = ()
               ) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not 0 < len(raw) <= 128 or (choices and raw not in choices):
        raise CasewayError(ErrorCode.MALFORMED, f"query parameter {name} is not valid",
                           section=name)
    return raw


def _ctx(request: web.Request) -> tuple[Casework, int]:
    api = request.app[LOCAL_API]
    return api.casework, api.clock.now()


def created(value: Any) -> web.Response:
    return web.json_response(_sent(value), status=201)


def _sent(sent: Any) -> dict[str, Any]:
    return {"message_id": sent.message_id, "case_id": sent.case_id,
            "thread_id": sent.thread_id, "consent_id": sent.consent_id, "type": sent.kind,
            "seq": sent.seq, "destination": sent.destination, "outbox_id": sent.outbox_id,
            "expires": sent.expires}


# --------------------------------------------------------------------------- handlers


async def create_referral(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    body = await json_body(request)
    return created(await casework.create_referral(body, actor=staff.name, now=now))


async def list_cases(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    limit = query_int(request, "limit", DEFAULT_LIMIT)
    return web.json_response({"cases": await casework.list_cases(limit=limit, now=now)})


async def case_timeline(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    return web.json_response(await casework.timeline(request.match_info["case_id"],
                                                     actor=staff.name, now=now))


async def list_inbox(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    threads = await casework.inbox(state=query_text(request, "state"),
                                   limit=query_int(request, "limit", DEFAULT_LIMIT), now=now)
    return web.json_response({"threads": threads})


async def list_outbox(request: web.Request, staff: Staff) -> web.Response:
    casework, _ = _ctx(request)
    items = await casework.outbox(
        state=query_text(request, "state", choices=("queued", "delivered", "dead")),
        destination=query_text(request, "destination"),
        limit=query_int(request, "limit", DEFAULT_LIMIT))
    return web.json_response({"items": items})


def thread_action(kind: str) -> Handler:
    async def handler(request: web.Request, staff: Staff) -> web.Response:
        casework, now = _ctx(request)
        body = await json_body(request)
        return created(await casework.act(request.match_info["thread_id"], kind, body,
                                          actor=staff.name, now=now))
    return handler


async def refer_onward(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    body = await json_body(request)
    return created(await casework.refer_onward(request.match_info["thread_id"], body,
                                               actor=staff.name, now=now))


async def withdraw_consent(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    body = await json_body(request)
    status = await casework.withdraw_consent(request.match_info["consent_id"], body,
                                             actor=staff.name, now=now)
    return web.json_response(status, status=201)


async def erasure_status(request: web.Request, staff: Staff) -> web.Response:
    casework, _ = _ctx(request)
    return web.json_response(await casework.erasure_status(request.match_info["consent_id"]))


async def search_directory(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    day = query_text(request, "day")
    try:
        open_on = None if day is None else parse_day(day)
    except ValueError:
        raise CasewayError(ErrorCode.MALFORMED, "query parameter day must be a weekday",
                           section="day") from None
    query = Query(country=query_text(request, "country"),
                  sector=query_text(request, "sector"),
                  service=query_text(request, "service"),
                  language=query_text(request, "language"), open_on=open_on,
                  weekend=bool(query_bool(request, "weekend")),
                  evening=bool(query_bool(request, "evening")),
                  open_at=now if query_bool(request, "open_now") else None,
                  has_endpoint=query_bool(request, "has_endpoint"))
    return web.json_response({"participants": casework.search_directory(query)})


async def refresh_directory(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    return web.json_response(casework.refresh_directory(now))


async def list_tokens(request: web.Request, staff: Staff) -> web.Response:
    casework, _ = _ctx(request)
    tokens = await casework.storage.tokens()
    return web.json_response({"tokens": [token_json(t) for t in tokens]})


async def create_token_handler(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"name", "role"}:
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "/: members are name and role",
                           section="request")
    name, role = check_name_and_role(body.get("name"), body.get("role"))
    token = await create_token(casework.storage, name=name, role=role, now=now,
                               actor=staff.name)
    return web.json_response({"name": name, "role": role, "token": token}, status=201)


async def revoke_token(request: web.Request, staff: Staff) -> web.Response:
    casework, now = _ctx(request)
    revoked = await casework.storage.revoke_token(request.match_info["name"], at=now,
                                                  actor=staff.name)
    if revoked is None:
        raise CasewayError(ErrorCode.NOT_FOUND, "no such token")
    return web.json_response(token_json(revoked))


async def list_audit(request: web.Request, staff: Staff) -> web.Response:
    casework, _ = _ctx(request)
    entries = await casework.storage.audit_page(
        after=query_int(request, "after", 0, low=0, high=2**53 - 1),
        limit=query_int(request, "limit", DEFAULT_LIMIT))
    return web.json_response({"entries": [
        {"seq": e.seq, "at": e.at, "event": e.event, "actor": e.actor, "subject": e.subject,
         "detail": dict(e.detail), "hash": e.hash.hex()} for e in entries]})


async def verify_audit(request: web.Request, staff: Staff) -> web.Response:
    casework, _ = _ctx(request)
    verifier = audit.ChainVerifier()
    async for entry in casework.storage.audit_entries():
        verifier.add(entry)
    report = verifier.report()
    return web.json_response({"ok": report.ok, "entries": report.entries,
                              "head": report.head.hex(), "first_bad_seq": report.first_bad_seq,
                              "problem": report.problem})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_bytes(), content_type="application/json")


@cache
def openapi_bytes() -> bytes:
    return (resources.files("caseway.node") / "openapi.json").read_bytes()


def openapi_document() -> dict[str, Any]:
    value = json.loads(openapi_bytes())
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- routes

#: (method, path, operationId, handler). ``None`` handler: public route added separately.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", f"{API}/cases", "createReferral", create_referral),
    ("GET", f"{API}/cases", "listCases", list_cases),
    ("GET", f"{API}/cases/{{case_id}}", "caseTimeline", case_timeline),
    ("GET", f"{API}/inbox", "listInbox", list_inbox),
    ("GET", f"{API}/outbox", "listOutbox", list_outbox),
    ("POST", f"{API}/threads/{{thread_id}}/accept", "acceptReferral", thread_action("accept")),
    ("POST", f"{API}/threads/{{thread_id}}/decline", "declineReferral",
     thread_action("decline")),
    ("POST", f"{API}/threads/{{thread_id}}/info-requests", "requestInformation",
     thread_action("info_request")),
    ("POST", f"{API}/threads/{{thread_id}}/info-responses", "respondToInformationRequest",
     thread_action("info_response")),
    ("POST", f"{API}/threads/{{thread_id}}/updates", "sendUpdate", thread_action("update")),
    ("POST", f"{API}/threads/{{thread_id}}/close", "closeThread", thread_action("close")),
    ("POST", f"{API}/threads/{{thread_id}}/cancel", "cancelReferral", thread_action("cancel")),
    ("POST", f"{API}/threads/{{thread_id}}/onward-referrals", "referOnward", refer_onward),
    ("POST", f"{API}/consents/{{consent_id}}/withdrawal", "withdrawConsent", withdraw_consent),
    ("GET", f"{API}/consents/{{consent_id}}/erasure", "erasureStatus", erasure_status),
    ("GET", f"{API}/directory/participants", "searchDirectory", search_directory),
    ("POST", f"{API}/directory/refresh", "refreshDirectory", refresh_directory),
    ("GET", f"{API}/tokens", "listTokens", list_tokens),
    ("POST", f"{API}/tokens", "createToken", create_token_handler),
    ("DELETE", f"{API}/tokens/{{name}}", "revokeToken", revoke_token),
    ("GET", f"{API}/audit", "listAudit", list_audit),
    ("GET", f"{API}/audit/verify", "verifyAudit", verify_audit),
)
OPERATIONS = frozenset(op for _, _, op, _ in ROUTES)
assert all(ops <= OPERATIONS for ops in ROLE_OPERATIONS.values())


def guarded(operation: str, handler: Handler) -> PublicHandler:
    """Rule 3: authenticate, check the role, then run the handler."""
    async def run(request: web.Request) -> web.StreamResponse:
        api = request.app[LOCAL_API]
        staff = await authenticate(api.casework.storage,
                                   request.headers.get("Authorization"))
        staff.require(operation)
        structlog.contextvars.bind_contextvars(operation=operation, staff_role=staff.role)
        return await handler(request, staff)
    return run


def build_local_api(casework: Casework, clock: Clock,
                    metrics: PublicHandler) -> web.Application:
    """The local API application (the listener is started by ``app.NodeServer``)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[request_logging("local_api", clock),
                                       problem_middleware])
    app[LOCAL_API] = LocalApi(casework, clock)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get(f"{API}/openapi.json", openapi, allow_head=False)
    for method, path, operation, handler in ROUTES:
        app.router.add_route(method, path, guarded(operation, handler), name=operation)
    return app


__all__ = ["ROUTES", "LocalApi", "build_local_api", "create_token", "openapi_document",
           "problem"]
