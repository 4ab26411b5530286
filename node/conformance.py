"""The black-box conformance runner: play a peer node against a target node over HTTP.

``caseway conformance --target URL`` sends envelopes to ``POST {URL}/caseway/v1/envelopes``
as the participant ``conformance-peer`` of a test directory the target trusts (written by
``caseway conformance setup``, :mod:`caseway.node.conformance_setup`), and checks every
answer against SPEC.md: the HTTP status of the code (§7), a signed receipt that verifies
with the target's key and names the exact bytes sent (§6), the open order of §5.5, the
duplicate and replay rules (§6.3), consent, firewall and lifecycle rules (§12).

Rules of this module:

1. Black box. It uses only :mod:`caseway.protocol` (to build envelopes and verify
   receipts) and HTTP. It never imports the node's storage, service or keys: the target may
   be written in any language.
2. One check, one verdict. Each check is a small coroutine that raises
   :class:`CheckFailed` with a precise reason (expected vs got) or returns a short note.
   A check whose prerequisite failed fails too, naming the prerequisite; a check that does
   not apply to this target (the firewall when the target is in no police or justice
   sector) is skipped with its reason.
3. Fresh ids. Every run draws new message, case, thread and consent ids and new ephemeral
   secrets, so a run can be repeated against the same node.
4. Times are the runner's clock (``time.time``); the target's clock must agree within the
   300 s skew of SPEC §2.5.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import aiohttp

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json
from caseway.protocol.envelope import (
    MAX_CLOCK_SKEW,
    MAX_ENVELOPE_BYTES,
    MAX_LIFETIME,
    MAX_PLAINTEXT_BYTES,
)
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.messages import validate_message
from caseway.protocol.receipt import verify_receipt

SETUP_FORMAT = "caseway-conformance-setup"
RUNNER_FILE = "runner.json"
FEDERATION_PATH = "/caseway/v1/envelopes"
JSON = "application/json"
#: A low-order X25519 point (order 8): a "weak" ephemeral key (SPEC §5.3, §9).
LOW_ORDER_POINT = bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
EMPTY_DIGEST = crypto.digest(b"")

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


class CheckFailed(Exception):
    """A check's verdict: the target did not do what SPEC.md requires."""


class CheckSkipped(Exception):
    """The check does not apply to this target (the reason says why)."""


@dataclass
class CheckResult:
    id: str
    title: str
    spec: str
    status: str
    reason: str
    seconds: float


@dataclass
class Report:
    target: str
    participant: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def result(self, check_id: str) -> CheckResult:
        return next(r for r in self.results if r.id == check_id)

    def summary(self) -> str:
        width = max((len(r.id) for r in self.results), default=0)
        lines = [f"Caseway conformance: target {self.participant} at {self.target}"]
        for r in self.results:
            lines.append(f"{r.status} {r.id.ljust(width)}  {r.reason}")
        counts = {s: sum(r.status == s for r in self.results) for s in (PASS, FAIL, SKIP)}
        lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped "
                     f"({len(self.results)} checks)")
        return "\n".join(lines) + "\n"

    def junit_xml(self) -> bytes:
        """A JUnit XML report (one ``testcase`` per check; classname = check group)."""
        suite = ElementTree.Element("testsuite", {
            "name": "caseway-conformance",
            "tests": str(len(self.results)),
            "failures": str(len(self.failed)),
            "errors": "0",
            "skipped": str(sum(r.status == SKIP for r in self.results)),
            "time": f"{sum(r.seconds for r in self.results):.3f}",
        })
        properties = ElementTree.SubElement(suite, "properties")
        for name, value in (("target", self.target), ("participant", self.participant)):
            ElementTree.SubElement(properties, "property", {"name": name, "value": value})
        for r in self.results:
            group, _, name = r.id.partition(".")
            case = ElementTree.SubElement(suite, "testcase", {
                "classname": f"conformance.{group}", "name": name or group,
                "time": f"{r.seconds:.3f}"})
            if r.status == FAIL:
                failure = ElementTree.SubElement(case, "failure", {"message": r.reason,
                                                                   "type": "conformance"})
                failure.text = f"{r.title} ({r.spec})\n{r.reason}"
            elif r.status == SKIP:
                ElementTree.SubElement(case, "skipped", {"message": r.reason})
            else:
                out = ElementTree.SubElement(case, "system-out")
                out.text = f"{r.title} ({r.spec}): {r.reason}"
        root = ElementTree.Element("testsuites", {"name": "caseway-conformance"})
        root.append(suite)
        ElementTree.indent(root)
        xml: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
        return xml + b"\n"


# --------------------------------------------------------------------------- setup


def load_runner_setup(folder: Path | str) -> dict[str, Any]:
    """Read ``runner.json`` of a setup folder written by ``caseway conformance setup``."""
    path = Path(folder) / RUNNER_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CasewayError(ErrorCode.NOT_FOUND, f"{path} not found: run `caseway conformance "
                           "setup` first") from None
    setup: dict[str, Any] = parse_json(data, max_bytes=1 << 20)
    if not isinstance(setup, dict) or setup.get("format") != SETUP_FORMAT \
            or setup.get("v") != 1:
        raise CasewayError(ErrorCode.SCHEMA_INVALID, f"{path} is not a conformance setup")
    return setup


class TargetKeys:
    """:class:`~caseway.protocol.envelope.KeyResolver` over the target's listed keys,
    applying SPEC §3 "Key validity" (revocation before the window)."""

    def __init__(self, participant: str, keys: list[Mapping[str, Any]]) -> None:
        self.participant = participant
        self.keys = keys

    def signing_key(self, participant: str, key_id: str, at: int) -> bytes:
        if participant != self.participant:
            raise CasewayError(ErrorCode.UNKNOWN_SENDER, "receipt signed by another "
                               "participant than the target")
        entry = next((k for k in self.keys if k["key_id"] == key_id
                      and k["use"] == "signing"), None)
        if entry is None:
            raise CasewayError(ErrorCode.UNKNOWN_KEY, "receipt signed with a key the "
                               "directory does not list for the target")
        if entry["revoked_at"] is not None and at >= entry["revoked_at"]:
            raise CasewayError(ErrorCode.REVOKED_KEY, "receipt signed with a revoked key")
        if at < entry["valid_from"] or (entry["valid_until"] is not None
                                        and at >= entry["valid_until"]):
            raise CasewayError(ErrorCode.UNKNOWN_KEY, "receipt key not valid at received_at")
        return b64decode(entry["key"], length=32)

    def encryption_key(self) -> bytes:
        active = [k for k in self.keys if k["use"] == "encryption" and k["status"] == "active"
                  and k["revoked_at"] is None]
        if not active:
            raise CasewayError(ErrorCode.UNKNOWN_KEY, "the target has no active encryption key")
        return b64decode(max(active, key=lambda k: k["valid_from"])["key"], length=32)


# --------------------------------------------------------------------------- envelopes


@dataclass
class Built:
    """An envelope the runner built: its bytes, and what the receipt must name."""

    data: bytes
    message_id: str
    sender: str
    created: int
    expires: int

    @property
    def digest(self) -> bytes:
        return crypto.digest(self.data)


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def new_id() -> str:
    return b64encode(os.urandom(16))


def _flip_last_byte(value: str) -> str:
    raw = bytearray(b64decode(value))
    raw[-1] ^= 0x01
    return b64encode(bytes(raw))


def _set_unused_bit(text: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return text[:-1] + alphabet[alphabet.index(text[-1]) | 1]


def _describe(answer: Answer) -> str:
    """What came back, for a failure message: status and, if readable, the receipt."""
    try:
        outer = json.loads(answer.body)
        fields = json.loads(b64decode(outer["protected"]))
        if fields.get("outcome") == "accepted":
            return f"HTTP {answer.status} with an accepted receipt"
        return f"HTTP {answer.status} with a {fields.get('outcome')} receipt " \
               f"'{fields.get('error')}'"
    except (ValueError, KeyError, TypeError, CasewayError):
        snippet = answer.body[:60].decode("utf-8", "replace").replace("\n", " ")
        return f"HTTP {answer.status} with a body that is not a receipt ({snippet!r})"


CheckFn = Callable[["Runner"], Awaitable[str | None]]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    spec: str
    fn: CheckFn
    requires: tuple[str, ...] = ()


CHECKS: list[Check] = []


def check(check_id: str, title: str, spec: str, *, requires: tuple[str, ...] = ()
          ) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append(Check(check_id, title, spec, fn, requires))
        return fn
    return register


class Runner:
    """One run against one target. Checks share this object (and the threads they open)."""

    def __init__(self, setup: Mapping[str, Any], target_url: str,
                 session: aiohttp.ClientSession, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.setup = setup
        self.base = target_url.rstrip("/")
        self.url = self.base + FEDERATION_PATH
        self.session = session
        self._clock = clock
        target = setup["target"]
        self.target = target["participant"]
        self.target_sectors = frozenset(target["sectors"])
        self.target_keys = TargetKeys(self.target, target["keys"])
        self.target_public = self.target_keys.encryption_key()
        peer = setup["peer"]
        self.peer = peer["participant"]
        self.signing = crypto.SigningKeyPair(bytes.fromhex(peer["signing_seed_hex"]))
        self.revoked = crypto.SigningKeyPair(bytes.fromhex(peer["revoked_signing_seed_hex"]))
        self.unlisted = crypto.SigningKeyPair(bytes.fromhex(peer["unlisted_signing_seed_hex"]))
        self.own_encryption = crypto.EncryptionKeyPair(
            bytes.fromhex(peer["encryption_secret_hex"]))
        self.stranger = setup["stranger"]["participant"]
        self.stranger_signing = crypto.SigningKeyPair(
            bytes.fromhex(setup["stranger"]["signing_seed_hex"]))
        self.state: dict[str, Any] = {}

    # -- time and messages ---------------------------------------------------------------

    def now(self) -> int:
        return int(self._clock())

    def consent(self, **changes: Any) -> dict[str, Any]:
        now = self.now()
        consent: dict[str, Any] = {
            "consent_id": new_id(), "given_at": now - 3600, "method": "written",
            "language": "en", "interpreter_used": False, "recorded_by": "conformance-sw-1",
            "scope": {"recipients": {"participants": [self.target], "sectors": []},
                      "purposes": ["service_provision", "case_management", "reporting"],
                      "data_categories": ["identity", "needs"],
                      "onward_referral_allowed": False, "feedback_allowed": True},
            "expires_at": now + 90 * 86400, "restrictions": [], "services_refused": []}
        scope = changes.pop("scope", {})
        consent["scope"].update(scope)
        consent.update(changes)
        return consent

    def referral(self, *, thread: str | None = None, case: str | None = None,
                 consent: Mapping[str, Any] | None = None, seq: int = 1,
                 purposes: list[str] | None = None, sections: Mapping[str, Any] | None = None,
                 respond_by: int | None = None) -> dict[str, Any]:
        """A referral that every rule of SPEC §12 admits for the target (consent names it;
        the `reporting` purpose satisfies the firewall for a police/justice listing)."""
        now = self.now()
        return {
            "type": "referral", "case_id": case or new_id(), "thread_id": thread or new_id(),
            "seq": seq, "sent_at": now, "respond_by": respond_by or now + 7 * 86400,
            "purposes": purposes or ["service_provision", "reporting"],
            "consent": dict(consent or self.consent()),
            "survivor_ref": "CONF-0001",
            "sections": dict(sections or {
                "identity": {"given_name": "Test", "sex": "female", "nationality": "PH"},
                "needs": {"services_requested": ["safe_shelter"], "urgency": "routine",
                          "risk_level": "medium"}}),
        }

    def control(self, message_type: str, thread: Mapping[str, Any], seq: int,
                **fields: Any) -> dict[str, Any]:
        sent_at = fields.pop("sent_at", self.now())
        return {"type": message_type, "case_id": thread["case_id"],
                "thread_id": thread["thread_id"], "seq": seq, "sent_at": sent_at, **fields}

    # -- building envelopes ---------------------------------------------------------------

    def envelope(self, message: Any = None, *, signer: crypto.SigningKeyPair | None = None,
                 sender: str | None = None, recipient: str | None = None,
                 recipient_public: bytes | None = None, message_id: str | None = None,
                 created: int | None = None, expires: int | None = None,
                 inner: Mapping[str, Any] | None = None, plaintext: bytes | None = None,
                 ciphertext: bytes | None = None,
                 corrupt: Callable[[bytes], bytes] | None = None,
                 header: Mapping[str, Any] | None = None,
                 header_bytes: Callable[[bytes], bytes] | None = None,
                 label: bytes = crypto.ENVELOPE_LABEL,
                 outer: Callable[[dict[str, str]], Any] | None = None) -> Built:
        """Seal and sign an envelope step by step (SPEC §5.4), with hooks to break exactly
        one thing: the plaintext, the sealed box, the header (before signing), the signed
        header bytes, the label, or the outer object (after signing)."""
        now = self.now()
        signer = signer or self.signing
        sender = sender or self.peer
        recipient = recipient or self.target
        recipient_public = recipient_public or self.target_public
        mid = message_id or new_id()
        created = now if created is None else created
        expires = created + 3600 if expires is None else expires
        if message is None:
            message = self.referral()
        if plaintext is None:
            body = {"v": 1, "id": mid, "sender": sender, "recipient": recipient,
                    "message": message}
            body.update(inner or {})
            plaintext = dump_json(body)
        if ciphertext is None:
            ciphertext = crypto.sealed_box_seal(plaintext, recipient_public, os.urandom(32))
        if corrupt is not None:
            ciphertext = corrupt(ciphertext)
        fields: dict[str, Any] = {
            "v": 1, "id": mid, "created": created, "expires": expires, "sender": sender,
            "sender_key": signer.key_id, "recipient": recipient,
            "recipient_key": crypto.key_id(recipient_public),
            "ciphertext": b64encode(ciphertext)}
        fields.update(header or {})
        protected = dump_json({k: v for k, v in fields.items() if v is not _DROP})
        if header_bytes is not None:
            protected = header_bytes(protected)
        signature = signer.sign(label, protected)
        wire: dict[str, str] = {"protected": b64encode(protected),
                                "signature": b64encode(signature)}
        shaped = wire if outer is None else outer(wire)
        data = shaped if isinstance(shaped, bytes) else dump_json(shaped)
        return Built(data, mid, sender, created, expires)

    # -- HTTP -----------------------------------------------------------------------------

    async def post(self, body: bytes | AsyncIterator[bytes], *, content_type: str = JSON
                   ) -> Answer:
        try:
            async with self.session.post(self.url, data=body,
                                         headers={"Content-Type": content_type}) as response:
                return Answer(response.status, dict(response.headers), await response.read())
        except aiohttp.ClientError as exc:
            raise CheckFailed(f"HTTP request failed: {type(exc).__name__}: {exc}") from None

    async def deliver(self, built: Built) -> Answer:
        return await self.post(built.data)

    # -- verdicts -------------------------------------------------------------------------

    def _receipt(self, answer: Answer, digest: bytes) -> Any:
        content_type = answer.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != JSON:
            raise CheckFailed(f"{_describe(answer)}: Content-Type is {content_type!r}, "
                              "expected application/json")
        try:
            return verify_receipt(answer.body, keys=self.target_keys,
                                  expected_recipient=self.target, expected_digest=digest)
        except CasewayError as exc:
            raise CheckFailed(f"{_describe(answer)}, but the receipt does not verify "
                              f"(SPEC §6.4): {exc.code.value}: {exc.detail}") from None

    def expect_accepted(self, answer: Answer, built: Built) -> Any:
        if answer.status != 200:
            raise CheckFailed(f"expected HTTP 200 with an accepted receipt, got "
                              f"{_describe(answer)}")
        receipt = self._receipt(answer, built.digest)
        if not receipt.accepted:
            raise CheckFailed(f"expected an accepted receipt, got rejected '{receipt.error}' "
                              "with HTTP 200")
        self._expect_identifiers(receipt, built)
        if abs(receipt.received_at - self.now()) > MAX_CLOCK_SKEW:
            raise CheckFailed(f"receipt received_at {receipt.received_at} is more than "
                              f"{MAX_CLOCK_SKEW} s from the runner's clock {self.now()}")
        return receipt

    def expect_rejected(self, answer: Answer, code: ErrorCode, *, built: Built | None = None,
                        data: bytes | None = None, digests: tuple[bytes, ...] | None = None,
                        header_readable: bool = True) -> str:
        """The answer must be HTTP ``code.http_status`` with a verifying signed rejection
        receipt naming ``code`` and the digest of the bytes sent (or one of ``digests``)."""
        wanted = f"HTTP {code.http_status} with a rejected receipt '{code.value}'"
        receipt_error = None
        try:
            fields = json.loads(b64decode(json.loads(answer.body)["protected"]))
            receipt_error = fields.get("error")
        except (ValueError, KeyError, TypeError, CasewayError):
            fields = None
        if answer.status != code.http_status or receipt_error != code.value:
            raise CheckFailed(f"expected {wanted}, got {_describe(answer)}")
        sent = built.data if built is not None else data
        candidates = digests or (crypto.digest(sent if sent is not None else b""),)
        receipt = None
        problems = []
        for digest in candidates:
            try:
                receipt = self._receipt(answer, digest)
                break
            except CheckFailed as exc:
                problems.append(str(exc))
        if receipt is None:
            raise CheckFailed(problems[0])
        if receipt.outcome != "rejected":
            raise CheckFailed(f"expected outcome 'rejected', got {receipt.outcome!r}")
        if built is not None and header_readable:
            self._expect_identifiers(receipt, built)
        elif receipt.message_id is not None or receipt.sender is not None:
            raise CheckFailed("the header was unreadable, so the receipt's message_id and "
                              "sender must be null (SPEC \"Federation endpoint\")")
        if code.retry:
            retry_after = answer.headers.get("Retry-After", "")
            if not retry_after.isdigit():
                raise CheckFailed(f"'{code.value}' is retryable: the answer must carry "
                                  f"Retry-After in seconds, got {retry_after or 'none'}")
        return f"HTTP {answer.status} {code.value}, signed receipt verified"

    def _expect_identifiers(self, receipt: Any, built: Built) -> None:
        if receipt.message_id != built.message_id or receipt.sender != built.sender:
            raise CheckFailed(f"receipt names message_id {receipt.message_id!r} and sender "
                              f"{receipt.sender!r}; expected {built.message_id!r} and "
                              f"{built.sender!r}")

    async def reject(self, built: Built, code: ErrorCode, **kw: Any) -> str:
        return self.expect_rejected(await self.deliver(built), code, built=built, **kw)

    async def accept(self, built: Built) -> str:
        receipt = self.expect_accepted(await self.deliver(built), built)
        return f"HTTP 200 accepted, signed receipt verified (received_at {receipt.received_at})"


_DROP = object()  # a header field value meaning "leave this field out"


async def run_checks(runner: Runner, *, only: set[str] | None = None) -> Report:
    report = Report(runner.base, runner.target)
    statuses: dict[str, str] = {}
    for item in CHECKS:
        if only is not None and item.id not in only:
            continue
        started = time.monotonic()
        failed_prerequisite = next((r for r in item.requires if statuses.get(r) != PASS),
                                   None)
        if failed_prerequisite is not None:
            status, reason = FAIL, f"not run: prerequisite {failed_prerequisite} did not pass"
        else:
            try:
                note = await item.fn(runner)
                status, reason = PASS, note or "ok"
            except CheckFailed as exc:
                status, reason = FAIL, str(exc)
            except CheckSkipped as exc:
                status, reason = SKIP, str(exc)
            except Exception as exc:  # a runner bug must not hide the other checks
                status, reason = FAIL, f"runner error: {type(exc).__name__}: {exc}"
        statuses[item.id] = status
        report.results.append(CheckResult(item.id, item.title, item.spec, status, reason,
                                          time.monotonic() - started))
    return report


async def run_conformance(setup: Mapping[str, Any], target_url: str | None = None, *,
                          timeout: float = 30.0, only: set[str] | None = None,
                          clock: Callable[[], float] = time.time) -> Report:
    """Run every check against ``target_url`` (default: the endpoint in the setup)."""
    url = target_url or setup["target"]["endpoint"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        runner = Runner(setup, url, session, clock=clock)
        return await run_checks(runner, only=only)


# =========================================================================== the checks
# Each check builds otherwise-valid envelopes (a referral in a fresh thread, consent naming
# the target) and breaks exactly one thing, so exactly one step of SPEC §5.5 can fail.

E = ErrorCode


@check("http.healthz", "GET /healthz answers {\"status\":\"ok\"}", "SPEC \"Federation endpoint\"")
async def _healthz(r: Runner) -> str:
    try:
        async with r.session.get(r.base + "/healthz") as response:
            body = await response.read()
    except aiohttp.ClientError as exc:
        raise CheckFailed(f"target unreachable: {type(exc).__name__}: {exc}") from None
    if response.status != 200:
        raise CheckFailed(f"expected HTTP 200, got {response.status}")
    try:
        value = json.loads(body)
    except ValueError:
        raise CheckFailed("body is not JSON") from None
    if value != {"status": "ok"}:
        raise CheckFailed(f"expected {{\"status\":\"ok\"}}, got {body[:60]!r}")
    return "HTTP 200 {\"status\":\"ok\"}"


# -- delivery, duplicates, replay ------------------------------------------------------------


@check("deliver.accepted", "A valid referral is accepted with a verifying signed receipt",
       "§5.5, §6.1, §6.2")
async def _deliver(r: Runner) -> str:
    consent = r.consent()
    message = r.referral(consent=consent)
    built = r.envelope(message)
    answer = await r.deliver(built)
    receipt = r.expect_accepted(answer, built)
    r.state["main"] = {"thread_id": message["thread_id"], "case_id": message["case_id"],
                       "consent": consent, "built": built, "answer": answer}
    return f"HTTP 200 accepted; receipt verified (key {receipt.recipient_key}, digest of " \
           "the bytes sent)"


@check("deliver.duplicate", "A byte-identical re-delivery gets the original receipt bytes",
       "§6.3", requires=("deliver.accepted",))
async def _duplicate(r: Runner) -> str:
    main = r.state["main"]
    answer = await r.deliver(main["built"])
    if answer.status != 200:
        raise CheckFailed(f"expected HTTP 200 with the original receipt, got {_describe(answer)}")
    if answer.body != main["answer"].body:
        raise CheckFailed("HTTP 200 but the receipt bytes differ from the original receipt "
                          "(a duplicate must get the very same bytes)")
    return "HTTP 200, byte-identical receipt"


@check("deliver.replayed", "The same (sender, id) with different bytes is replayed",
       "§5.5 step 9, §6.3", requires=("deliver.accepted",))
async def _replayed(r: Runner) -> str:
    main = r.state["main"]
    again = r.envelope(r.referral(consent=main["consent"]), message_id=main["built"].message_id)
    return await r.reject(again, E.REPLAYED)


@check("deliver.clock_skew_allowed", "'created' 120 s ahead of the target is accepted",
       "§2.5, §5.5 step 8")
async def _skew_ok(r: Runner) -> str:
    return await r.accept(r.envelope(created=r.now() + 120))


@check("deliver.unicode", "A referral with non-ASCII text (raw UTF-8) is accepted", "§2.1, §5.4")
async def _unicode(r: Runner) -> str:
    message = r.referral(sections={
        "identity": {"given_name": "Mariá ស្រី ศรี", "nationality": "KH"},
        "needs": {"services_requested": ["safe_shelter"], "urgency": "routine",
                  "risk_level": "low"}})
    return await r.accept(r.envelope(message))


# -- transport --------------------------------------------------------------------------------


@check("reject.unsupported_media_type", "A body that is not application/json is refused",
       "§7, \"Federation endpoint\" step 1")
async def _media(r: Runner) -> str:
    built = r.envelope()
    answer = await r.post(built.data, content_type="text/plain")
    return r.expect_rejected(answer, E.UNSUPPORTED_MEDIA_TYPE, data=b"", header_readable=False)


@check("reject.too_large.declared", "A body over 1,048,576 bytes is refused (Content-Length)",
       "§2.5, §5.5 step 1, \"Federation endpoint\" step 2")
async def _too_large(r: Runner) -> str:
    answer = await r.post(b"x" * (MAX_ENVELOPE_BYTES + 1))
    return r.expect_rejected(answer, E.TOO_LARGE, data=b"", header_readable=False)


@check("reject.too_large.chunked", "A chunked body over 1,048,576 bytes is refused",
       "§2.5, \"Federation endpoint\" step 5")
async def _too_large_chunked(r: Runner) -> str:
    chunk = b"x" * 65536
    count = MAX_ENVELOPE_BYTES // len(chunk) + 2

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    answer = await r.post(chunks())
    # The body was never read whole: the digest of the empty string, or of all bytes sent.
    return r.expect_rejected(answer, E.TOO_LARGE, header_readable=False,
                             digests=(EMPTY_DIGEST, crypto.digest(chunk * count)))


# -- strict parsing, encoding, header (§5.5 steps 2-4) ----------------------------------------


def _readable(code: ErrorCode, title: str, spec: str, build: Callable[[Runner], Built],
              check_id: str, *, header_readable: bool = False) -> None:
    async def run(r: Runner) -> str:
        return await r.reject(build(r), code, header_readable=header_readable)
    check(check_id, title, spec)(run)


_readable(E.MALFORMED, "Bytes that are not UTF-8 are malformed", "§2.1 rule 1, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: b"\xff\xfe" + dump_json(o)),
          "reject.malformed.not_utf8")
_readable(E.MALFORMED, "A duplicate key in the outer object is malformed",
          "§2.1 rule 3, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: (
              f'{{"protected":"{o["protected"]}","signature":"{o["signature"]}",'
              f'"signature":"{o["signature"]}"}}').encode()),
          "reject.malformed.duplicate_key")
_readable(E.MALFORMED, "Trailing data after the JSON text is malformed",
          "§2.1 rule 2, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: dump_json(o) + b" {}"),
          "reject.malformed.trailing_data")
_readable(E.MALFORMED, "A float in the signed header is malformed", "§2.1 rule 5, §5.5 step 3",
          lambda r: r.envelope(header_bytes=lambda p: p.replace(b'"v":1,', b'"v":1.0,', 1)),
          "reject.malformed.header_float")
_readable(E.MALFORMED, "A duplicate key in the signed header is malformed",
          "§2.1 rule 3, §5.5 step 3",
          lambda r: r.envelope(header_bytes=lambda p: p[:-1] + b',"v":1}'),
          "reject.malformed.header_duplicate_key")
_readable(E.MALFORMED, "An integer beyond 2^53-1 in the signed header is malformed",
          "§2.1 rule 6, §5.5 step 3",
          lambda r: r.envelope(header={"created": 2**53}),
          "reject.malformed.integer_range")
_readable(E.HEADER_INVALID, "An outer object with a third member is header_invalid",
          "§4, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: {**o, "kid": "x"}),
          "reject.header_invalid.outer_member")
_readable(E.BAD_ENCODING, "base64url with '=' padding is bad_encoding", "§2.2, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: {**o, "signature": o["signature"] + "=="}),
          "reject.bad_encoding.padding")
_readable(E.BAD_ENCODING, "A non-canonical final base64url character is bad_encoding",
          "§2.2, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: {**o, "signature": _set_unused_bit(
              o["signature"])}), "reject.bad_encoding.non_canonical")
_readable(E.BAD_ENCODING, "The standard alphabet ('+', '/') is bad_encoding",
          "§2.2, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: {**o, "signature": "+/" + o["signature"][2:]}),
          "reject.bad_encoding.alphabet")
_readable(E.BAD_ENCODING, "A 63-byte signature is bad_encoding", "§2.2, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: {**o, "signature": b64encode(
              b64decode(o["signature"])[:63])}), "reject.bad_encoding.signature_length")
_readable(E.BAD_ENCODING, "A number where base64url is required is bad_encoding",
          "§2.2, §5.5 step 2",
          lambda r: r.envelope(outer=lambda o: {**o, "signature": 7}),
          "reject.bad_encoding.not_a_string")
_readable(E.UNSUPPORTED_VERSION, "A signed header with v = 2 is unsupported_version",
          "§5.5 step 3, §8", lambda r: r.envelope(header={"v": 2}),
          "reject.unsupported_version")
_readable(E.HEADER_INVALID, "A signed header without 'expires' is header_invalid",
          "§5.1, §5.5 step 4a", lambda r: r.envelope(header={"expires": _DROP}),
          "reject.header_invalid.missing_field")
_readable(E.HEADER_INVALID, "A signed header with an unknown field is header_invalid",
          "§5.1, §5.5 step 4a", lambda r: r.envelope(header={"type": "referral"}),
          "reject.header_invalid.unknown_field")
_readable(E.BAD_ENCODING, "A 15-byte message id is bad_encoding", "§5.5 step 4c",
          lambda r: r.envelope(header={"id": b64encode(bytes(15))}),
          "reject.bad_encoding.message_id_length")


@check("reject.header_invalid.lifetime", "expires more than 30 days after created is "
       "header_invalid", "§2.5, §5.5 step 4d")
async def _lifetime(r: Runner) -> str:
    now = r.now()
    return await r.reject(r.envelope(created=now, expires=now + MAX_LIFETIME + 1),
                          E.HEADER_INVALID, header_readable=False)


# -- sender key and signature (§5.5 steps 5-6) -------------------------------------------------


@check("reject.unknown_sender", "A sender the directory does not list is unknown_sender",
       "§3, §5.5 step 5")
async def _unknown_sender(r: Runner) -> str:
    return await r.reject(r.envelope(signer=r.stranger_signing, sender=r.stranger),
                          E.UNKNOWN_SENDER)


@check("reject.unknown_key", "A key id the directory does not list for the sender is "
       "unknown_key", "§3, §5.5 step 5")
async def _unknown_key(r: Runner) -> str:
    return await r.reject(r.envelope(signer=r.unlisted), E.UNKNOWN_KEY)


@check("reject.revoked_key", "A key revoked before 'created' is revoked_key", "§3, §5.5 step 5")
async def _revoked(r: Runner) -> str:
    return await r.reject(r.envelope(signer=r.revoked), E.REVOKED_KEY)


@check("reject.bad_signature", "A signature with one bit flipped is bad_signature",
       "§4, §5.5 step 6")
async def _bad_signature(r: Runner) -> str:
    return await r.reject(r.envelope(outer=lambda o: {
        **o, "signature": _flip_last_byte(o["signature"])}), E.BAD_SIGNATURE)


@check("reject.bad_signature.tampered_header", "A header edited after signing is bad_signature",
       "§4, §5.5 step 6")
async def _tampered(r: Runner) -> str:
    def edit(o: dict[str, str]) -> dict[str, str]:
        header = json.loads(b64decode(o["protected"]))
        header["expires"] -= 1
        return {**o, "protected": b64encode(dump_json(header))}
    return await r.reject(r.envelope(outer=edit), E.BAD_SIGNATURE)


@check("reject.bad_signature.wrong_label", "A signature under the receipt label is "
       "bad_signature", "§4 (labels), §5.5 step 6")
async def _wrong_label(r: Runner) -> str:
    return await r.reject(r.envelope(label=crypto.RECEIPT_LABEL), E.BAD_SIGNATURE)


# -- addressing and time (§5.5 steps 7-8) ------------------------------------------------------


@check("reject.not_for_me.participant", "An envelope for another participant is not_for_me",
       "§5.5 step 7")
async def _not_for_me(r: Runner) -> str:
    return await r.reject(r.envelope(recipient="conformance-elsewhere"), E.NOT_FOR_ME)


@check("reject.not_for_me.key", "An envelope sealed to a key the target does not hold is "
       "not_for_me", "§5.5 step 7")
async def _not_for_me_key(r: Runner) -> str:
    return await r.reject(r.envelope(recipient_public=r.own_encryption.public_key),
                          E.NOT_FOR_ME)


@check("reject.expired", "An envelope past 'expires' is expired", "§5.5 step 8")
async def _expired(r: Runner) -> str:
    now = r.now()
    return await r.reject(r.envelope(created=now - 7200, expires=now - 3600), E.EXPIRED)


@check("reject.not_yet_valid", "'created' 3600 s ahead of the target is not_yet_valid",
       "§2.5, §5.5 step 8")
async def _not_yet_valid(r: Runner) -> str:
    now = r.now()
    return await r.reject(r.envelope(created=now + 3600), E.NOT_YET_VALID)


# -- decryption and binding (§5.5 steps 10-11) -------------------------------------------------


@check("reject.weak_key", "A sealed box whose ephemeral key is a low-order point is weak_key",
       "§5.3, §5.5 step 10")
async def _weak_key(r: Runner) -> str:
    return await r.reject(r.envelope(ciphertext=LOW_ORDER_POINT + bytes(16) + b"{}"),
                          E.WEAK_KEY)


@check("reject.decrypt_failed", "A signed but corrupted sealed box is decrypt_failed",
       "§5.5 step 10")
async def _decrypt_failed(r: Runner) -> str:
    def corrupt(ciphertext: bytes) -> bytes:
        raw = bytearray(ciphertext)
        raw[40] ^= 0x01  # inside the Poly1305 tag
        return bytes(raw)
    return await r.reject(r.envelope(corrupt=corrupt), E.DECRYPT_FAILED)


@check("reject.too_large.plaintext", "A plaintext over 524,288 bytes is too_large",
       "§2.5, §5.5 step 11")
async def _plaintext_too_large(r: Runner) -> str:
    message = r.referral()
    # Size is judged before the message schema (step 11 before step 12).
    message["sections"]["needs"]["safety_plan"] = "x" * (MAX_PLAINTEXT_BYTES + 1)
    return await r.reject(r.envelope(message), E.TOO_LARGE)


@check("reject.malformed.plaintext", "A plaintext that is not JSON is malformed",
       "§5.5 step 11")
async def _plaintext_malformed(r: Runner) -> str:
    return await r.reject(r.envelope(plaintext=b"{\"v\":1,"), E.MALFORMED)


@check("reject.schema_invalid.inner_fields", "A plaintext with an extra member is "
       "schema_invalid", "§5.2, §5.5 step 11")
async def _inner_fields(r: Runner) -> str:
    return await r.reject(r.envelope(inner={"type": "referral"}), E.SCHEMA_INVALID)


@check("reject.unsupported_version.inner", "A plaintext with v = 2 is unsupported_version",
       "§5.5 step 11")
async def _inner_version(r: Runner) -> str:
    return await r.reject(r.envelope(inner={"v": 2}), E.UNSUPPORTED_VERSION)


@check("reject.binding_mismatch.id", "A plaintext id differing from the header is "
       "binding_mismatch", "§5.2, §5.5 step 11")
async def _binding_id(r: Runner) -> str:
    return await r.reject(r.envelope(inner={"id": new_id()}), E.BINDING_MISMATCH)


@check("reject.binding_mismatch.sender", "A plaintext sender differing from the header is "
       "binding_mismatch", "§5.2, §5.5 step 11")
async def _binding_sender(r: Runner) -> str:
    return await r.reject(r.envelope(inner={"sender": r.stranger}), E.BINDING_MISMATCH)


@check("reject.binding_mismatch.recipient", "A plaintext addressed to another participant is "
       "binding_mismatch (surreptitious forwarding)", "§5.2, §5.5 step 11, §9")
async def _binding_recipient(r: Runner) -> str:
    return await r.reject(r.envelope(inner={"recipient": "conformance-elsewhere"}),
                          E.BINDING_MISMATCH)


# -- message schema, consent, firewall (§5.5 steps 12-13, §12) ---------------------------------


@check("reject.schema_invalid.unknown_type", "An unknown message type is schema_invalid",
       "§5.5 step 12, §8, §12.7")
async def _unknown_type(r: Runner) -> str:
    message = {"type": "note", "case_id": new_id(), "thread_id": new_id(), "seq": 1,
               "sent_at": r.now(), "text": "no such type in v1"}
    return await r.reject(r.envelope(message), E.SCHEMA_INVALID)


@check("reject.schema_invalid.referral", "A referral without its consent record is "
       "schema_invalid", "§5.5 step 12, §12.2")
async def _no_consent(r: Runner) -> str:
    message = r.referral()
    del message["consent"]
    return await r.reject(r.envelope(message), E.SCHEMA_INVALID)


@check("reject.consent_violation", "A section outside the consent's data categories is "
       "consent_violation", "§12.5 rule C7")
async def _consent_violation(r: Runner) -> str:
    message = r.referral()
    message["sections"]["health"] = {"notes": "outside the consented categories"}
    validate_message(message)  # schema-valid: only the consent rule may refuse it
    return await r.reject(r.envelope(message), E.CONSENT_VIOLATION)


@check("reject.consent_violation.recipient", "A referral whose consent does not name the "
       "target is consent_violation", "§12.5 rule C5")
async def _consent_recipient(r: Runner) -> str:
    consent = r.consent(scope={"recipients": {"participants": ["conformance-elsewhere"],
                                              "sectors": ["legal_aid"]}})
    if r.target_sectors & {"legal_aid"}:
        raise CheckSkipped("the target is listed in sector legal_aid")
    return await r.reject(r.envelope(r.referral(consent=consent)), E.CONSENT_VIOLATION)


@check("reject.consent_expired", "A referral under expired consent is consent_expired",
       "§12.5 rule C3")
async def _consent_expired(r: Runner) -> str:
    now = r.now()
    consent = r.consent(given_at=now - 7200, expires_at=now - 60)
    return await r.reject(r.envelope(r.referral(consent=consent)), E.CONSENT_EXPIRED)


@check("reject.firewall", "Police/justice receives case data only for the reporting purpose",
       "§12.6 rule 2, §12.5 rule C1")
async def _firewall(r: Runner) -> str:
    listed = sorted(r.target_sectors & {"police", "justice_courts"})
    if not listed:
        raise CheckSkipped("the target is in no police or justice sector in the test "
                           "directory (setup --target-sectors ...,police to include it)")
    message = r.referral(purposes=["service_provision"])
    return await r.reject(r.envelope(message), E.FIREWALL)


# -- open order (§5.5: the first failing step decides) ------------------------------------------


@check("order.header_before_signature", "A header error is reported before a bad signature",
       "§5.5 steps 4 then 6")
async def _order_header(r: Runner) -> str:
    now = r.now()
    built = r.envelope(created=now, expires=now + MAX_LIFETIME + 1,
                       outer=lambda o: {**o, "signature": _flip_last_byte(o["signature"])})
    return await r.reject(built, E.HEADER_INVALID, header_readable=False)


@check("order.signature_before_addressing", "A bad signature is reported before not_for_me",
       "§5.5 steps 6 then 7")
async def _order_addressing(r: Runner) -> str:
    built = r.envelope(recipient="conformance-elsewhere",
                       outer=lambda o: {**o, "signature": _flip_last_byte(o["signature"])})
    return await r.reject(built, E.BAD_SIGNATURE)


@check("order.signature_before_time", "A bad signature is reported before expiry",
       "§5.5 steps 6 then 8")
async def _order_time(r: Runner) -> str:
    now = r.now()
    built = r.envelope(created=now - 7200, expires=now - 3600,
                       outer=lambda o: {**o, "signature": _flip_last_byte(o["signature"])})
    return await r.reject(built, E.BAD_SIGNATURE)


@check("order.addressing_before_time", "not_for_me is reported before expiry",
       "§5.5 steps 7 then 8")
async def _order_addr_time(r: Runner) -> str:
    now = r.now()
    built = r.envelope(recipient="conformance-elsewhere", created=now - 7200,
                       expires=now - 3600)
    return await r.reject(built, E.NOT_FOR_ME)


@check("order.time_before_replay", "An expired re-use of an accepted id is expired, not "
       "replayed", "§5.5 steps 8 then 9", requires=("deliver.accepted",))
async def _order_replay_time(r: Runner) -> str:
    now = r.now()
    built = r.envelope(message_id=r.state["main"]["built"].message_id, created=now - 7200,
                       expires=now - 3600)
    return await r.reject(built, E.EXPIRED)


@check("order.replay_before_decrypt", "A re-used id with a broken sealed box is replayed",
       "§5.5 steps 9 then 10", requires=("deliver.accepted",))
async def _order_replay_decrypt(r: Runner) -> str:
    def corrupt(ciphertext: bytes) -> bytes:
        return ciphertext[:40] + bytes([ciphertext[40] ^ 1]) + ciphertext[41:]
    built = r.envelope(message_id=r.state["main"]["built"].message_id, corrupt=corrupt)
    return await r.reject(built, E.REPLAYED)


# -- nothing stored on rejection -----------------------------------------------------------------


@check("storage.rejection_not_recorded", "A rejected envelope's id is not recorded: a valid "
       "envelope may use it afterwards", "§5.5 (store nothing before step 13), "
       "\"Federation endpoint\"")
async def _not_recorded(r: Runner) -> str:
    mid = new_id()
    message = r.referral()
    message["sections"]["health"] = {"notes": "outside the consented categories"}
    await r.reject(r.envelope(message, message_id=mid), E.CONSENT_VIOLATION)
    answer = await r.deliver(valid := r.envelope(message_id=mid))
    r.expect_accepted(answer, valid)
    return "rejected, then the same id accepted with valid content"


@check("storage.rejection_repeated", "The same rejected bytes sent again are rejected again "
       "(not a duplicate)", "§6.3")
async def _rejected_again(r: Runner) -> str:
    built = r.envelope(inner={"id": new_id()})
    await r.reject(built, E.BINDING_MISMATCH)
    return await r.reject(built, E.BINDING_MISMATCH)


# -- lifecycle on the main thread (§12.8); the runner is the referrer ------------------------------


async def _in_main(r: Runner, message_type: str, seq: int, code: ErrorCode | None,
                   **fields: Any) -> str:
    main = r.state["main"]
    built = r.envelope(r.control(message_type, main, seq, **fields))
    if code is None:
        return await r.accept(built)
    return await r.reject(built, code)


MAIN = ("deliver.accepted",)


@check("lifecycle.invalid_transition.role", "'accept' from the referrer is "
       "invalid_transition", "§12.8 (table)", requires=MAIN)
async def _wrong_role(r: Runner) -> str:
    return await _in_main(r, "accept", 2, E.INVALID_TRANSITION)


@check("lifecycle.sequence_gap", "seq 3 when 2 is expected is sequence_gap (retryable)",
       "§12.8 (sequence numbers)", requires=MAIN)
async def _gap(r: Runner) -> str:
    return await _in_main(r, "cancel", 3, E.SEQUENCE_GAP, reason="survivor_request")


@check("lifecycle.invalid_transition.old_seq", "A new message re-using seq 1 is "
       "invalid_transition", "§12.8 (sequence numbers)", requires=MAIN)
async def _old_seq(r: Runner) -> str:
    main = r.state["main"]
    message = r.referral(thread=main["thread_id"], case=main["case_id"],
                         consent=main["consent"])
    return await r.reject(r.envelope(message), E.INVALID_TRANSITION)


@check("lifecycle.cancel", "'cancel' seq 2 from the referrer is accepted (sent -> cancelled)",
       "§12.8 (table)", requires=MAIN)
async def _cancel(r: Runner) -> str:
    return await _in_main(r, "cancel", 2, None, reason="survivor_request")


@check("lifecycle.invalid_transition.after_cancel", "'cancel' on a cancelled thread is "
       "invalid_transition", "§12.8 (table)", requires=("lifecycle.cancel",))
async def _after_cancel(r: Runner) -> str:
    return await _in_main(r, "cancel", 3, E.INVALID_TRANSITION, reason="other")


@check("lifecycle.consent_withdrawal", "'consent_withdrawal' on a cancelled thread is "
       "accepted (cancelled -> withdrawn)", "§12.8, §12.10", requires=("lifecycle.cancel",))
async def _withdraw(r: Runner) -> str:
    main = r.state["main"]
    return await _in_main(r, "consent_withdrawal", 3, None,
                          consent_id=main["consent"]["consent_id"], withdrawn_at=r.now() - 60)


@check("reject.consent_withdrawn", "A referral under a withdrawn consent is consent_withdrawn",
       "§12.5 rule C2, §12.10 step 2", requires=("lifecycle.consent_withdrawal",))
async def _withdrawn(r: Runner) -> str:
    message = r.referral(consent=r.state["main"]["consent"])
    return await r.reject(r.envelope(message), E.CONSENT_WITHDRAWN)


@check("lifecycle.expired", "A message sent at or after respond_by meets an expired thread "
       "(invalid_transition)", "§12.9")
async def _respond_by(r: Runner) -> str:
    now = r.now()
    # The referral itself may be sent after respond_by (only answers are judged by it), so
    # no message claims a sent_at in the future.
    message = r.referral(respond_by=now - 60)
    message["sent_at"] = now - 120
    answer = await r.deliver(first := r.envelope(message))
    r.expect_accepted(answer, first)
    late = r.control("cancel", message, 2, sent_at=now, reason="other")
    return await r.reject(r.envelope(late), E.INVALID_TRANSITION)


def check_ids() -> list[str]:
    return [c.id for c in CHECKS]
