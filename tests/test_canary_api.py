"""Canary: unique strings planted in every free field of a referral never leak.

Not in a log line, not in exception text or a problem detail, not in /metrics, and not in
any byte of any file under either node's home (database, WAL, anything else), while the
nodes run and after they stop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from caseway.protocol.errors import CasewayError
from caseway.protocol.messages import validate_message

from conftest import NOW, ApiPair, referral_request


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    elif isinstance(value, str):
        yield path


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


def planted_referral() -> tuple[dict[str, Any], list[str]]:
    """The sample referral with a unique canary in every string field that accepts a free
    value (codes, dates and digests keep theirs: the schema refuses anything else)."""
    request = referral_request()
    message = {"type": "referral", "case_id": "AAAAAAAAAAAAAAAAAAAAAA",
               "thread_id": "AAAAAAAAAAAAAAAAAAAAAA", "seq": 1, "sent_at": NOW,
               **{k: v for k, v in request.items() if k != "to"}}
    canaries = []
    for path in list(_leaves(message)):
        if path[0] in ("type", "case_id", "thread_id") or path[-1] == "consent_id":
            continue
        canary = f"CANARY{len(canaries):03d}q"
        trial = copy.deepcopy(message)
        _set(trial, path, canary)
        try:
            validate_message(trial)
        except CasewayError:
            continue
        message = trial
        canaries.append(canary)
    validate_message(message)
    planted = {k: message[k] for k in request if k != "to"}
    planted["to"] = request["to"]
    return planted, canaries


def files_under(*homes: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for home in homes for p in home.rglob("*") if p.is_file()}


async def test_canaries_never_leak(api_pair: ApiPair) -> None:
    pair = api_pair
    request, canaries = planted_referral()
    assert len(canaries) >= 20  # every free string of the full sample referral
    outputs: list[bytes] = []
    with capture_logs() as logs:
        sent = (await pair.embassy.call("POST", "/api/v1/cases", request)).body
        await pair.deliver()
        base = f"/api/v1/threads/{sent['thread_id']}"
        await pair.shelter.call("POST", f"{base}/accept", {})
        await pair.deliver()
        timeline = await pair.shelter.call("GET", f"/api/v1/cases/{sent['case_id']}")
        assert canaries[0].encode() in timeline.raw  # staff do see the case
        # Refusals that carry canaries: no problem detail may echo them.
        bad = dict(request, extra_member=canaries[1])
        bad[canaries[2]] = 1
        outputs.append((await pair.embassy.call("POST", "/api/v1/cases", bad)).raw)
        outputs.append((await pair.embassy.call("POST", "/api/v1/cases",
                                                dict(request, to=canaries[3]))).raw)
        narrow = copy.deepcopy(request)
        narrow["consent"]["scope"]["data_categories"] = ["identity"]
        outputs.append((await pair.embassy.call("POST", "/api/v1/cases", narrow)).raw)
        outputs.append((await pair.embassy.call(
            "POST", "/api/v1/cases", data=b'{"x": "' + canaries[4].encode() + b'",',
            body=None)).raw)
        outputs.append((await pair.embassy.call("GET", f"/api/v1/cases/{canaries[5]}")).raw)
        for node in (pair.embassy, pair.shelter):
            outputs.append((await node.call("GET", "/metrics", role=None)).raw)
            outputs.append((await node.call("GET", "/api/v1/audit", role="auditor")).raw)
            outputs.append((await node.call("GET", "/api/v1/outbox")).raw)
            outputs.append((await node.call("GET", "/api/v1/inbox")).raw)
            outputs.append((await node.call("GET", "/api/v1/cases")).raw)
        # Withdraw and erase, so erasure paths are covered too.
        await pair.embassy.call("POST", f"/api/v1/consents/{sent['consent_id']}/withdrawal",
                                {}, role="supervisor")
        await pair.deliver()
    log_text = "\n".join(repr(entry) for entry in logs)
    assert logs
    homes = (pair.embassy.harness.home, pair.shelter.harness.home)
    running_files = files_under(*homes)
    await pair.embassy.harness.stop()
    await pair.shelter.harness.stop()
    stopped_files = files_under(*homes)
    assert any(p.name.endswith("-wal") for p in running_files)
    for canary in canaries:
        token = canary.encode()
        assert canary not in log_text, canary
        for output in outputs:
            assert token not in output, canary
        for path, data in (*running_files.items(), *stopped_files.items()):
            assert token not in data, (canary, path.name)
