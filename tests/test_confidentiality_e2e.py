"""Confidentiality end to end (issue 6, item 5): canaries in every field of a referral, an
update and an attachment travel a full thread and a withdrawal; none leaks, and after
erasure nothing of the case is recoverable from the receiver's database.

Written at the NodeService level (``service.send`` + real federation HTTP between two
in-process nodes running the node's own rules: ReferralPolicy over the persisted consent
store, CaseLifecycle, and the withdrawal cascade that erases and confirms). The local
API's own canary test (tests/test_canary_api.py) covers the API path.

Canaries: every free-text string of the full sample referral (names, notes, narrative,
addresses, safety plan, code word...) and of the receiver's accept and update messages is
replaced by a unique marker wherever the schema allows free text (strings with an enum,
format or pattern keep their value: they cannot carry text), plus an inline attachment
whose content and description are canaries.

The thread: referral → accept → update → consent_withdrawal → (the receiver's cascade
erases the case) → erasure_confirmation, each delivered over HTTP with a verified receipt; plus a
consent-violating referral full of canaries refused by the receiver and one refused by the
sender's own policy (exception texts). Checked, for every canary: captured log events
(structlog and the stdlib ``logging`` records), the text and repr of every exception
raised, both nodes' ``/metrics``, and the bytes of every file in both node homes (the
database, its WAL and WAL index), while running and after shutdown. After erasure: every
stored ciphertext of the case at the receiver (its storage-key blobs and the end-to-end
envelope bytes, each of which the receiver could decrypt with its keys) is gone from
every file of its home, not just unreferenced (secure_delete, WAL truncated).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from caseway.node.clock import FakeClock
from caseway.protocol import crypto
from caseway.protocol.encoding import b64encode, dump_json
from caseway.protocol.envelope import EnvelopeLayerOnly, seal_envelope
from caseway.protocol.errors import CasewayError
from caseway.protocol.messages import validate_message
from caseway.protocol.receipt import verify_receipt

from reliability_helpers import (
    EMBASSY,
    NOW,
    SHELTER,
    Directory,
    LiveNode,
    fixed_identity,
    referral,
)

PREFIX = "ZQXCANARY"


class Canaries:
    def __init__(self) -> None:
        self.values: list[str] = []

    def new(self, where: str) -> str:
        value = f"{PREFIX}{len(self.values):03d}x"
        self.values.append(value)
        return value

    def plant(self, message: dict[str, Any]) -> dict[str, Any]:
        """Replace every free-text string leaf by a canary where the schema accepts it."""
        planted = copy.deepcopy(message)
        for path in list(_string_paths(planted)):
            if path[0] in ("type", "case_id", "thread_id", "consent_id") or "inline" in path \
                    or "digest" in path:
                continue
            container = planted
            for part in path[:-1]:
                container = container[part]
            before = container[path[-1]]
            container[path[-1]] = self.new("/".join(map(str, path)))
            try:
                validate_message(planted)
            except CasewayError:
                container[path[-1]] = before
                self.values.pop()
        return planted

    def find_in(self, data: bytes | str) -> list[str]:
        text = data if isinstance(data, str) else data.decode("latin-1")
        return [c for c in self.values if c in text]


def _string_paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _string_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_paths(value, (*path, index))
    elif isinstance(node, str):
        yield path


def with_canary_attachment(message: dict[str, Any], canaries: Canaries) -> None:
    content = (f"Statement: {canaries.new('attachment/content')} "
               f"{canaries.new('attachment/content2')}").encode()
    message["attachments"] = [{
        "digest": b64encode(crypto.digest(content)), "size": len(content),
        "media_type": "text/plain", "category": "legal",
        "description": canaries.new("attachment/description"),
        "inline": b64encode(content)}]
    validate_message(message)


def files_of(node: LiveNode) -> dict[str, bytes]:
    return {str(p.relative_to(node.home)): p.read_bytes()
            for p in sorted(node.home.rglob("*")) if p.is_file()}


async def deliver(sender: LiveNode, receiver: LiveNode, directory: Directory,
                  message: dict[str, Any]) -> None:
    sent = await sender.running.service.send(message, receiver.participant, NOW)
    attempts = await sender.running.outbox.deliver_due(NOW)
    assert [(a.message_id, a.outcome) for a in attempts] == [(sent.message_id, "delivered")], \
        attempts
    item = await sender.running.storage.outbox_item(sent.outbox_id)
    assert item is not None and item.receipt is not None
    verify_receipt(item.receipt, keys=directory, expected_recipient=receiver.participant,
                   expected_digest=sent.digest)


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


async def test_canaries_never_leak_and_erasure_leaves_nothing_recoverable(
        tmp_path: Path, canaries: Canaries, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(NOW)
    directory = Directory()
    embassy_id, shelter_id = fixed_identity(EMBASSY), fixed_identity(SHELTER)
    directory.add_identity(embassy_id)
    directory.add_identity(shelter_id)
    # The node's own rules: ReferralPolicy over its persisted consent store, CaseLifecycle,
    # and the withdrawal cascade (erase, then confirm) of caseway.node.cases.
    embassy = LiveNode(embassy_id, tmp_path / "embassy", directory, clock)
    shelter = LiveNode(shelter_id, tmp_path / "shelter", directory, clock)
    await embassy.start()
    await shelter.start()

    ref = canaries.plant(referral("canary", now=NOW))
    with_canary_attachment(ref, canaries)
    base = {"case_id": ref["case_id"], "thread_id": ref["thread_id"], "sent_at": NOW}
    accept = canaries.plant({"type": "accept", "seq": 1, **base, "receiver_ref": "x",
                             "note": "x"})
    update = canaries.plant({"type": "update", "seq": 2, **base, "kind": "service_delivered",
                             "service": "safe_shelter", "note": "x"})
    consent_id = ref["consent"]["consent_id"]
    assert len(canaries.values) >= 25, canaries.values  # every free-text field
    exceptions: list[BaseException] = []

    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        await deliver(embassy, shelter, directory, ref)
        await deliver(shelter, embassy, directory, accept)
        await deliver(shelter, embassy, directory, update)
        [received] = [m for m in await shelter.running.service.read_case(
            ref["case_id"], actor="cw-1", now=NOW) if m.message["type"] == "referral"]
        assert received.message == ref  # the canaries did travel, intact
        stored_blobs = await _case_ciphertexts(shelter, ref["case_id"])
        before = files_of(shelter)
        for label, blob in stored_blobs:  # the search finds them while they are stored
            assert any(_shares_a_chunk(blob, data) for data in before.values()), label

        # Refusals whose inputs are full of canaries: their texts must not carry them.
        bad = copy.deepcopy(ref)
        bad["consent"]["scope"]["data_categories"] = ["identity"]
        bad["thread_id"] = referral("canary-bad", now=NOW)["thread_id"]
        try:
            await embassy.running.service.send(bad, SHELTER, NOW)
        except CasewayError as exc:
            exceptions.append(exc)
        envelope = seal_envelope(bad, sender=embassy_id.sender, recipient=SHELTER,
                                 recipient_public_key=shelter_id.encryption.public_key,
                                 message_id=bytes(16), created=NOW, expires=NOW + 60,
                                 ephemeral_secret=bytes([9]) * 32,
                                 policy=EnvelopeLayerOnly()).data
        async with aiohttp.ClientSession() as http:
            async with http.post(shelter.envelopes_url, data=envelope,
                                 headers={"Content-Type": "application/json"}) as response:
                refusal = await response.read()
                assert response.status == 403
            metrics = []
            for node in (embassy, shelter):
                async with http.get(node.local_url + "/metrics") as response:
                    metrics.append(await response.text())

        # Withdrawal: the receiver erases the case and answers with a signed confirmation
        # (its withdrawal cascade), which travels back like any message.
        withdrawal = {"type": "consent_withdrawal", "seq": 2, **base,
                      "consent_id": consent_id, "withdrawn_at": NOW - 10}
        await deliver(embassy, shelter, directory, withdrawal)
        tombstone = await shelter.running.storage.tombstone(ref["case_id"])
        assert tombstone is not None
        assert tombstone.contents_erased >= 3 and tombstone.envelopes_erased >= 2
        [confirmed] = await shelter.running.outbox.deliver_due(NOW)
        assert confirmed.outcome == "delivered"
        thread = await shelter.running.storage.thread(ref["thread_id"])
        assert thread is not None and thread.state == "erased"
        theirs = await embassy.running.storage.thread(ref["thread_id"])
        assert theirs is not None and theirs.state == "erased"
        running_files = {n.participant: files_of(n) for n in (embassy, shelter)}

    assert canaries.find_in(repr(events)) == []
    assert canaries.find_in(caplog.text) == []
    assert canaries.find_in(repr([(r.msg, r.args) for r in caplog.records])) == []
    assert exceptions and all(canaries.find_in(f"{e} {e!r} {e.args}") == []
                              for e in exceptions)
    assert canaries.find_in(refusal) == []
    for text in metrics:
        assert canaries.find_in(text) == []
    for participant, files in running_files.items():
        for name, data in files.items():
            assert canaries.find_in(data) == [], (participant, name)

    # After erasure: none of the case's ciphertexts survives in any receiver file.
    shelter_files = running_files[SHELTER]
    assert "caseway.db" in shelter_files
    for label, blob in stored_blobs:
        for name, data in shelter_files.items():
            assert not _shares_a_chunk(blob, data), (label, name)

    await embassy.stop()
    await shelter.stop()
    for node in (embassy, shelter):
        for name, data in files_of(node).items():
            assert canaries.find_in(data) == [], (node.participant, name)
    for label, blob in stored_blobs:
        for name, data in files_of(shelter).items():
            assert not _shares_a_chunk(blob, data), (label, name, "after shutdown")


async def _case_ciphertexts(node: LiveNode, case: str) -> list[tuple[str, bytes]]:
    """Everything stored for ``case`` that ``node`` could decrypt with its keys."""
    out = [(f"content {c.message_id}", c.blob)
           for c in await node.running.storage.case_contents(case)]
    import sqlite3

    db = sqlite3.connect(f"file:{node.database}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT message_id, envelope FROM envelopes_in WHERE case_id = ? "
                          "AND envelope IS NOT NULL", (case,)).fetchall()
    finally:
        db.close()
    out += [(f"envelope {mid}", _ciphertext_text(bytes(env))) for mid, env in rows]
    assert len(out) >= 4
    return out


def _ciphertext_text(envelope: bytes) -> bytes:
    """The part of a stored envelope that is the sealed box (as it appears in the stored
    bytes: base64url inside the base64url ``protected``). The rest is the cleartext header
    (ids, times, participants, key ids), which is no secret and which other envelopes of
    the same sender share in part."""
    import json

    from caseway.protocol.encoding import b64decode

    protected_text = json.loads(envelope)["protected"].encode()
    header = b64decode(protected_text.decode())
    start = envelope.index(protected_text)
    offset = (header.index(b'"ciphertext":"') + 16) // 3 * 4 + 4  # whole base64 blocks in
    return envelope[start + offset:start + len(protected_text) - 8]


def _shares_a_chunk(blob: bytes, data: bytes, size: int = 24) -> bool:
    """Whether any ``size``-byte piece of ``blob`` (taken every ``size`` bytes, so every
    surviving run of 2*size bytes is caught) appears in ``data``."""
    return any(blob[i:i + size] in data for i in range(0, max(1, len(blob) - size + 1), size))


def test_dump_json_helper_is_what_the_node_stores() -> None:
    # A canary written as JSON text is found as such (the search is over raw bytes).
    canaries = Canaries()
    value = canaries.new("x")
    assert canaries.find_in(dump_json({"a": value})) == [value]
