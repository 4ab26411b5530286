"""The hostile-input corpus against a real node (issue 6, item 3).

``tests/corpus/`` holds the inputs (``generate.py`` writes them; ``manifest.json`` gives
each one's expected HTTP status and error code). The receiver runs the real ReferralPolicy
and CaseLifecycle on an ephemeral loopback port. For every input:

- the answer has the documented status; where the federation handler answers, it is a
  signed rejection receipt that verifies against the node's key, names the digest of the
  bytes sent (or of nothing, when refused before reading) and the documented code, with
  ``Retry-After`` exactly when the code is retryable;
- the node stays up (``/healthz`` answers after every input);
- slow-loris inputs are cut off by the body deadline (set to 1 s here; 30 s by default)
  and answered ``malformed`` or closed, within a bounded wait.

After the whole corpus, nothing changed on disk: table row counts, the logical content of
every table, and the bytes of every file in the node home. The WAL index (``-shm``) is
left out of the byte comparison because SQLite readers write their read marks into it
(see ``reliability_helpers.home_snapshot``); the database file and the WAL itself must be
byte-identical, since a rejection makes no write transaction at all. After the node
stops (which checkpoints the WAL into the database, a legitimate change of bytes), the
logical content is compared once more.

Rate limits are raised for this test so that 200-odd requests from one address are judged
on their content, not their number (rate limiting has its own test in test_federation.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from caseway.node.clock import FakeClock
from caseway.node.config import IngressSettings
from caseway.protocol import crypto
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.receipt import verify_receipt

from reliability_helpers import (
    NOW,
    SHELTER,
    Directory,
    LiveNode,
    fixed_identity,
    home_snapshot,
    logical_dump,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text("utf-8"))
CASES: list[dict[str, Any]] = MANIFEST["cases"]
BODY_TIMEOUT = 1.0
RAW_DEADLINE = 15.0  # far above the body deadline; a guard against hanging, not a sleep
_REPEAT = re.compile(rb"@@REPEAT:([0-9a-f]*):(\d+)@@")


def expand(data: bytes) -> bytes:
    return _REPEAT.sub(lambda m: bytes.fromhex(m.group(1).decode()) * int(m.group(2)), data)


def body_of(case: dict[str, Any]) -> bytes:
    return expand((CORPUS / "cases" / case["file"]).read_bytes())


@pytest.fixture
async def shelter(tmp_path: Path) -> AsyncIterator[LiveNode]:
    world = MANIFEST["world"]
    directory = Directory()
    for participant in world["senders"]:
        directory.add_identity(fixed_identity(participant),
                               revoked_at=world["revoked"].get(participant))
    directory.add_identity(fixed_identity(SHELTER))
    node = LiveNode(fixed_identity(SHELTER), tmp_path / "shelter", directory,
                    FakeClock(world["now"]),
                    ingress=IngressSettings(body_timeout=BODY_TIMEOUT, address_rate=1e6,
                                            address_burst=1e6, sender_rate=1e6,
                                            sender_burst=1e6))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def test_the_corpus_is_large_enough_and_up_to_date() -> None:
    assert len(CASES) >= 200
    assert len({c["name"] for c in CASES}) == len(CASES)
    for case in CASES:
        if case["code"] not in (None, "accepted", "duplicate"):
            assert case["status"] == ErrorCode(case["code"]).http_status, case["name"]
    result = subprocess.run([sys.executable, str(CORPUS / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


async def post(http: aiohttp.ClientSession, node: LiveNode, case: dict[str, Any],
               body: bytes) -> tuple[int, bytes, dict[str, str]]:
    headers = {} if case["content_type"] is None else {"Content-Type": case["content_type"]}
    skip = ["Content-Type"] if case["content_type"] is None else []
    data: Any = body
    if case["chunked"]:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 65536):
                yield body[i:i + 65536]
        data = chunks()
    async with http.post(node.envelopes_url, data=data, headers=headers,
                         skip_auto_headers=skip) as response:
        return response.status, await response.read(), dict(response.headers)


async def raw(node: LiveNode, data: bytes, *, stall: bool) -> tuple[int | None, bytes, bool]:
    """Write ``data`` on a fresh connection; unless ``stall``, half-close. Read until the
    server closes (or the guard deadline). Returns status, body, closed-by-server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        try:
            writer.write(data)
            await writer.drain()
            if not stall:
                writer.write_eof()
        except ConnectionError:
            pass  # the server may close on us while we still write (huge header)
        received = b""
        closed = False
        try:
            async with asyncio.timeout(RAW_DEADLINE):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        closed = True
                        break
                    received += chunk
                    if _complete(received):
                        break
        except (TimeoutError, ConnectionError):
            pass
    finally:
        writer.close()
    if not received.startswith(b"HTTP/1."):
        return None, b"", closed
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, closed


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def check_receipt(node: LiveNode, case: dict[str, Any], status: int, data: bytes,
                  headers: dict[str, str] | None, body: bytes) -> str | None:
    """The problem with this answer, or None."""
    if status != case["status"]:
        return f"status {status}, expected {case['status']}"
    if case["code"] is None:
        return None  # an HTTP-level refusal before any Caseway handler: no receipt
    digest = crypto.digest(b"" if case.get("receipt_digest", "empty") == "empty" else body)
    try:
        receipt = verify_receipt(data, keys=node.directory, expected_recipient=SHELTER,
                                 expected_digest=digest)
    except CasewayError as exc:
        return f"no valid receipt ({exc.code.value}): {data[:200]!r}"
    if case["code"] in ("accepted", "duplicate"):
        return None if receipt.accepted else f"receipt {receipt.outcome} {receipt.error}"
    if (receipt.outcome, receipt.error) != ("rejected", case["code"]):
        return f"receipt {receipt.outcome} {receipt.error}, expected {case['code']}"
    if headers is not None:
        if not headers.get("Content-Type", "").startswith("application/json"):
            return "receipt not application/json"
        if ("Retry-After" in headers) != ErrorCode(case["code"]).retry:
            return "Retry-After presence does not match the code's retry flag"
    return None


async def local_api_available(http: aiohttp.ClientSession, node: LiveNode) -> bool:
    async with http.get(node.local_url + "/api/v1/cases") as response:
        return response.status != 404


async def mint_tokens(node: LiveNode) -> dict[str, str]:
    """Tokens for the local API cases (before the snapshot: minting writes rows)."""
    from caseway.node.tokens import create_token

    storage = node.running.storage
    tokens = {role: await create_token(storage, name=f"corpus-{role}", role=role, now=NOW)
              for role in ("caseworker", "auditor")}
    tokens["revoked"] = await create_token(storage, name="corpus-revoked", role="caseworker",
                                           now=NOW)
    await storage.revoke_token("corpus-revoked", at=NOW, actor="corpus")  # type: ignore[attr-defined]
    return tokens


async def call_local_api(http: aiohttp.ClientSession, node: LiveNode, case: dict[str, Any],
                         body: bytes, tokens: dict[str, str]) -> str | None:
    headers: dict[str, str] = {}
    auth = case["auth"]
    if auth is not None:
        headers["Authorization"] = (auth.removeprefix("literal:") if auth.startswith("literal:")
                                    else f"Bearer {tokens[auth]}")
    if case["content_type"] is not None:
        headers["Content-Type"] = case["content_type"]
    skip = [] if case["content_type"] is not None else ["Content-Type"]
    async with http.request(case["method"], node.local_url + case["path"], headers=headers,
                            data=body if case["method"] != "GET" else None,
                            skip_auto_headers=skip) as response:
        status, ctype, data = response.status, response.content_type, await response.read()
    if status != case["status"]:
        return f"status {status}, expected {case['status']}: {data[:200]!r}"
    if ctype != "application/problem+json":
        return f"content type {ctype}"
    problem = json.loads(data)
    if problem.get("type") != f"urn:caseway:error:{case['code']}":
        return f"problem type {problem.get('type')}, expected {case['code']}"
    return None


async def test_every_hostile_input_gets_its_code_and_changes_nothing(
        shelter: LiveNode) -> None:
    async with aiohttp.ClientSession() as http:
        with_api = await local_api_available(http, shelter)
        tokens = await mint_tokens(shelter) if with_api else {}
        setup_receipts = {}
        for case in (c for c in CASES if c["kind"] == "setup"):
            body = body_of(case)
            status, data, headers = await post(http, shelter, case, body)
            assert check_receipt(shelter, case, status, data, headers, body) is None
            setup_receipts[crypto.digest(body)] = data

        counts = await shelter.running.storage.row_counts()
        files = home_snapshot(shelter.home)
        content = logical_dump(shelter.database)
        assert "caseway.db" in files and "caseway.db-wal" in files

        problems: dict[str, str] = {}
        seen: dict[str, int] = {}
        for case in CASES:
            if case["kind"] == "setup" or (case["kind"] == "local_api" and not with_api):
                continue
            body = body_of(case)
            if case["kind"] == "local_api":
                problem = await call_local_api(http, shelter, case, body, tokens)
            elif case["kind"] == "post":
                try:
                    status, data, headers = await post(http, shelter, case, body)
                except aiohttp.ClientError as exc:
                    problems[case["name"]] = f"no answer: {type(exc).__name__}"
                    continue
                problem = check_receipt(shelter, case, status, data, headers, body)
                if case["code"] == "duplicate" and data != setup_receipts.get(
                        crypto.digest(body)):
                    problem = "a duplicate did not get its original receipt"
            else:
                status_or_none, data, closed = await raw(shelter, body, stall=case["stall"])
                if status_or_none is None:
                    problem = (None if closed and (case["code"] is None
                                                   or case.get("may_close")) else
                               "no HTTP answer")
                else:
                    problem = check_receipt(shelter, case, status_or_none, data, None, b"")
            if problem is not None:
                problems[case["name"]] = problem
            seen[case["kind"]] = seen.get(case["kind"], 0) + 1
            async with http.get(shelter.url + "/healthz") as response:  # still up
                assert response.status == 200, case["name"]

        assert problems == {}
        assert seen["post"] + seen["raw"] + seen.get("local_api", 0) >= 200

        assert await shelter.running.storage.row_counts() == counts
        assert logical_dump(shelter.database) == content
        assert home_snapshot(shelter.home) == files
    await shelter.stop()
    assert logical_dump(shelter.database) == content


async def test_local_api_cases_ran(shelter: LiveNode) -> None:
    """Says so (as a skip) when the local API is not served yet, so that its cases are
    not silently counted as passed."""
    async with aiohttp.ClientSession() as http:
        if not await local_api_available(http, shelter):
            count = sum(c["kind"] == "local_api" for c in CASES)
            pytest.skip(f"the local API (node/api.py) is not served: {count} local API "
                        "corpus cases not run")
