"""``caseway conformance``: check another implementation's node over HTTP.

- ``caseway conformance setup --out DIR (--target-participant FILE | --target-id ID
  --target-endpoint URL --target-signing-key B64 --target-encryption-key B64)
  [--target-sectors a,b]``: write the runner's test authority key, a signed test directory
  listing the runner and the target, and ``runner.json`` (see
  :mod:`caseway.node.conformance_setup`).
- ``caseway conformance [--setup DIR] [--target URL] [--junit FILE] [--check ID ...]``:
  run every check (:mod:`caseway.node.conformance`), print one line per check, write a JUnit
  XML report if asked, and exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from caseway.protocol.encoding import parse_json

from ..conformance import check_ids, load_runner_setup, run_conformance
from ..conformance_setup import DEFAULT_SETUP_DIR, DEFAULT_VALID_DAYS


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "conformance", help="black-box conformance checks against a node over HTTP",
        description="Play a peer node against a target node and check it against SPEC.md. "
                    "Run `caseway conformance setup` first; see examples/README.md.")
    parser.add_argument("--setup", type=Path, default=Path(DEFAULT_SETUP_DIR),
                        help=f"setup folder (default ./{DEFAULT_SETUP_DIR})")
    parser.add_argument("--target", help="base URL of the target's federation listener "
                        "(default: the endpoint given to setup)")
    parser.add_argument("--junit", type=Path, help="write a JUnit XML report to this file")
    parser.add_argument("--check", action="append", metavar="ID",
                        help="run only this check (repeatable; see --list)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds per HTTP request (default 30)")
    parser.set_defaults(handler=run)
    actions = parser.add_subparsers(dest="conformance_command", metavar="ACTION")
    setup = actions.add_parser("setup", help="write the runner's keys and a test directory "
                               "for the target to trust")
    setup.add_argument("--out", type=Path, default=Path(DEFAULT_SETUP_DIR),
                       help=f"folder to write (default ./{DEFAULT_SETUP_DIR})")
    setup.add_argument("--target-participant", type=Path, metavar="FILE",
                       help="the target's directory entry (participant JSON, "
                       "schemas/participant.schema.json)")
    setup.add_argument("--target-id", help="the target's participant id")
    setup.add_argument("--target-endpoint", help="the target's federation base URL")
    setup.add_argument("--target-signing-key", metavar="B64",
                       help="the target's Ed25519 public key (base64url, 32 bytes; write "
                       "--target-signing-key=B64 when it starts with '-')")
    setup.add_argument("--target-encryption-key", metavar="B64",
                       help="the target's X25519 public key (base64url, 32 bytes; write "
                       "--target-encryption-key=B64 when it starts with '-')")
    setup.add_argument("--target-sectors", help="comma-separated sectors to list the target "
                       "under (default shelter,police: police lets the runner provoke the "
                       "firewall)")
    setup.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS,
                       help=f"directory lifetime in days (default {DEFAULT_VALID_DAYS})")
    setup.set_defaults(handler=run_setup)


def run_setup(args: argparse.Namespace) -> int:
    from ..conformance_setup import build_setup, target_entry, write_setup

    entry = None
    if args.target_participant is not None:
        entry = parse_json(args.target_participant.read_bytes(), max_bytes=1 << 16)
    sectors = None if args.target_sectors is None else [
        s.strip() for s in args.target_sectors.split(",") if s.strip()]
    target = target_entry(participant=args.target_id, endpoint=args.target_endpoint,
                          signing_key=args.target_signing_key,
                          encryption_key=args.target_encryption_key, sectors=sectors,
                          entry=entry)
    files = build_setup(target, valid_days=args.valid_days)
    write_setup(args.out, files)
    print(f"wrote {len(files)} files to {args.out}")
    print(f"  pin   {args.out / 'authority.pub.json'}")
    print(f"  load  {args.out / 'directory.json'}")
    print(f"  then  caseway conformance --setup {args.out} --target {target['endpoint']}")
    print(f"steps: {args.out / 'SETUP.md'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        for check_id in check_ids():
            print(check_id)
        return 0
    setup = load_runner_setup(args.setup)
    only = set(args.check) if args.check else None
    if only is not None and (unknown := only - set(check_ids())):
        print(f"unknown check(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    report = asyncio.run(run_conformance(setup, args.target, timeout=args.timeout, only=only))
    sys.stdout.write(report.summary())
    if args.junit is not None:
        args.junit.write_bytes(report.junit_xml())
        print(f"JUnit report: {args.junit}")
    return 0 if report.ok else 1
