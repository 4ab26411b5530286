"""The ``caseway`` command. Each command group lives in its own module under
``caseway.node.commands`` and exposes ``register(subparsers)``; this file only wires them.

Every command handler returns an exit code. Typed errors print as one readable line
(``error: <code>: <detail>``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from caseway.protocol.errors import CasewayError

COMMAND_MODULES = (
    "vectors",
    "authority",
    "directory",
    "node",
    "cases",
    "conformance",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caseway",
        description="Caseway: signed, encrypted, consent-enforced referrals between agencies.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"caseway.node.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 1
    try:
        return int(handler(args) or 0)
    except CasewayError as exc:
        print(f"error: {exc.code.value}: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
