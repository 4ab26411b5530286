"""Acceptance: `make demo` runs two real nodes through the whole story and exits 0.

Runs ``examples/demo.py`` as a user would (a subprocess) and checks the outcomes it
narrates: the closed loop, the firewall refusal, the queued-then-delivered referral and the
signed erasure confirmation; and that it leaves no process and no temporary folder behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.py"


def test_the_demo_tells_the_whole_story_and_cleans_up(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    for name in ("CASEWAY_TOKEN", "CASEWAY_HOME", "CASEWAY_NODE_URL", "CASEWAY_PASSPHRASE"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"

    for outcome in ("services_completed",  # the embassy sees the shelter's outcome
                    "refused: firewall",  # immigration enforcement gets nothing
                    "waiting, next try",  # shelter down: the referral is queued
                    "delivered after",  # ... and delivered when it is back
                    "erasure confirmed"):  # consent withdrawn: signed confirmation
        assert outcome in out, f"missing {outcome!r} in:\n{out}"
    assert re.search(r"Done in \d+\.\d s", out)
    # The temporary folder is gone and no node process survived.
    assert list(tmp_path.iterdir()) == []
    assert not processes_mentioning(str(tmp_path))


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc; empty elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found
