"""Node processes for the crash-consistency tests (not a test module).

A :class:`NodeProcess` runs ``tests/crash_node.py`` (``run_node`` with the real rules, a
real config and real HTTP on loopback) as an OS process that a test can SIGKILL and
restart on the same port and database. Waiting is polling with deadlines, never sleeping
for synchronisation.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reliability_helpers import Peer, fixed_identity, seed

RUNNER = Path(__file__).resolve().parent / "crash_node.py"
START_DEADLINE = 60.0
# No rate limits in the way of thousands of envelopes.
RECEIVER_CONFIG = {"ingress": {"sender_rate": 100000.0, "sender_burst": 100000.0,
                               "address_rate": 100000.0, "address_burst": 100000.0}}


def wait_until(predicate: Callable[[], bool], deadline: float, what: str,
               process: NodeProcess | None = None) -> None:
    """Poll ``predicate`` until it holds; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not predicate():
        if process is not None and process.proc is not None and process.proc.poll() is not None:
            raise AssertionError(f"{process.name} exited ({process.proc.returncode}) while "
                                 f"waiting for {what}:\n{process.output_tail()}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(0.02)  # polling interval, not synchronisation


def scalar(database: Path, sql: str) -> int:
    """One number from a node's database, read by this (test) process."""
    if not database.exists():
        return 0
    try:
        db = sqlite3.connect(database, timeout=10)
        try:
            row = db.execute(sql).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:  # not migrated yet, or busy past the timeout
        return 0
    return 0 if row is None or row[0] is None else int(row[0])


class NodeProcess:
    """One node as an OS process that the test can kill and restart."""

    def __init__(self, name: str, participant: str, home: Path, directory: list[Peer], *,
                 config: dict[str, Any], feed: dict[str, Any] | None = None,
                 interpreter_args: Sequence[str] = ()) -> None:
        self.name = name
        self.interpreter_args = tuple(interpreter_args)  # e.g. ("-m", "cProfile", ...)
        self.identity = fixed_identity(participant)
        self.home = home
        self.home.mkdir(parents=True)
        self.spec_path = home.parent / f"{name}-spec.json"
        self.log_path = home.parent / f"{name}.log"
        self.peers = directory
        self.config = config
        self.feed = feed
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def database(self) -> Path:
        return self.home / "caseway.db"

    def write_spec(self) -> None:
        spec = {"home": str(self.home), "participant": self.identity.participant,
                "signing": seed(self.identity.participant, "v1", "signing").hex(),
                "encryption": seed(self.identity.participant, "v1", "encryption").hex(),
                "storage_key": seed(self.identity.participant, "storage").hex(),
                "port": self.port, "peers": [p.to_json() for p in self.peers],
                "config": self.config, "feed": self.feed}
        self.spec_path.write_text(json.dumps(spec), "utf-8")

    def start(self) -> None:
        ready = self.home / "ready.json"
        ready.unlink(missing_ok=True)
        self.write_spec()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *self.interpreter_args, str(RUNNER),
                                          str(self.spec_path)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.starts += 1
        wait_until(ready.exists, START_DEADLINE, f"{self.name} to start", self)
        info = json.loads(ready.read_text("utf-8"))
        assert info["pid"] == self.proc.pid
        self.port = info["federation_port"]  # restart on the same port (peers know it)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        """Graceful stop (SIGTERM), bounded."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None

    def output_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
