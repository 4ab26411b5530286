"""The conformance runner against the reference node, and against nodes broken on purpose.

The reference node runs in-process on an ephemeral loopback port with the real message
policy (:class:`~caseway.protocol.policy.ReferralPolicy`), the case lifecycle
(:class:`~caseway.node.threads.CaseLifecycle`) and a :class:`~caseway.keys.trust.TrustStore`
that pins the runner's test authority and holds the directory written by
``caseway conformance setup``. Broken nodes are the same node with one check removed: the
runner must fail them, naming the check and what it got.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import os
import types
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

import caseway.protocol.envelope as envelope_module
from caseway.keys.directory import verify_directory
from caseway.keys.identity import Identity
from caseway.keys.trust import TrustStore
from caseway.node import cli
from caseway.node.app import Node, NodeServer, open_node
from caseway.node.config import Listen
from caseway.node.conformance import (
    CHECKS,
    FAIL,
    PASS,
    SKIP,
    Report,
    check_ids,
    load_runner_setup,
    run_conformance,
)
from caseway.node.conformance_setup import build_setup, target_entry, write_setup
from caseway.node.threads import CaseLifecycle
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode
from caseway.protocol.policy import ReferralPolicy

from conftest import Keys
from loopback_node import LOOPBACK

TARGET = "conformance-target"
ROOT = Path(__file__).parent.parent


class _LatePolicy:
    """The node's :class:`ReferralPolicy`, bound once the node (and its consent store)
    exists: ``open_node`` takes the policy before it builds the service."""

    def __init__(self) -> None:
        self.policy: ReferralPolicy | None = None

    def check_outgoing(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None:
        assert self.policy is not None
        self.policy.check_outgoing(message, sender=sender, recipient=recipient, now=now)

    def check_incoming(self, message: Mapping[str, Any], *, sender: str, recipient: str,
                       now: int) -> None:
        assert self.policy is not None
        self.policy.check_incoming(message, sender=sender, recipient=recipient, now=now)


@asynccontextmanager
async def reference_node(tmp_path: Path, *, sectors: tuple[str, ...] | None = None,
                         break_node: Callable[[Node], None] | None = None,
                         ) -> AsyncIterator[tuple[str, Path]]:
    """A reference node for ``TARGET`` and a setup folder for the runner: (url, setup)."""
    identity = Identity.generate(TARGET)
    authority = b64decode(json.loads(_setup_files(identity, "http://placeholder", sectors)[
        "authority.pub.json"])["key"], length=32)
    trust = TrustStore([authority])
    policy = _LatePolicy()
    async with open_node(keys=Keys(identity, os.urandom(32)), peers=trust,
                         database=tmp_path / "target.db", policy=policy,
                         threads=CaseLifecycle()) as node:
        policy.policy = ReferralPolicy(trust, node.service.consents)
        if break_node is not None:
            break_node(node)
        server = NodeServer(node, background_delivery=False)
        await server.start(federation=Listen(LOOPBACK, 0), local_api=Listen(LOOPBACK, 0))
        try:
            url = server.federation_url
            files = _setup_files(identity, url, sectors)
            setup = tmp_path / "setup"
            write_setup(setup, files)
            trust.load(files["directory.json"], node.clock.now())
            yield url, setup
        finally:
            await server.stop()


def _setup_files(identity: Identity, url: str,
                 sectors: tuple[str, ...] | None) -> dict[str, bytes]:
    keys = identity.public_keys()
    target = target_entry(participant=TARGET, endpoint=url, signing_key=keys["signing_key"],
                          encryption_key=keys["encryption_key"],
                          sectors=list(sectors) if sectors else None)
    return build_setup(target)


async def _run(tmp_path: Path, **kw: Any) -> Report:
    async with reference_node(tmp_path, **kw) as (url, setup):
        return await run_conformance(load_runner_setup(setup), url)


def _failures(report: Report) -> dict[str, str]:
    return {r.id: r.reason for r in report.results if r.status == FAIL}


# ----------------------------------------------------------------------------- reference


async def test_the_reference_node_passes_every_check(tmp_path: Path) -> None:
    report = await _run(tmp_path)
    assert _failures(report) == {}, report.summary()
    assert [r.id for r in report.results] == check_ids()
    assert all(r.status == PASS for r in report.results), report.summary()
    # Every rejection code that can be provoked over HTTP is covered.
    covered = {cid.split(".")[1] for cid in check_ids() if cid.startswith("reject.")}
    assert {"too_large", "unsupported_media_type", "malformed", "bad_encoding",
            "header_invalid", "unsupported_version", "unknown_sender", "unknown_key",
            "revoked_key", "bad_signature", "not_for_me", "expired", "not_yet_valid",
            "weak_key", "decrypt_failed", "binding_mismatch", "schema_invalid",
            "consent_violation", "consent_expired", "consent_withdrawn",
            "firewall"} <= covered


async def test_a_second_run_against_the_same_node_passes_too(tmp_path: Path) -> None:
    async with reference_node(tmp_path) as (url, setup):
        first = await run_conformance(load_runner_setup(setup), url)
        second = await run_conformance(load_runner_setup(setup), url)
    assert first.ok and second.ok, second.summary()


async def test_without_a_police_listing_the_firewall_check_is_skipped(tmp_path: Path) -> None:
    report = await _run(tmp_path, sectors=("shelter", "social_services"))
    assert report.ok, report.summary()
    skipped = report.result("reject.firewall")
    assert skipped.status == SKIP and "police" in skipped.reason


# ----------------------------------------------------------------------------- broken nodes


def _skip_signature_check(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node opens envelopes without verifying the signature (the broken part)."""
    lenient = types.SimpleNamespace(**{name: getattr(crypto, name) for name in dir(crypto)
                                       if not name.startswith("__")})
    lenient.verify = lambda *args: None
    monkeypatch.setattr(envelope_module, "crypto", lenient)


class _ForgetfulStorage:
    """Storage that never finds an earlier (sender, id): every new digest is stored under
    its own key, so the same id with other bytes is accepted (the broken part); the same
    bytes still find their original receipt."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def inbound(self, sender: str, message_id: str) -> None:
        return None

    async def record_inbound(self, *, sender: str, message_id: str, digest: bytes,
                             thread_id: str, build: Callable[[Any], Any]) -> Any:
        key = f"{message_id}~{digest.hex()[:16]}"
        return await self._inner.record_inbound(
            sender=sender, message_id=key, digest=digest, thread_id=thread_id,
            build=lambda current: dataclasses.replace(build(current), message_id=key))


def _skip_replay_check(node: Node) -> None:
    node.service.storage = _ForgetfulStorage(node.service.storage)  # type: ignore[assignment]


async def test_a_node_that_skips_the_signature_check_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = await _run(tmp_path, break_node=lambda n: _skip_signature_check(n, monkeypatch))
    failures = _failures(report)
    assert not report.ok
    assert failures["reject.bad_signature"] == (
        "expected HTTP 401 with a rejected receipt 'bad_signature', got HTTP 200 with an "
        "accepted receipt")
    assert {"reject.bad_signature.tampered_header", "reject.bad_signature.wrong_label",
            "order.signature_before_time", "order.signature_before_addressing"} <= set(failures)
    assert "reject.unknown_sender" not in failures and "deliver.accepted" not in failures
    assert "FAIL reject.bad_signature" in report.summary()


async def test_a_node_that_skips_the_replay_check_fails(tmp_path: Path) -> None:
    report = await _run(tmp_path, break_node=_skip_replay_check)
    failures = _failures(report)
    assert failures["deliver.replayed"] == (
        "expected HTTP 409 with a rejected receipt 'replayed', got HTTP 200 with an accepted "
        "receipt")
    assert failures["order.replay_before_decrypt"].startswith(
        "expected HTTP 409 with a rejected receipt 'replayed', got HTTP 400 with a rejected "
        "receipt 'decrypt_failed'")
    assert "deliver.duplicate" not in failures and "reject.bad_signature" not in failures


async def test_a_node_that_signs_receipts_with_another_key_fails(tmp_path: Path) -> None:
    def impostor(node: Node) -> None:
        node.service.identity = dataclasses.replace(
            node.service.identity, signing=crypto.SigningKeyPair(os.urandom(32)))

    report = await _run(tmp_path, break_node=impostor)
    reason = _failures(report)["deliver.accepted"]
    assert reason.startswith("HTTP 200 with an accepted receipt, but the receipt does not "
                             "verify (SPEC §6.4): unknown_key")


async def test_an_unreachable_target_fails_with_the_reason(tmp_path: Path) -> None:
    async with reference_node(tmp_path) as (url, setup):
        pass  # stopped: nothing listens there any more
    report = await run_conformance(load_runner_setup(setup), url, timeout=5,
                                   only={"http.healthz", "deliver.accepted"})
    assert [r.status for r in report.results] == [FAIL, FAIL]
    assert report.results[0].reason.startswith("target unreachable: ClientConnectorError")


# ----------------------------------------------------------------------------- CLI, setup


async def test_cli_writes_a_junit_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    junit = tmp_path / "out.xml"
    async with reference_node(tmp_path) as (url, setup):
        code = await asyncio.to_thread(cli.main, [
            "conformance", "--setup", str(setup), "--target", url, "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS deliver.accepted" in out and " 0 failed" in out
    root = ElementTree.parse(junit).getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(CHECKS) == int(suite.get("tests", "-1"))
    assert suite.get("failures") == "0"
    assert {c.get("classname") for c in cases} >= {"conformance.deliver", "conformance.reject",
                                                    "conformance.lifecycle"}


async def test_cli_exits_non_zero_and_reports_the_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "out.xml"
    async with reference_node(tmp_path, break_node=_skip_replay_check) as (url, setup):
        code = await asyncio.to_thread(cli.main, [
            "conformance", "--setup", str(setup), "--target", url, "--junit", str(junit)])
    assert code == 1
    assert "FAIL deliver.replayed" in capsys.readouterr().out
    failure = next(c for c in ElementTree.parse(junit).getroot().iter("testcase")
                   if c.get("name") == "replayed").find("failure")
    assert failure is not None and "'replayed'" in failure.get("message", "")


def test_setup_cli_writes_a_directory_the_target_can_verify(tmp_path: Path) -> None:
    identity = Identity.generate(TARGET)
    keys = identity.public_keys()
    out = tmp_path / "kit"
    assert cli.main(["conformance", "setup", "--out", str(out), "--target-id", TARGET,
                     "--target-endpoint", "https://node.example/caseway",
                     f"--target-signing-key={keys['signing_key']}",
                     f"--target-encryption-key={keys['encryption_key']}"]) == 0
    pub = json.loads((out / "authority.pub.json").read_text())
    directory = verify_directory((out / "directory.json").read_bytes(),
                                 [b64decode(pub["key"], length=32)])
    assert {p.id for p in directory.participants} == {"conformance-peer", TARGET}
    assert directory.get(TARGET) is not None
    assert directory.get(TARGET).sectors == {"shelter", "police"}  # type: ignore[union-attr]
    runner = load_runner_setup(out)
    assert runner["target"]["participant"] == TARGET
    assert "caseway conformance --setup" in (out / "SETUP.md").read_text()
    # A participant file works as well (the integrator's own entry).
    entry = json.loads((out / f"participants/{TARGET}.json").read_text())
    (tmp_path / "me.json").write_text(json.dumps(entry))
    assert cli.main(["conformance", "setup", "--out", str(tmp_path / "kit2"),
                     "--target-participant", str(tmp_path / "me.json")]) == 0


def test_setup_refuses_a_target_that_may_never_receive_referrals(tmp_path: Path) -> None:
    keys = Identity.generate(TARGET).public_keys()
    code = cli.main(["conformance", "setup", "--out", str(tmp_path / "kit"),
                     "--target-id", TARGET, "--target-endpoint", "https://x.example",
                     f"--target-signing-key={keys['signing_key']}",
                     f"--target-encryption-key={keys['encryption_key']}",
                     "--target-sectors", "immigration_enforcement"])
    assert code == 2 and not (tmp_path / "kit").exists()


def test_the_runner_is_black_box() -> None:
    """It may use caseway.protocol and HTTP only: never the node's storage, service or keys."""
    tree = ast.parse((ROOT / "node" / "conformance.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the runner"
            imported.add(node.module or "")
    caseway = {name for name in imported if name.startswith("caseway")}
    assert caseway and all(name.startswith("caseway.protocol") for name in caseway), caseway


def test_check_ids_are_unique_and_documented() -> None:
    ids = check_ids()
    assert len(ids) == len(set(ids))
    spec = (ROOT / "SPEC.md").read_text()
    section = spec[spec.index("<!-- BEGIN conformance"):spec.index("<!-- END conformance")]
    readme = (ROOT / "examples" / "README.md").read_text()
    for check_id in ids:
        assert f"`{check_id}`" in section, f"{check_id} not described in SPEC.md"
    assert "caseway conformance setup" in readme
    assert b64encode(b"") == ""
