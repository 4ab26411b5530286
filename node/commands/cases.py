"""Case work from the command line, for an agency without a case-management system:
``caseway refer | inbox | outbox | case ... | consent ...``.

Rules of this module:

1. Every command here is a client of the node's local API (``node/openapi.json``): it
   never opens the database or the keystore, so what a caseworker can do from the command
   line is exactly what the node allows their token to do, and every read is audited by
   the node.
2. Which node and which token: ``--node-url`` (or ``$CASEWAY_NODE_URL``), else the local
   API address in the node home's configuration (``--dir``, default ``$CASEWAY_HOME``);
   ``$CASEWAY_TOKEN``, else ``--token-file``, else the token saved in the node home by
   ``caseway token create --save``.
3. People get readable tables and sentences; ``--json`` prints the API's answer as is, for
   scripts. Errors are one plain sentence on standard error; the exit status says which
   kind: 0 done, 1 refused by the node, 2 a problem on this side (configuration, file,
   arguments), 3 the node could not be reached.
4. Case contents are printed only by ``caseway case show``, the one command that asks to
   read them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.messages import (
    CANCEL_REASONS,
    CLOSE_OUTCOMES,
    DATA_CATEGORIES,
    DECLINE_REASONS,
    SERVICES,
    UPDATE_KINDS,
)

from ..client import ApiProblem, NodeClient, NodeUnreachable
from ..config import ConfigError, load_config
from ..home import local_api_url, read_saved_token, resolve_home

NODE_URL_ENV = "CASEWAY_NODE_URL"
TOKEN_ENV = "CASEWAY_TOKEN"
API = "/api/v1"
EXIT_REFUSED, EXIT_LOCAL, EXIT_UNREACHABLE = 1, 2, 3
#: Fields of a full referral message (examples/referrals/*.json) the node fills in itself.
NODE_FILLED = ("type", "case_id", "thread_id", "seq", "sent_at")
# This node never issues an id starting with "-" (caseway.node.cases.typeable_id); a peer
# running another implementation might, and argparse would read it as an option.
ID_HINT = "an id starting with '-' goes after --, e.g. `caseway case show -- -AbC…`"


def api_errors(handler: Callable[[argparse.Namespace], int]
               ) -> Callable[[argparse.Namespace], int]:
    """Rule 3: typed failures as one sentence and an exit status."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ApiProblem as exc:
            if getattr(args, "json", False):
                print(json.dumps({"error": exc.code, "status": exc.status,
                                  "detail": exc.detail, **exc.extra}), file=sys.stderr)
            else:
                print(str(exc), file=sys.stderr)
            return EXIT_REFUSED
        except NodeUnreachable as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_UNREACHABLE
        except ConfigError as exc:
            print(f"error: configuration: {exc}", file=sys.stderr)
            return EXIT_LOCAL

    return wrapped


# --------------------------------------------------------------------------- arguments


def register(sub: Any) -> None:
    refer = sub.add_parser("refer", help="send a referral (consent is checked by the node)",
                           description="Send a referral to another agency. The file holds "
                           "the consent, purposes, survivor reference and the sections to "
                           "share (see examples/referrals/).")
    refer.add_argument("--to", required=True, metavar="PARTICIPANT",
                       help="receiving agency, e.g. ph-shelter-manila")
    refer.add_argument("file", type=Path, help="referral JSON file")
    _connection(refer)
    refer.set_defaults(handler=run_refer)

    inbox = sub.add_parser("inbox", help="referrals received from other agencies")
    inbox.add_argument("--state", help="only this state, e.g. received or accepted")
    _connection(inbox)
    inbox.set_defaults(handler=run_inbox)

    outbox = sub.add_parser("outbox", help="messages sent: delivered, waiting or failed")
    outbox.add_argument("--state", choices=("queued", "delivered", "dead"),
                        help="queued = waiting to be delivered; dead = given up")
    outbox.add_argument("--to", dest="destination", metavar="PARTICIPANT")
    _connection(outbox)
    outbox.set_defaults(handler=run_outbox)

    case = sub.add_parser("case", help="look at or act on a case")
    csub = case.add_subparsers(dest="case_command", metavar="ACTION", required=True)

    show = csub.add_parser("show", help="the case's messages and their delivery (this read "
                           "is recorded in the audit log)")
    show.add_argument("id", metavar="CASE_ID", help=f"the case id ({ID_HINT})")
    _connection(show)
    show.set_defaults(handler=run_case_show)

    cases = csub.add_parser("list", help="every case this node holds (no contents)")
    _connection(cases)
    cases.set_defaults(handler=run_case_list)

    accept = _action(csub, "accept", "accept a referral you received")
    accept.add_argument("--ref", dest="receiver_ref", help="your own file number")
    accept.add_argument("--note")

    decline = _action(csub, "decline", "decline a referral you received")
    decline.add_argument("--reason", required=True, choices=DECLINE_REASONS)
    decline.add_argument("--note")

    ask = _action(csub, "request-info", "ask the referring agency for more information")
    ask.add_argument("--categories", required=True, type=_list,
                     help=f"comma-separated, from: {', '.join(DATA_CATEGORIES)}")
    ask.add_argument("--note")

    answer = _action(csub, "answer", "answer a request for information (consent is checked)")
    answer.add_argument("file", type=Path, help="JSON file: {\"sections\": {...}}")

    update = _action(csub, "update", "tell the referring agency what happened")
    update.add_argument("--kind", required=True, choices=UPDATE_KINDS)
    update.add_argument("--service", choices=SERVICES)
    update.add_argument("--at", type=int, metavar="UNIX_SECONDS", help="when (appointments)")
    update.add_argument("--note")

    close = _action(csub, "close", "close the case with an outcome")
    close.add_argument("--outcome", required=True, choices=CLOSE_OUTCOMES)
    close.add_argument("--services", dest="services_delivered", type=_list,
                       help="comma-separated services delivered")
    close.add_argument("--note")

    cancel = _action(csub, "cancel", "cancel a referral you sent (supervisor)")
    cancel.add_argument("--reason", required=True, choices=CANCEL_REASONS)
    cancel.add_argument("--note")

    consent = sub.add_parser("consent", help="the survivor's consent")
    ksub = consent.add_subparsers(dest="consent_command", metavar="ACTION", required=True)
    withdraw = ksub.add_parser(
        "withdraw", help="record that the survivor withdrew consent (supervisor): every "
        "agency that received her case is told to erase it")
    withdraw.add_argument("id", metavar="CONSENT_ID", help=f"the consent id ({ID_HINT})")
    _connection(withdraw)
    withdraw.set_defaults(handler=run_consent_withdraw)
    status = ksub.add_parser("status", help="erasure status after a withdrawal")
    status.add_argument("id", metavar="CONSENT_ID", help=f"the consent id ({ID_HINT})")
    _connection(status)
    status.set_defaults(handler=run_consent_status)


def _action(csub: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = csub.add_parser(name, help=text, description=text)
    parser.add_argument("id", metavar="ID", help=f"case id or thread id ({ID_HINT})")
    _connection(parser)
    parser.set_defaults(handler=run_case_action, action=name)
    return parser


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None, metavar="HOME",
                        help="node home (default $CASEWAY_HOME or ./caseway-node)")
    parser.add_argument("--node-url", default=None, metavar="URL",
                        help=f"local API address (default ${NODE_URL_ENV} or from the home)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding the access token (default ${TOKEN_ENV}, or the "
                        "token saved in the home)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def client_for(args: argparse.Namespace) -> NodeClient:
    """Rule 2."""
    home = resolve_home(args.dir)
    url = args.node_url or os.environ.get(NODE_URL_ENV)
    if not url:
        if not home.is_dir():
            raise ConfigError(f"no node home at {home}: give --dir HOME (or --node-url)")
        url = local_api_url(load_config(home))
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and args.token_file is not None:
        try:
            token = args.token_file.read_text("utf-8").strip() or None
        except OSError:
            raise ConfigError(f"cannot read the token file {args.token_file}") from None
    if token is None:
        token = read_saved_token(home)
    if token is None:
        raise ConfigError(f"no access token: set {TOKEN_ENV}, give --token-file, or create "
                          f"one with `caseway token create --dir {home} --name YOUR-NAME "
                          "--role caseworker --save`")
    return NodeClient(url, token)


# --------------------------------------------------------------------------- output


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def relative(ts: int | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    delta = int(ts - (time.time() if now is None else now))
    if delta <= 0:
        return "due now"
    if delta < 120:
        return f"in {delta} s"
    if delta < 7200:
        return f"in {delta // 60} min"
    return f"at {when(ts)}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# --------------------------------------------------------------------------- refer


def referral_request(obj: Mapping[str, Any], to: str) -> dict[str, Any]:
    """The local API's ReferralRequest from a referral file. A full referral message (as in
    examples/referrals/) is accepted too: the node assigns the ids, sequence and time, and
    a ``respond_by`` already past is dropped (the node's default applies)."""
    if not isinstance(obj, dict):
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "the referral file must hold a JSON object")
    request = {k: v for k, v in obj.items() if k not in NODE_FILLED}
    respond_by = request.get("respond_by")
    if isinstance(respond_by, int) and respond_by <= time.time():
        del request["respond_by"]
    request["to"] = to
    return request


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read {path} as text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


@api_errors
def run_refer(args: argparse.Namespace) -> int:
    request = referral_request(_read_json(args.file), args.to)
    client = client_for(args)
    sent = client.post(f"{API}/cases", request)
    if args.json:
        emit_json(sent)
        return 0
    print(f"Referral to {sent['destination']} accepted by your node and queued for delivery.")
    print(f"  case:    {sent['case_id']}")
    print(f"  thread:  {sent['thread_id']}")
    if sent.get("consent_id"):
        print(f"  consent: {sent['consent_id']}")
    print("Check delivery with `caseway outbox`.")
    return 0


# --------------------------------------------------------------------------- lists


@api_errors
def run_inbox(args: argparse.Namespace) -> int:
    answer = client_for(args).get(f"{API}/inbox", state=args.state)
    if args.json:
        emit_json(answer)
        return 0
    threads = answer["threads"]
    if not threads:
        print("Inbox is empty.")
        return 0
    print(table(("UPDATED", "FROM", "STATE", "CASE", "THREAD"),
                [(when(t["updated"]), t["peer"], state_text(t["state"]), t["case_id"],
                  t["thread_id"])
                 for t in threads]))
    print(f"\n{len(threads)} thread(s). Read one with `caseway case show CASE`.")
    return 0


#: Thread states (SPEC.md lifecycle) in a caseworker's words.
STATES = {
    "new": "new", "sent": "new, not answered yet", "info_requested": "information requested",
    "accepted": "accepted", "in_progress": "in progress", "declined": "declined",
    "closed": "closed", "cancelled": "cancelled", "expired": "expired (no answer in time)",
    "withdrawn": "consent withdrawn", "erased": "erased",
}


def state_text(state: str) -> str:
    return STATES.get(state, state)


def delivery_problem(error: str | None) -> str:
    """An outbox ``last_error`` (delivery.py) in plain words, with the code kept."""
    if not error:
        return "no answer"
    if error.startswith("network:"):
        return "could not connect"
    if error == "no_endpoint":
        return "the directory lists no address for them"
    if ":no_receipt:" in error:
        return f"their answer had no valid receipt ({error.rsplit(':', 1)[-1]})"
    if error == "expired":
        return "not delivered before it expired"
    return f"refused by them ({error})"


def delivery_text(item: Mapping[str, Any], now: float | None = None) -> str:
    state = item["state"]
    if state == "delivered":
        return f"delivered {when(item.get('finished_at'))}"
    if state == "dead":
        return f"FAILED, given up: {delivery_problem(item.get('last_error'))}"
    attempts = item.get("attempts", 0)
    if not attempts:
        return "waiting to be sent"
    next_at = item.get("next_attempt_at")
    clock = datetime.fromtimestamp(next_at).strftime("%H:%M:%S") if next_at else "-"
    return (f"waiting, next try {clock} ({relative(next_at, now)}); tried {attempts}x: "
            f"{delivery_problem(item.get('last_error'))}")


@api_errors
def run_outbox(args: argparse.Namespace) -> int:
    answer = client_for(args).get(f"{API}/outbox", state=args.state,
                                  destination=args.destination)
    if args.json:
        emit_json(answer)
        return 0
    items = answer["items"]
    if not items:
        print("Outbox is empty.")
        return 0
    print(table(("#", "SENT", "TO", "MESSAGE", "CASE", "DELIVERY"),
                [(i["id"], when(i["created"]), i["destination"], i.get("type") or "-",
                  i["case_id"], delivery_text(i)) for i in items]))
    waiting = sum(1 for i in items if i["state"] == "queued")
    dead = sum(1 for i in items if i["state"] == "dead")
    print(f"\n{len(items)} message(s): {waiting} waiting, {dead} failed (given up).")
    return 0


@api_errors
def run_case_list(args: argparse.Namespace) -> int:
    answer = client_for(args).get(f"{API}/cases")
    if args.json:
        emit_json(answer)
        return 0
    rows = []
    for case in answer["cases"]:
        for t in case["threads"]:
            rows.append((case["case_id"], "erased" if case["erased"] else state_text(t["state"]),
                         t["role"], t["peer"], when(t["updated"])))
    if not rows:
        print("No cases.")
        return 0
    print(table(("CASE", "STATE", "WE ARE", "WITH", "UPDATED"), rows))
    return 0


# --------------------------------------------------------------------------- case show


def _summary(message: Mapping[str, Any] | None) -> str:
    if message is None:
        return "(erased)"
    kind = message.get("type")
    parts: list[str] = []
    if kind == "referral":
        parts.append(f"survivor ref {message.get('survivor_ref')}; sections: "
                     + ", ".join(sorted(message.get("sections", {}))))
    for key in ("outcome", "reason", "kind", "service", "receiver_ref"):
        if message.get(key):
            parts.append(f"{key.replace('_', ' ')}: {message[key]}")
    if message.get("categories"):
        parts.append("asks for: " + ", ".join(message["categories"]))
    if kind == "info_response" and message.get("sections"):
        parts.append("answers: " + ", ".join(sorted(message["sections"])))
    if message.get("services_delivered"):
        parts.append("services: " + ", ".join(message["services_delivered"]))
    if message.get("note"):
        parts.append(f"note: {message['note']}")
    return "; ".join(parts)


@api_errors
def run_case_show(args: argparse.Namespace) -> int:
    timeline = client_for(args).get(f"{API}/cases/{quote(args.id, safe='')}")
    if args.json:
        emit_json(timeline)
        return 0
    print(f"Case {timeline['case_id']}")
    for t in timeline["threads"]:
        role = "we referred to" if t["role"] == "referrer" else "referred to us by"
        print(f"  thread {t['thread_id']}: {role} {t['peer']}; {state_text(t['state'])}"
              + (f"; consent {t['consent_id']}" if t.get("consent_id") else ""))
    tomb = timeline.get("tombstone")
    if tomb:
        print(f"  ERASED {when(tomb.get('erased_at'))} ({tomb.get('reason')}): "
              f"{tomb.get('contents_erased')} message(s) deleted")
    messages = timeline["messages"]
    if not messages:
        print("No messages.")
    for m in messages:
        if m["direction"] == "out":
            line = f"sent to {m['peer']}"
            if m.get("delivery"):
                line += f", {delivery_text(m['delivery'])}"
        else:
            line = f"received from {m['peer']}"
        print(f"\n  {when(m['at'])}  {(m.get('type') or '?').upper()}  {line}")
        print(textwrap.fill(_summary(m.get("message")), width=88, initial_indent="      ",
                            subsequent_indent="      ", break_on_hyphens=False))
    return 0


# --------------------------------------------------------------------------- case actions

#: action -> (API path segment, role the thread must have on this node, request fields)
ACTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "accept": ("accept", "receiver", ("receiver_ref", "note")),
    "decline": ("decline", "receiver", ("reason", "note")),
    "request-info": ("info-requests", "receiver", ("categories", "note")),
    "answer": ("info-responses", "referrer", ()),
    "update": ("updates", "receiver", ("kind", "service", "at", "note")),
    "close": ("close", "receiver", ("outcome", "services_delivered", "note")),
    "cancel": ("cancel", "referrer", ("reason", "note")),
}
DONE = {
    "accept": "Accepted", "decline": "Declined", "request-info": "Information requested",
    "answer": "Answer sent", "update": "Update sent", "close": "Closed",
    "cancel": "Cancelled",
}


def resolve_thread(client: NodeClient, ident: str, role: str) -> str:
    """A thread id from a thread id or a case id (the case's one thread in ``role``)."""
    cases = client.get(f"{API}/cases", limit=1000)["cases"]
    for case in cases:
        for t in case["threads"]:
            if t["thread_id"] == ident:
                return ident
    for case in cases:
        if case["case_id"] == ident:
            mine = [t for t in case["threads"] if t["role"] == role]
            if len(mine) == 1:
                return str(mine[0]["thread_id"])
            if not mine:
                raise ConfigError(f"case {ident} has no thread where this node is the "
                                  f"{role}")
            raise ConfigError(f"case {ident} has {len(mine)} threads; give the thread id "
                              "(see `caseway case show`)")
    return ident  # unknown here: let the node answer (not_found)


@api_errors
def run_case_action(args: argparse.Namespace) -> int:
    segment, role, fields = ACTIONS[args.action]
    if args.action == "answer":
        body = _read_json(args.file)
        if not isinstance(body, dict):
            raise ConfigError(f"{args.file} must hold a JSON object")
    else:
        body = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    client = client_for(args)
    thread = resolve_thread(client, args.id, role)
    sent = client.post(f"{API}/threads/{quote(thread, safe='')}/{segment}", body)
    if args.json:
        emit_json(sent)
        return 0
    print(f"{DONE[args.action]}: message {sent['type']} #{sent['seq']} to "
          f"{sent['destination']} queued for delivery (case {sent['case_id']}).")
    return 0


# --------------------------------------------------------------------------- consent

ERASURE_STATUS = {
    "not_sent": "never received the case",
    "pending": "withdrawal waiting to be delivered",
    "delivered": "withdrawal delivered; waiting for their erasure confirmation",
    "confirmed": "erasure confirmed (signed)",
    "failed": "withdrawal could not be delivered",
}


def print_erasure(status: Mapping[str, Any]) -> None:
    state = "withdrawn" if status.get("withdrawn") else "not withdrawn"
    print(f"Consent {status['consent_id']}: {state}"
          + (f" at {when(status.get('withdrawn_at'))}" if status.get("withdrawn_at") else ""))
    for local in status.get("local", []):
        print(f"  here: case {local.get('case_id')} erased {when(local.get('erased_at'))}")
    rows = []
    for r in status.get("recipients", []):
        confirmed = when(r.get("confirmed_at")) if r.get("confirmed_at") else ""
        rows.append((r["participant"], ERASURE_STATUS.get(r["status"], r["status"]),
                     confirmed))
    if rows:
        print(table(("AGENCY", "ERASURE", "CONFIRMED"), rows))


@api_errors
def run_consent_withdraw(args: argparse.Namespace) -> int:
    status = client_for(args).post(f"{API}/consents/{quote(args.id, safe='')}/withdrawal", {})
    if args.json:
        emit_json(status)
        return 0
    print("Withdrawal recorded. The case is erased on this node; every agency that received "
          "it is told to erase it and to confirm.")
    print_erasure(status)
    print("Follow the confirmations with `caseway consent status " + args.id + "`.")
    return 0


@api_errors
def run_consent_status(args: argparse.Namespace) -> int:
    status = client_for(args).get(f"{API}/consents/{quote(args.id, safe='')}/erasure")
    if args.json:
        emit_json(status)
        return 0
    print_erasure(status)
    return 0
