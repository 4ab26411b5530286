"""The federation endpoint over real HTTP: receipts, duplicates, every rejection, no leaks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from caseway.keys.identity import Identity
from caseway.node import audit
from caseway.node.clock import FakeClock
from caseway.node.config import IngressSettings
from caseway.node.threads import CaseLifecycle, Direction, NoLifecycle, ThreadRef, ThreadState
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json
from caseway.protocol.envelope import MAX_ENVELOPE_BYTES, EnvelopeLayerOnly, seal_envelope
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import Receipt, verify_receipt

from conftest import NOW, NodeHarness, StaticPeers

CANARY = "CANARY-3f9b6e21-maria"
Pair = tuple[NodeHarness, NodeHarness]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def referral(text: str = "needs a safe place") -> dict[str, Any]:
    return {"type": "referral", "case_id": "case-0001", "thread_id": "thread-0001", "seq": 1,
            "sent_at": NOW, "sections": {"identity": {"name": text}, "health": {"note": text}}}


def seal(sender: Identity, recipient: Identity, message: Mapping[str, Any] | None = None, *,
         created: int = NOW - 60, expires: int = NOW + 3600,
         message_id: bytes | None = None) -> bytes:
    return seal_envelope(message or referral(), sender=sender.sender,
                         recipient=recipient.participant,
                         recipient_public_key=recipient.encryption.public_key,
                         message_id=message_id or os.urandom(16), created=created,
                         expires=expires, ephemeral_secret=os.urandom(32),
                         policy=EnvelopeLayerOnly()).data


async def post(http: aiohttp.ClientSession, node: NodeHarness, body: Any,
               content_type: str = "application/json") -> tuple[int, bytes, Mapping[str, str]]:
    async with http.post(node.envelopes_url, data=body,
                         headers={"Content-Type": content_type}) as response:
        return response.status, await response.read(), response.headers


def check_receipt(data: bytes, node: NodeHarness, peers: StaticPeers, body: bytes) -> Receipt:
    """A receipt counts only if it verifies against the receiver's key and names our bytes."""
    return verify_receipt(data, keys=peers, expected_recipient=node.participant,
                          expected_digest=crypto.digest(body))


# ----------------------------------------------------------------------------- acceptance


async def test_full_delivery_with_a_verified_receipt(pair: Pair, peers: StaticPeers) -> None:
    embassy, shelter = pair
    sent = await embassy.running.service.send(referral(), shelter.participant, NOW)
    [attempt] = await embassy.running.outbox.deliver_due(NOW)
    assert attempt.outcome == "delivered" and attempt.message_id == sent.message_id
    item = await embassy.running.storage.outbox_item(sent.outbox_id)
    assert item is not None and item.state == "delivered" and item.receipt is not None
    receipt = verify_receipt(item.receipt, keys=peers, expected_recipient=shelter.participant,
                             expected_digest=sent.digest)
    assert receipt.accepted and receipt.message_id == sent.message_id
    [received] = await shelter.running.service.read_case("case-0001", actor="caseworker-1",
                                                         now=NOW)
    assert received.message == referral() and received.peer == embassy.participant
    thread = await shelter.running.storage.thread("thread-0001")
    assert thread is not None and thread.role == "responder" and thread.next_seq_in == 2
    for node in (embassy, shelter):
        verifier = audit.ChainVerifier()
        async for entry in node.running.storage.audit_entries():
            verifier.add(entry)
        assert verifier.report().ok
    events = [e.event async for e in shelter.running.storage.audit_entries()]
    assert events == [audit.RECEIVE, audit.VIEW]


async def test_a_duplicate_delivery_returns_the_original_receipt(
        pair: Pair, peers: StaticPeers, http: aiohttp.ClientSession, clock: FakeClock) -> None:
    embassy, shelter = pair
    body = seal(embassy.identity, shelter.identity)
    status, first, _ = await post(http, shelter, body)
    assert status == 200 and check_receipt(first, shelter, peers, body).accepted
    counts = await shelter.running.storage.row_counts()
    clock.advance(120)  # a later redelivery must not get a new received_at
    status, second, _ = await post(http, shelter, body)
    assert status == 200 and second == first
    assert await shelter.running.storage.row_counts() == counts


async def test_same_id_with_other_bytes_is_replayed(
        pair: Pair, peers: StaticPeers, http: aiohttp.ClientSession) -> None:
    embassy, shelter = pair
    message_id = os.urandom(16)
    status, _, _ = await post(http, shelter, seal(embassy.identity, shelter.identity,
                                                  message_id=message_id))
    assert status == 200
    counts = await shelter.running.storage.row_counts()
    other = seal(embassy.identity, shelter.identity, referral("other"), message_id=message_id)
    status, data, _ = await post(http, shelter, other)
    receipt = check_receipt(data, shelter, peers, other)
    assert (status, receipt.outcome, receipt.error) == (409, "rejected", "replayed")
    assert receipt.message_id == b64encode(message_id)
    assert await shelter.running.storage.row_counts() == counts


# ----------------------------------------------------------------------------- rejections


def _flip_signature(body: bytes) -> bytes:
    outer = parse_json(body, max_bytes=MAX_ENVELOPE_BYTES)
    signature = bytearray(b64decode(outer["signature"]))
    signature[0] ^= 1
    return dump_json({"protected": outer["protected"], "signature": b64encode(bytes(signature))})


def _outer(protected: bytes) -> bytes:
    return dump_json({"protected": b64encode(protected), "signature": b64encode(bytes(64))})


def _rejection_cases(embassy: NodeHarness, shelter: NodeHarness) -> dict[str, tuple[
        bytes | None, str, ErrorCode]]:
    """name -> (body, content type, expected code); body None: sent oversized."""
    third = Identity.generate("ph-legal-cebu")
    stranger = Identity.generate("xx-unknown-agency")
    return {
        "unsupported_media_type": (seal(embassy.identity, shelter.identity), "text/plain",
                                   ErrorCode.UNSUPPORTED_MEDIA_TYPE),
        "too_large": (None, "application/json", ErrorCode.TOO_LARGE),
        "malformed": (b'{"protected": "abc", "protected": "def"}', "application/json",
                      ErrorCode.MALFORMED),
        "not_json": (b"\xff\xfe not json", "application/json", ErrorCode.MALFORMED),
        "header_invalid": (_outer(b'{"v":1}'), "application/json", ErrorCode.HEADER_INVALID),
        "unsupported_version": (_outer(b'{"v":2}'), "application/json",
                                ErrorCode.UNSUPPORTED_VERSION),
        "bad_encoding": (b'{"protected":"e30=","signature":"AA"}', "application/json",
                         ErrorCode.BAD_ENCODING),
        "bad_signature": (_flip_signature(seal(embassy.identity, shelter.identity)),
                          "application/json", ErrorCode.BAD_SIGNATURE),
        "not_for_me": (seal(embassy.identity, third), "application/json", ErrorCode.NOT_FOR_ME),
        "expired": (seal(embassy.identity, shelter.identity, created=NOW - 7200,
                         expires=NOW - 3600), "application/json", ErrorCode.EXPIRED),
        "not_yet_valid": (seal(embassy.identity, shelter.identity, created=NOW + 3600,
                               expires=NOW + 7200), "application/json",
                          ErrorCode.NOT_YET_VALID),
        "unknown_sender": (seal(stranger, shelter.identity), "application/json",
                           ErrorCode.UNKNOWN_SENDER),
    }


REJECTIONS = ("unsupported_media_type", "too_large", "malformed", "not_json", "header_invalid",
              "unsupported_version", "bad_encoding", "bad_signature", "not_for_me", "expired",
              "not_yet_valid", "unknown_sender")


@pytest.mark.parametrize("case", REJECTIONS)
async def test_rejections_are_signed_with_the_spec_status_and_store_nothing(
        case: str, pair: Pair, peers: StaticPeers, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    embassy, shelter = pair
    body, content_type, code = _rejection_cases(embassy, shelter)[case]
    counts = await shelter.running.storage.row_counts()
    sent = b"x" * (MAX_ENVELOPE_BYTES + 1) if body is None else body
    status, data, headers = await post(http, shelter, sent, content_type)
    # A body refused before it was read is named by the digest of the empty string.
    read = b"" if code in (ErrorCode.TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE) else sent
    receipt = check_receipt(data, shelter, peers, read)
    assert (status, receipt.outcome, receipt.error) == (code.http_status, "rejected", code.value)
    assert headers["Content-Type"].startswith("application/json")
    assert ("Retry-After" in headers) == code.retry
    assert await shelter.running.storage.row_counts() == counts


async def test_a_chunked_body_over_the_limit_is_refused_while_reading(
        pair: Pair, peers: StaticPeers, http: aiohttp.ClientSession) -> None:
    _, shelter = pair

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_ENVELOPE_BYTES // 65536 + 2):
            yield b"x" * 65536

    counts = await shelter.running.storage.row_counts()
    status, data, _ = await post(http, shelter, chunks())
    receipt = check_receipt(data, shelter, peers, b"")
    assert (status, receipt.error) == (413, "too_large")
    assert await shelter.running.storage.row_counts() == counts


async def test_a_sender_over_its_rate_gets_429_with_retry_after(
        tmp_path: Path, peers: StaticPeers, clock: FakeClock,
        http: aiohttp.ClientSession) -> None:
    embassy = NodeHarness("ph-embassy-kl", tmp_path, peers, clock)  # keys only, not started
    home = tmp_path / "shelter"
    home.mkdir()
    shelter = NodeHarness("ph-shelter-manila", home, peers, clock,
                          ingress=IngressSettings(sender_rate=0.001, sender_burst=2))
    await shelter.start()
    try:
        statuses = []
        for _ in range(3):
            status, data, headers = await post(http, shelter,
                                               seal(embassy.identity, shelter.identity))
            statuses.append(status)
        assert statuses == [200, 200, 429]
        assert headers["Retry-After"] == "1"
        receipt = verify_receipt(data, keys=peers, expected_recipient=shelter.participant,
                                 expected_digest=receipt_digest(data))
        assert receipt.error == "rate_limited" and receipt.sender == embassy.participant
    finally:
        await shelter.stop()


def receipt_digest(data: bytes) -> bytes:
    protected = b64decode(parse_json(data, max_bytes=4096)["protected"])
    return b64decode(parse_json(protected, max_bytes=4096)["envelope_digest"])


class BrokenLifecycle(NoLifecycle):
    """A lifecycle plug-in with a bug: the node must answer internal_error, not crash."""

    def apply(self, current: ThreadState | None, message: Mapping[str, Any], *,
              ref: ThreadRef, direction: Direction, peer: str, now: int) -> ThreadState:
        raise RuntimeError(f"bug while handling {message!r}")


async def test_an_unexpected_failure_is_a_signed_500_that_logs_no_data(
        tmp_path: Path, peers: StaticPeers, clock: FakeClock,
        http: aiohttp.ClientSession) -> None:
    embassy = NodeHarness("ph-embassy-kl", tmp_path, peers, clock)
    home = tmp_path / "shelter"
    home.mkdir()
    shelter = NodeHarness("ph-shelter-manila", home, peers, clock, threads=BrokenLifecycle())
    await shelter.start()
    try:
        body = seal(embassy.identity, shelter.identity, referral(CANARY))
        counts = await shelter.running.storage.row_counts()
        with capture_logs() as logs:
            status, data, headers = await post(http, shelter, body)
        receipt = check_receipt(data, shelter, peers, body)
        assert (status, receipt.error, headers["Retry-After"]) == (500, "internal_error", "30")
        assert await shelter.running.storage.row_counts() == counts
        assert any(e.get("error_type") == "RuntimeError" for e in logs)
        assert CANARY not in repr(logs)
    finally:
        await shelter.stop()


# ----------------------------------------------------------------------------- confidentiality


async def test_case_contents_never_reach_disk_logs_or_metrics_in_plaintext(
        pair: Pair, http: aiohttp.ClientSession) -> None:
    embassy, shelter = pair
    with capture_logs() as logs:
        await embassy.running.service.send(referral(CANARY), shelter.participant, NOW)
        [attempt] = await embassy.running.outbox.deliver_due(NOW)
        assert attempt.outcome == "delivered"
        [message] = await shelter.running.service.read_case("case-0001", actor="cw", now=NOW)
        async with http.get(shelter.local_url + "/metrics") as response:
            metrics = await response.text()
    assert CANARY in dump_json(message.message).decode()  # it did travel
    assert CANARY not in repr(logs) and CANARY not in metrics
    assert any(e.get("event") == "request" and e.get("status") == 200 for e in logs)
    canary = CANARY.encode()
    for node in (embassy, shelter):
        for path in node.home.iterdir():  # database, WAL, shared memory
            assert canary not in path.read_bytes(), path.name
    await shelter.stop()
    await embassy.stop()
    for node in (embassy, shelter):
        for path in node.home.iterdir():
            assert canary not in path.read_bytes(), path.name


async def test_healthz_and_metrics(pair: Pair, http: aiohttp.ClientSession) -> None:
    embassy, shelter = pair
    async with http.get(shelter.url + "/healthz") as response:
        assert response.status == 200 and await response.json() == {"status": "ok"}
    await embassy.running.service.send(referral(), shelter.participant, NOW)
    async with http.get(embassy.local_url + "/metrics") as response:
        text = await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'caseway_outbox_depth{destination="ph-shelter-manila"} 1' in text
    await embassy.running.outbox.deliver_due(NOW)
    async with http.get(embassy.local_url + "/metrics") as response:
        text = await response.text()
    assert 'caseway_messages_out_total{outcome="delivered"} 1' in text
    assert "caseway_delivery_latency_seconds_count 1" in text
    async with http.get(shelter.local_url + "/metrics") as response:
        assert 'caseway_messages_in_total{outcome="accepted"} 1' in await response.text()


# ----------------------------------------------------------------------------- lifecycle


def lifecycle_message(kind: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "case_id": "case-0002", "thread_id": "thread-0002", "seq": seq,
            "sent_at": NOW, **extra}


async def test_the_lifecycle_runs_on_both_sides_and_refuses_over_http(
        tmp_path: Path, peers: StaticPeers, clock: FakeClock,
        http: aiohttp.ClientSession) -> None:
    nodes = []
    for name in ("ph-embassy-kl", "ph-shelter-manila"):
        home = tmp_path / name
        home.mkdir()
        nodes.append(NodeHarness(name, home, peers, clock, threads=CaseLifecycle()))
    embassy, shelter = nodes
    await embassy.start()
    await shelter.start()
    try:
        referral_message = lifecycle_message("referral", 1, consent={"consent_id": "k-1"},
                                             respond_by=NOW + 3 * 24 * 3600)
        await embassy.running.service.send(referral_message, shelter.participant, NOW)
        await embassy.running.outbox.deliver_due(NOW)
        await shelter.running.service.send(lifecycle_message("accept", 1),
                                           embassy.participant, NOW)
        [attempt] = await shelter.running.outbox.deliver_due(NOW)
        assert attempt.outcome == "delivered"
        for node, role in ((embassy, "initiator"), (shelter, "responder")):
            thread = await node.running.storage.thread("thread-0002")
            assert thread is not None and (thread.state, thread.role) == ("accepted", role)
        # Our own machine refuses a message we may not send, before anything is queued.
        with pytest.raises(CasewayError) as refused:
            await embassy.running.service.send(lifecycle_message("update", 2),
                                               shelter.participant, NOW)
        assert refused.value.code is ErrorCode.INVALID_TRANSITION
        # A peer that sends it anyway gets a signed invalid_transition; nothing is stored.
        counts = await shelter.running.storage.row_counts()
        for message, code in ((lifecycle_message("update", 2), ErrorCode.INVALID_TRANSITION),
                              (lifecycle_message("info_response", 5),
                               ErrorCode.SEQUENCE_GAP)):
            body = seal(embassy.identity, shelter.identity, message)
            status, data, headers = await post(http, shelter, body)
            receipt = check_receipt(data, shelter, peers, body)
            assert (status, receipt.error) == (409, code.value)
            assert ("Retry-After" in headers) == code.retry
        assert await shelter.running.storage.row_counts() == counts
    finally:
        await embassy.stop()
        await shelter.stop()
