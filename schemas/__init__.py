"""JSON Schema 2020-12 documents for every Caseway document type, shipped as package data.

``load(name)`` returns a schema by file stem (``"envelope"``, ``"protected-header"``, ...);
``validator(name)`` returns a compiled, cached Draft 2020-12 validator whose ``$ref``s to
sibling schemas resolve locally (never over the network).
"""

from __future__ import annotations

import json
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


@cache
def validator(name: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load(name), registry=_registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)
