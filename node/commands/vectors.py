"""``caseway vectors check DIR``: re-verify every test vector in ``DIR``.

Each vector file is JSON with a ``kind``; the checker for a kind lives in
``caseway.node.vectorcheck.<kind>`` and exposes ``check(vector) -> None``, raising
``VectorMismatch`` when the implementation disagrees with the vector. A negative vector
passes only if it fails with *exactly* its named error code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from caseway.node.vectorcheck import VectorMismatch


def register(sub: Any) -> None:
    vectors = sub.add_parser("vectors", help="test vectors for integrators")
    vsub = vectors.add_subparsers(dest="vectors_command", metavar="ACTION", required=True)
    check = vsub.add_parser("check", help="re-verify every vector in a directory")
    check.add_argument("directory", type=Path)
    check.add_argument("-v", "--verbose", action="store_true", help="list every vector")
    check.set_defaults(handler=run_check)


def load_vectors(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(directory.rglob("*.json")):
        if path.name == "index.json":
            continue
        vector = json.loads(path.read_text("utf-8"))
        if isinstance(vector, dict) and "kind" in vector:
            found.append((path, vector))
    return found


def check_vector(vector: dict[str, Any]) -> None:
    module = importlib.import_module(f"caseway.node.vectorcheck.{vector['kind']}")
    module.check(vector)


def run_check(args: argparse.Namespace) -> int:
    vectors = load_vectors(args.directory)
    if not vectors:
        print(f"no vectors found under {args.directory}", file=sys.stderr)
        return 1
    failures = 0
    for path, vector in vectors:
        name = path.relative_to(args.directory)
        try:
            check_vector(vector)
        except VectorMismatch as exc:
            failures += 1
            print(f"FAIL {name}: {exc}")
            continue
        if args.verbose:
            print(f"ok   {name}")
    print(f"{len(vectors) - failures} passed, {failures} failed")
    return 1 if failures else 0
