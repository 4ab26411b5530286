"""The hash-chained audit log: intact chains verify; edits, deletions and reorders do not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from caseway.node import audit
from caseway.node.storage import SqliteStorage

NOW = 1768435200


async def _log_with_entries(path: Path, n: int = 5) -> None:
    storage = await SqliteStorage.open(path)
    for i in range(n):
        await storage.append_audit(at=NOW + i, event=audit.VIEW, actor=f"staff-{i}",
                                   subject="case-1", detail={"messages": i})
    await storage.close()


async def _verify(path: Path) -> audit.ChainReport:
    storage = await SqliteStorage.open(path)
    try:
        return await audit.verify_entries(storage.audit_entries(batch=2))
    finally:
        await storage.close()


def _tamper(path: Path, *statements: str) -> None:
    """What someone with the database file can do: drop the append-only triggers first."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            db.execute(statement)


async def test_an_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await _log_with_entries(path)
    report = await _verify(path)
    assert report.ok and report.entries == 5
    assert "intact" in report.describe()


async def test_the_node_cannot_update_or_delete_audit_rows(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await _log_with_entries(path)
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'x' WHERE seq = 2")
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 2")


async def test_an_edited_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await _log_with_entries(path)
    _tamper(path, "UPDATE audit SET actor = 'someone-else' WHERE seq = 3")
    report = await _verify(path)
    assert not report.ok and report.first_bad_seq == 3 and "edited" in (report.problem or "")


async def test_an_edited_detail_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await _log_with_entries(path)
    _tamper(path, """UPDATE audit SET detail = '{"messages":99}' WHERE seq = 4""")
    report = await _verify(path)
    assert not report.ok and report.first_bad_seq == 4


async def test_a_deleted_row_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await _log_with_entries(path)
    _tamper(path, "DELETE FROM audit WHERE seq = 2")
    report = await _verify(path)
    assert not report.ok and report.first_bad_seq == 3 and report.entries == 1


async def test_reordered_rows_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    await _log_with_entries(path)
    # Swap the contents of entries 2 and 3, keeping their sequence numbers.
    _tamper(path,
            "UPDATE audit SET seq = -2 WHERE seq = 2",
            "UPDATE audit SET seq = 2 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = -2")
    report = await _verify(path)
    assert not report.ok and report.first_bad_seq == 2


def test_verify_chain_over_pure_entries() -> None:
    first = audit.chain_entry(None, at=NOW, event=audit.SEND, actor="a", subject="m1")
    second = audit.chain_entry(first, at=NOW, event=audit.RECEIPT, actor="a", subject="m1",
                               detail={"outcome": "accepted"})
    assert first.prev_hash == audit.GENESIS and second.prev_hash == first.hash
    assert audit.verify_chain([first, second]).ok
    assert not audit.verify_chain([second, first]).ok
    assert not audit.verify_chain([second]).ok
