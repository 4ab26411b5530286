"""Checkers for ``examples/vectors``: one module per vector ``kind``, each with
``check(vector) -> None`` that raises :class:`VectorMismatch` on any disagreement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from caseway.protocol.errors import CasewayError


class VectorMismatch(Exception):
    """The implementation disagrees with a vector."""


def expect_outcome(vector: dict[str, Any], action: Callable[[], Any]) -> Any:
    """Run ``action``; a positive vector must succeed, a negative one must raise exactly
    ``vector["expected"]["error"]``."""
    expected = vector["expected"]
    try:
        result = action()
    except CasewayError as exc:
        if expected.get("error") == exc.code.value:
            return None
        raise VectorMismatch(f"expected {expected}, got error {exc.code.value}") from None
    if "error" in expected:
        raise VectorMismatch(f"expected error {expected['error']}, but it succeeded")
    return result
