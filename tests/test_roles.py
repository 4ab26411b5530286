"""Every local API route refuses a missing token and every role that must not use it."""

from __future__ import annotations

import re

from caseway.node.api import ROUTES
from caseway.node.tokens import ROLE_OPERATIONS, ROLES

from conftest import ApiPair

PUBLIC = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/api/v1/openapi.json")}


def concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "AAAAAAAAAAAAAAAAAAAAAA", path)


async def test_every_route_refuses_a_missing_or_bad_token(api_pair: ApiPair) -> None:
    node = api_pair.embassy
    counts = await node.harness.running.storage.row_counts()
    for method, path, operation, _ in ROUTES:
        body = {} if method in ("POST", "DELETE") else None
        for token in (None, "cw_" + "A" * 43, "Basic abc", node.tokens["caseworker"] + "x"):
            reply = await node.call(method, concrete(path), body, role=None, token=token)
            assert reply.status == 401, (operation, token)
            assert reply.content_type == "application/problem+json"
            assert reply.body["type"] == "urn:caseway:error:unauthorized"
    assert await node.harness.running.storage.row_counts() == counts


async def test_every_route_refuses_every_role_that_must_not_use_it(api_pair: ApiPair) -> None:
    node = api_pair.embassy
    counts = await node.harness.running.storage.row_counts()
    checked = 0
    for method, path, operation, _ in ROUTES:
        allowed = {role for role in ROLES if operation in ROLE_OPERATIONS[role]}
        assert allowed, f"{operation} is usable by no role"
        for role in set(ROLES) - allowed:
            reply = await node.call(method, concrete(path),
                                    {} if method != "GET" else None, role=role)
            assert reply.status == 403, (operation, role)
            assert reply.body["type"] == "urn:caseway:error:forbidden"
            checked += 1
        for role in allowed:  # allowed roles get past authorisation (any other answer)
            reply = await node.call(method, concrete(path),
                                    {} if method != "GET" else None, role=role)
            assert reply.body.get("type") != "urn:caseway:error:forbidden" \
                if isinstance(reply.body, dict) else True, (operation, role)
            assert reply.status not in (401, 500), (operation, role, reply.body)
    assert checked > 40
    after = await node.harness.running.storage.row_counts()
    # Only the audit log and token table may change (views, a token revoke of nothing).
    assert {k: v for k, v in after.items() if k not in ("audit",)} == \
        {k: v for k, v in counts.items() if k not in ("audit",)}


def test_admin_and_auditor_never_read_case_content() -> None:
    content = {"caseTimeline", "createReferral", "referOnward", "respondToInformationRequest"}
    assert not content & ROLE_OPERATIONS["admin"]
    assert not content & ROLE_OPERATIONS["auditor"]


async def test_public_routes_need_no_token(api_pair: ApiPair) -> None:
    for method, path in PUBLIC:
        reply = await api_pair.shelter.call(method, path, role=None)
        assert reply.status == 200, path
