"""JSON Schema 2020-12 documents for every Caseway document type, shipped as package data.

``load(name)`` returns a schema by file stem (``"envelope"``, ``"protected-header"``, ...);
``validator(name)`` returns a compiled, cached Draft 2020-12 validator whose ``$ref``s to
sibling schemas resolve locally (never over the network).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_BASE = "https://caseway.dev/schemas/v1/"


@cache
def load(name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def names() -> list[str]:
    return sorted(
        entry.name.removesuffix(".schema.json")
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".schema.json")
    )


@cache
def _registry() -> Any:
    from referencing import Registry, Resource

    resources_ = [(load(n)["$id"], Resource.from_contents(load(n))) for n in names()]
    return Registry().with_resources(resources_)


def ecma_pattern(pattern: str) -> str:
    """Translate a JSON Schema (ECMA-262) pattern for Python's ``re``.

    The one difference that matters for Caseway's patterns: in Python, ``$`` also matches
    just before a trailing newline, so ``^[a-z]+$`` would accept ``"abc\\n"``. ECMA-262's
    ``$`` (without the multiline flag) matches only at the very end, which Python spells
    ``\\Z``. Escapes and character classes are copied unchanged.
    """
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        out.append("\\Z" if char == "$" and not in_class else char)
        index += 1
    return "".join(out)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(ecma_pattern(pattern))


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and _compiled(pattern).search(instance) is None:
        # No instance value in the message: error texts can reach logs.
        yield ValidationError("does not match the required pattern")


@cache
def validator_class() -> Any:
    """Draft 2020-12 with ECMA-262 ``pattern`` semantics (see :func:`ecma_pattern`)."""
    from jsonschema import Draft202012Validator, validators

    return validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, {"pattern": _pattern_keyword})


@cache
def validator(name: str) -> Any:
    cls = validator_class()
    return cls(load(name), registry=_registry(), format_checker=cls.FORMAT_CHECKER)
