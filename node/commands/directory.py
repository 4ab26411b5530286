"""``caseway directory verify|search|export``: read a signed directory, never trust it unverified.

Every command here first verifies the directory file against the pinned authority key(s)
(``--authority-key``, repeatable, or ``$CASEWAY_AUTHORITY_KEY``): a base64url Ed25519
public key, or a file holding one (``authority.pub.json`` as written by
``caseway authority init``, or a single base64url line). Search and export then work on
what was verified, so a published export is what the authority signed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caseway.keys.directory import MAX_DIRECTORY_BYTES, Directory
from caseway.keys.export import to_csv, to_hsds
from caseway.keys.search import Query, as_json, format_table, parse_day, search
from caseway.keys.trust import DIRECTORY_GRACE_SECONDS, TrustStore
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode
from caseway.protocol.errors import CasewayError, ErrorCode
from caseway.protocol.firewall import SECTORS

AUTHORITY_KEY_ENV = "CASEWAY_AUTHORITY_KEY"
DIRECTORY_ENV = "CASEWAY_DIRECTORY"


def register(sub: Any) -> None:
    directory = sub.add_parser("directory", help="verify, search and export a signed directory")
    dsub = directory.add_subparsers(dest="directory_command", metavar="ACTION", required=True)

    verify = dsub.add_parser("verify", help="verify a signed directory file")
    verify.add_argument("file", type=Path)
    _trust_arguments(verify)
    verify.add_argument("--held-serial", type=int, default=0,
                        help="serial of the directory currently held (lower is refused)")
    verify.add_argument("--json", action="store_true", help="print a JSON summary")
    verify.set_defaults(handler=run_verify)

    find = dsub.add_parser(
        "search", help="find services, e.g. --country KH --sector legal_aid --language km "
        "--open-on sunday")
    _directory_argument(find)
    _trust_arguments(find)
    find.add_argument("--country", type=str.upper, help="ISO 3166-1 alpha-2, e.g. KH")
    find.add_argument("--sector", choices=SECTORS)
    find.add_argument("--service", help="service code, e.g. legal_advice")
    find.add_argument("--language", help="BCP 47 tag; 'km' also finds 'km-KH'")
    find.add_argument("--open-on", type=_day, metavar="DAY", help="e.g. sunday")
    find.add_argument("--weekend", action="store_true", help="open on Saturday or Sunday")
    find.add_argument("--evening", action="store_true", help="open at or after 18:00 local")
    find.add_argument("--open-now", action="store_true", help="open at this moment (or --at)")
    find.add_argument("--nodes-only", action="store_true",
                      help="only participants that take Caseway referrals")
    find.add_argument("--names", default="en", metavar="LANG",
                      help="language of the names in the table (default en)")
    find.add_argument("--json", action="store_true", help="print matching entries as JSON")
    find.set_defaults(handler=run_search)

    export = dsub.add_parser("export", help="publish the directory as CSV or HSDS JSON")
    _directory_argument(export)
    _trust_arguments(export)
    fmt = export.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", action="store_true", help="one row per service")
    fmt.add_argument("--hsds", action="store_true", help="Open Referral HSDS-style JSON")
    export.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    export.set_defaults(handler=run_export)


def _day(text: str) -> str:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _directory_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--directory", type=Path, default=None,
                        help=f"signed directory file (default ${DIRECTORY_ENV} or "
                        "./directory.json)")


def _trust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--authority-key", action="append", default=[], metavar="KEY",
                        help="pinned authority public key (base64url) or a file holding it; "
                        f"repeatable (default ${AUTHORITY_KEY_ENV}); write --authority-key=KEY "
                        "when the key starts with '-'")
    parser.add_argument("--grace", type=int, default=DIRECTORY_GRACE_SECONDS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--at", type=int, default=None, metavar="UNIX_SECONDS",
                        help="judge expiry (and --open-now) at this time instead of now")


def parse_authority_key(value: str) -> bytes:
    """A base64url key, or a path to ``authority.pub.json`` / a one-line key file."""
    path = Path(value)
    text = value
    if path.is_file():
        raw = path.read_text("utf-8").strip()
        if raw.startswith("{"):
            try:
                text = json.loads(raw)["key"]
            except (ValueError, KeyError, TypeError):
                raise CasewayError(ErrorCode.BAD_ENCODING,
                                   "authority key file: expected a 'key' field") from None
        else:
            text = raw
    return b64decode(text, length=crypto.PUBLIC_KEY_BYTES, field="authority key")


def authority_keys(values: list[str]) -> list[bytes]:
    if not values and os.environ.get(AUTHORITY_KEY_ENV):
        values = [os.environ[AUTHORITY_KEY_ENV]]
    if not values:
        raise CasewayError(ErrorCode.UNTRUSTED_AUTHORITY, "no authority key pinned: use "
                           f"--authority-key or set {AUTHORITY_KEY_ENV}")
    return [parse_authority_key(v) for v in values]


def read_directory_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DIRECTORY_BYTES + 2)
    except FileNotFoundError:
        raise CasewayError(ErrorCode.NOT_FOUND, "directory file not found") from None
    return data.rstrip(b"\n")


def load_verified(args: argparse.Namespace, path: Path | None = None,
                  held_serial: int = 0) -> tuple[TrustStore, Directory, int]:
    """Verify the directory file named by the arguments; returns (store, directory, now)."""
    if path is None:
        path = args.directory or Path(os.environ.get(DIRECTORY_ENV, "directory.json"))
    now = args.at if args.at is not None else int(time.time())
    store = TrustStore(authority_keys(args.authority_key), grace_seconds=args.grace,
                       held_serial=held_serial)
    directory = store.load(read_directory_file(path), now)
    if store.expired_warning:
        ends = directory.expires + store.grace_seconds
        print(f"WARNING: directory serial {directory.serial} EXPIRED at "
              f"{_iso(directory.expires)}; it stops being accepted at {_iso(ends)}. "
              "Fetch a fresh directory from the authority.", file=sys.stderr)
    return store, directory, now


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_verify(args: argparse.Namespace) -> int:
    store, directory, _ = load_verified(args, args.file, args.held_serial)
    nodes = sum(1 for p in directory.participants if p.endpoint)
    summary = {
        "result": "ok", "serial": directory.serial, "authority": directory.authority,
        "issued": directory.issued, "expires": directory.expires,
        "expired_warning": store.expired_warning,
        "participants": len(directory.participants), "nodes": nodes,
        "information_only": len(directory.participants) - nodes,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"directory OK: serial {directory.serial}, signed by authority key "
          f"{directory.authority}")
    print(f"issued {_iso(directory.issued)}, expires {_iso(directory.expires)}")
    print(f"{summary['participants']} participants: {nodes} take referrals, "
          f"{summary['information_only']} information-only")
    return 0


def run_search(args: argparse.Namespace) -> int:
    _, directory, now = load_verified(args)
    query = Query(
        country=args.country, sector=args.sector, service=args.service,
        language=args.language, open_on=args.open_on, weekend=args.weekend,
        evening=args.evening, open_at=now if args.open_now else None,
        has_endpoint=True if args.nodes_only else None,
    )
    results = search(directory.participants, query)
    if args.json:
        print(json.dumps(as_json(results), indent=2, ensure_ascii=False))
        return 0
    if not results:
        print("no matching services")
        return 0
    print(format_table(results, args.names))
    print(f"\n{len(results)} found (directory serial {directory.serial}; 'info' = "
          "information-only, contact directly)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    _, directory, _ = load_verified(args)
    if args.csv:
        text = to_csv(directory)
    else:
        text = json.dumps(to_hsds(directory), indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, "utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
