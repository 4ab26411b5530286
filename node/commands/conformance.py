"""`caseway conformance ...` commands (placeholder until its issue lands)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """No commands yet."""
