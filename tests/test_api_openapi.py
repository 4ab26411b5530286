"""node/openapi.json describes exactly the routes the local API serves."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from caseway.node.api import build_local_api, openapi_document
from caseway.node.tokens import ROLE_OPERATIONS, ROLES

from conftest import ApiPair

DOCUMENT = Path(__file__).resolve().parent.parent / "node" / "openapi.json"


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text="")


def registered(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method.lower(), path))
    return routes


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


async def test_paths_and_methods_equal_the_registered_routes(api_pair: ApiPair) -> None:
    app = build_local_api(api_pair.embassy.harness.running.cases,
                          api_pair.embassy.harness.clock, _metrics)
    document = json.loads(DOCUMENT.read_text("utf-8"))
    assert registered(app) == documented(document)
    assert document == openapi_document()  # the package data is this file
    assert document["openapi"] == "3.1.0"


def test_roles_in_the_document_equal_the_role_matrix() -> None:
    document = openapi_document()
    for item in document["paths"].values():
        for operation in item.values():
            op = operation["operationId"]
            if "x-caseway-roles" not in operation:
                assert operation["security"] == [], op
                assert not any(op in ops for ops in ROLE_OPERATIONS.values()), op
                continue
            assert set(operation["x-caseway-roles"]) == {
                role for role in ROLES if op in ROLE_OPERATIONS[role]}, op


def test_every_error_response_is_problem_json() -> None:
    document = openapi_document()
    responses = document["components"]["responses"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                ref = response["$ref"].rsplit("/", 1)[-1]
                content = responses[ref]["content"]
                assert list(content) == ["application/problem+json"], (path, method, status)
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"}
            if "x-caseway-roles" in operation:
                assert {"401", "403"} <= set(operation["responses"]), (path, method)
            if "requestBody" in operation:
                assert {"400", "415", "422"} <= set(operation["responses"]), (path, method)


def test_every_schema_reference_resolves() -> None:
    document = openapi_document()
    text = json.dumps(document)
    import re
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in document["components"][ref[0]], ref


def response_schema(document: dict, path: str, method: str, status: str) -> dict:
    schema = document["paths"][path][method]["responses"][status]["content"][
        "application/json"]["schema"]
    return {**schema, "components": document["components"]}


async def test_responses_match_their_documented_schemas(api_pair: ApiPair) -> None:
    from jsonschema import Draft202012Validator

    from conftest import referral_request

    document = openapi_document()

    def check(path: str, method: str, status: str, body: object) -> None:
        schema = response_schema(document, path, method, status)
        errors = list(Draft202012Validator(schema).iter_errors(body))
        assert not errors, (path, method, [e.message[:200] for e in errors])

    pair = api_pair
    reply = await pair.embassy.call("POST", "/api/v1/cases", referral_request())
    check("/api/v1/cases", "post", "201", reply.body)
    await pair.deliver()
    sent = reply.body
    reply = await pair.shelter.call("POST", f"/api/v1/threads/{sent['thread_id']}/accept", {})
    check("/api/v1/threads/{thread_id}/accept", "post", "201", reply.body)
    await pair.deliver()
    for node in (pair.embassy, pair.shelter):
        check("/api/v1/cases/{case_id}", "get", "200",
              (await node.call("GET", f"/api/v1/cases/{sent['case_id']}")).body)
        check("/api/v1/cases", "get", "200", (await node.call("GET", "/api/v1/cases")).body)
        check("/api/v1/inbox", "get", "200", (await node.call("GET", "/api/v1/inbox")).body)
        check("/api/v1/outbox", "get", "200", (await node.call("GET", "/api/v1/outbox")).body)
        check("/api/v1/audit", "get", "200",
              (await node.call("GET", "/api/v1/audit", role="auditor")).body)
        check("/api/v1/audit/verify", "get", "200",
              (await node.call("GET", "/api/v1/audit/verify", role="auditor")).body)
        check("/api/v1/tokens", "get", "200",
              (await node.call("GET", "/api/v1/tokens", role="admin")).body)
    reply = await pair.embassy.call("POST", f"/api/v1/consents/{sent['consent_id']}/withdrawal",
                                    {}, role="supervisor")
    check("/api/v1/consents/{consent_id}/withdrawal", "post", "201", reply.body)
    await pair.deliver()
    for node in (pair.embassy, pair.shelter):
        check("/api/v1/consents/{consent_id}/erasure", "get", "200", (await node.call(
            "GET", f"/api/v1/consents/{sent['consent_id']}/erasure")).body)
    reply = await pair.embassy.call("POST", "/api/v1/tokens", {"name": "n1", "role": "admin"},
                                    role="admin")
    check("/api/v1/tokens", "post", "201", reply.body)
    reply = await pair.embassy.call("DELETE", "/api/v1/tokens/n1", role="admin")
    check("/api/v1/tokens/{name}", "delete", "200", reply.body)
