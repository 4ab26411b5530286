"""The local API over real HTTP between two real nodes: the whole referral thread."""

from __future__ import annotations

from typing import Any

from caseway.node import audit

from conftest import NOW, SHELTER, ApiPair, ApiReply, referral_request


def created(reply: ApiReply) -> dict[str, Any]:
    assert reply.status == 201, reply.body
    assert isinstance(reply.body, dict)
    return reply.body


async def refer_and_deliver(pair: ApiPair, request: dict[str, Any] | None = None
                            ) -> dict[str, Any]:
    sent = created(await pair.embassy.call("POST", "/api/v1/cases",
                                           request or referral_request()))
    assert await pair.deliver() == 1
    return sent


def types_of(timeline: dict[str, Any], direction: str | None = None) -> list[str]:
    return [m["type"] for m in timeline["messages"]
            if direction is None or m["direction"] == direction]


async def test_full_thread_referral_to_outcome(api_pair: ApiPair) -> None:
    pair = api_pair
    sent = await refer_and_deliver(pair)
    assert sent["type"] == "referral" and sent["seq"] == 1 and sent["destination"] == SHELTER
    thread_id, case_id = sent["thread_id"], sent["case_id"]

    inbox = await pair.shelter.call("GET", "/api/v1/inbox")
    [thread] = inbox.body["threads"]
    assert (thread["thread_id"], thread["state"], thread["role"]) == (thread_id, "sent",
                                                                      "receiver")
    base = f"/api/v1/threads/{thread_id}"
    created(await pair.shelter.call("POST", f"{base}/accept", {"receiver_ref": "NSWC-311"}))
    created(await pair.shelter.call("POST", f"{base}/info-requests",
                                    {"categories": ["location_return"]}))
    assert await pair.deliver() == 2
    answer = {"sections": {"location_return": {"current_country": "MY",
                                               "expected_return_date": "2026-01-30"}}}
    reply = created(await pair.embassy.call("POST", f"{base}/info-responses", answer))
    assert reply["seq"] == 2
    assert await pair.deliver() == 1
    created(await pair.shelter.call("POST", f"{base}/updates",
                                    {"kind": "note", "note": "arrived safely"}))
    created(await pair.shelter.call("POST", f"{base}/close",
                                    {"outcome": "services_completed",
                                     "services_delivered": ["safe_shelter"]}))
    assert await pair.deliver() == 2

    # The embassy sees the outcome: the closed loop.
    timeline = (await pair.embassy.call("GET", f"/api/v1/cases/{case_id}")).body
    assert types_of(timeline) == ["referral", "accept", "info_request", "info_response",
                                  "update", "close"]
    [thread] = timeline["threads"]
    assert thread["state"] == "closed" and thread["role"] == "referrer"
    close = timeline["messages"][-1]
    assert close["message"]["outcome"] == "services_completed"
    referral = timeline["messages"][0]
    assert referral["delivery"]["state"] == "delivered"
    assert referral["delivery"]["receipt"]["outcome"] == "accepted"
    assert referral["message"]["sections"]["identity"]["given_name"] == "Lorna"
    shelter_view = (await pair.shelter.call("GET", f"/api/v1/cases/{case_id}")).body
    assert shelter_view["threads"][0]["state"] == "closed"
    assert shelter_view["messages"][0]["receipt"]["outcome"] == "accepted"

    # Reading case content is audited, with the token's name as the actor.
    views = [e async for e in pair.embassy.harness.running.storage.audit_entries()
             if e.event == audit.VIEW]
    assert [(v.actor, v.subject) for v in views] == [("caseworker-1", case_id)]
    report = (await pair.embassy.call("GET", "/api/v1/audit/verify", role="auditor")).body
    assert report["ok"] is True and report["entries"] > 0

    # Listings are metadata and are not views.
    cases = (await pair.embassy.call("GET", "/api/v1/cases")).body["cases"]
    assert [c["case_id"] for c in cases] == [case_id] and cases[0]["erased"] is False
    outbox = (await pair.embassy.call("GET", "/api/v1/outbox?state=delivered")).body
    assert [i["type"] for i in outbox["items"]] == ["referral", "info_response"]


async def test_without_feedback_consent_the_embassy_gets_no_updates(api_pair: ApiPair) -> None:
    pair = api_pair
    sent = await refer_and_deliver(pair, referral_request(feedback_allowed=False))
    base = f"/api/v1/threads/{sent['thread_id']}"
    created(await pair.shelter.call("POST", f"{base}/accept", {}))
    counts = await pair.shelter.harness.running.storage.row_counts()
    refused = await pair.shelter.call("POST", f"{base}/updates",
                                      {"kind": "note", "note": "arrived"})
    assert refused.status == 403 and refused.content_type == "application/problem+json"
    assert refused.body["type"] == "urn:caseway:error:consent_violation"
    assert refused.body["section"] == "feedback"
    refused = await pair.shelter.call("POST", f"{base}/close",
                                      {"outcome": "services_completed"})
    assert refused.status == 403 and refused.body["section"] == "feedback"
    assert await pair.shelter.harness.running.storage.row_counts() == counts
    created(await pair.shelter.call("POST", f"{base}/close",
                                    {"outcome": "outcome_not_shared"}))
    assert await pair.deliver() == 2
    timeline = (await pair.embassy.call("GET", f"/api/v1/cases/{sent['case_id']}")).body
    assert types_of(timeline, "in") == ["accept", "close"]
    assert timeline["messages"][-1]["message"]["outcome"] == "outcome_not_shared"
    assert timeline["threads"][0]["state"] == "closed"


async def test_onward_referral_and_cancel(api_pair: ApiPair) -> None:
    pair = api_pair
    sent = await refer_and_deliver(pair)
    base = f"/api/v1/threads/{sent['thread_id']}"
    # Cancel is a supervisor's operation and the referrer's message.
    refused = await pair.embassy.call("POST", f"{base}/cancel", {"reason": "duplicate"})
    assert refused.status == 403 and refused.body["type"] == "urn:caseway:error:forbidden"
    wrong_side = await pair.shelter.call("POST", f"{base}/cancel", {"reason": "duplicate"},
                                         role="supervisor")
    assert wrong_side.status == 409
    assert wrong_side.body["type"] == "urn:caseway:error:invalid_transition"
    # Onward before accepting is refused by the lifecycle.
    onward = {"to": "ph-embassy-kl", "purposes": ["service_provision"],
              "survivor_ref": "NSWC-311", "sections": {"needs": {
                  "services_requested": ["legal_aid"]}}}
    early = await pair.shelter.call("POST", f"{base}/onward-referrals", onward)
    assert early.status == 409
    created(await pair.embassy.call("POST", f"{base}/cancel",
                                    {"reason": "sent_in_error"}, role="supervisor"))
    assert await pair.deliver() == 1
    inbox = (await pair.shelter.call("GET", "/api/v1/inbox?state=cancelled")).body
    assert [t["thread_id"] for t in inbox["threads"]] == [sent["thread_id"]]


async def test_bad_input_is_a_problem_and_stores_nothing(api_pair: ApiPair) -> None:
    pair = api_pair
    storage = pair.embassy.harness.running.storage
    counts = await storage.row_counts()
    cases = [
        (400, "malformed", dict(data=b'{"to": "x",', body=None)),
        (400, "malformed", dict(data=b'{"to": 1, "to": 2}', body=None)),
        (400, "malformed", dict(data=b'{"respond_by": 1.5}', body=None)),
        (415, "unsupported_media_type", dict(data=b"to=x", body=None,
                                             content_type="application/x-www-form-urlencoded")),
        (422, "schema_invalid", dict(body=[1, 2])),
        (422, "schema_invalid", dict(body={**referral_request(), "extra": 1})),
        (422, "schema_invalid", dict(body={**referral_request(), "sections": "lots"})),
        (422, "schema_invalid", dict(body={**referral_request(), "respond_by": "soon"})),
        (422, "schema_invalid", dict(body={**referral_request(), "consent": []})),
        (422, "schema_invalid", dict(body={**referral_request(), "purposes": ["fun"]})),
        (404, "not_found", dict(body={**referral_request(), "to": "nobody"})),
    ]
    for status, code, kwargs in cases:
        reply = await pair.embassy.call("POST", "/api/v1/cases", **kwargs)  # type: ignore[arg-type]
        assert (reply.status, reply.content_type) == (status, "application/problem+json"), \
            (code, reply.body)
        assert reply.body["type"] == f"urn:caseway:error:{code}"
        assert {"type", "title", "status", "detail"} <= set(reply.body)
        assert reply.body["status"] == status
    for method, path, status, code in (
            ("GET", "/api/v1/nothing", 404, "not_found"),
            ("PUT", "/api/v1/cases", 405, "method_not_allowed"),
            ("GET", "/api/v1/cases/unknown-case", 404, "not_found"),
            ("GET", "/api/v1/outbox?limit=0", 400, "malformed"),
            ("GET", "/api/v1/outbox?state=lost", 400, "malformed"),
            ("POST", "/api/v1/threads/unknown/accept", 404, "not_found")):
        reply = await pair.embassy.call(method, path, {} if method != "GET" else None)
        assert (reply.status, reply.content_type) == (status, "application/problem+json"), \
            (path, reply.body)
        assert reply.body["type"] == f"urn:caseway:error:{code}"
    assert await storage.row_counts() == counts


async def test_consent_violation_names_the_section_and_queues_nothing(
        api_pair: ApiPair) -> None:
    pair = api_pair
    storage = pair.embassy.harness.running.storage
    counts = await storage.row_counts()
    request = referral_request()
    request["consent"]["scope"]["data_categories"].remove("migration_status")
    reply = await pair.embassy.call("POST", "/api/v1/cases", request)
    assert reply.status == 403 and reply.content_type == "application/problem+json"
    assert reply.body["type"] == "urn:caseway:error:consent_violation"
    assert reply.body["section"] == "migration_status"
    assert await storage.row_counts() == counts
    assert await storage.outbox_depths() == {}


async def test_the_firewall_refuses_immigration_enforcement(api_pair: ApiPair) -> None:
    from caseway.keys.identity import Identity

    pair = api_pair
    immigration = Identity.generate("my-immigration")
    pair.peers.add(immigration, endpoint="http://127.0.0.1:9", sectors=(
        "immigration_enforcement",))
    request = referral_request()
    request["to"] = immigration.participant
    request["consent"]["scope"]["recipients"]["participants"].append(immigration.participant)
    counts = await pair.embassy.harness.running.storage.row_counts()
    reply = await pair.embassy.call("POST", "/api/v1/cases", request)
    assert reply.status == 403 and reply.body["type"] == "urn:caseway:error:firewall"
    assert await pair.embassy.harness.running.storage.row_counts() == counts


async def test_tokens_are_managed_by_admins_and_stored_hashed(api_pair: ApiPair) -> None:
    pair = api_pair
    made = created(await pair.embassy.call("POST", "/api/v1/tokens",
                                           {"name": "sw-08", "role": "caseworker"},
                                           role="admin"))
    token = made["token"]
    assert (await pair.embassy.call("GET", "/api/v1/cases", token=token)).status == 200
    dup = await pair.embassy.call("POST", "/api/v1/tokens",
                                  {"name": "sw-08", "role": "caseworker"}, role="admin")
    assert dup.status == 409
    bad = await pair.embassy.call("POST", "/api/v1/tokens", {"name": "x", "role": "root"},
                                  role="admin")
    assert bad.status == 422 and bad.body["section"] == "role"
    listed = (await pair.embassy.call("GET", "/api/v1/tokens", role="admin")).body["tokens"]
    assert "sw-08" in [t["name"] for t in listed] and "token" not in listed[0]
    database = pair.embassy.harness.database.read_bytes()
    assert token.encode() not in database
    revoked = await pair.embassy.call("DELETE", "/api/v1/tokens/sw-08", role="admin")
    assert revoked.status == 200 and revoked.body["revoked_at"] == NOW
    again = await pair.embassy.call("GET", "/api/v1/cases", token=token)
    assert again.status == 401 and again.body["type"] == "urn:caseway:error:unauthorized"


async def test_health_metrics_and_the_openapi_document_are_public(api_pair: ApiPair) -> None:
    node = api_pair.embassy
    health = await node.call("GET", "/healthz", role=None)
    assert health.status == 200 and health.body == {"status": "ok"}
    metrics = await node.call("GET", "/metrics", role=None)
    assert metrics.status == 200 and b"caseway_messages_in_total" in metrics.raw
    document = await node.call("GET", "/api/v1/openapi.json", role=None)
    assert document.status == 200 and document.body["openapi"].startswith("3.1")
