"""Two real Caseway nodes on this computer, narrated: a return referral from Kuala Lumpur to
Manila, from consent to outcome.

    make demo        (or: .venv/bin/python examples/demo.py)

What runs: a directory authority, the Philippine Embassy in Kuala Lumpur (ph-embassy-kl) and
a shelter in Manila (ph-shelter-manila), each a real ``caseway serve`` process with its own
keys and database, talking HTTP on loopback ports chosen at random. Everything lives in a
temporary folder that is removed at the end; no process is left behind.

Every step is done the way an agency would do it: with the ``caseway`` command
(``caseway init``, ``caseway authority ...``, ``caseway refer``, ``caseway inbox`` ...).
The survivor in the sample referral is fictional.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PARTICIPANTS = ROOT / "examples" / "directory" / "participants"
SAMPLE_REFERRAL = ROOT / "examples" / "referrals" / "ph-return-full.json"
CASEWAY = [sys.executable, "-m", "caseway.node.cli"]
PASSPHRASE = "demo passphrase, not for real use"
EMBASSY, SHELTER, IMMIGRATION = "ph-embassy-kl", "ph-shelter-manila", "my-immigration-kl"
START_TIMEOUT = 20.0  # seconds for a node to answer /healthz
DELIVERY_TIMEOUT = 20.0  # seconds for a queued message to be delivered
STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- narration

_step = 0


def step(text: str) -> None:
    global _step
    _step += 1
    print()
    print(textwrap.fill(f"{_step}. {text}", width=92, subsequent_indent=" " * (len(str(_step)) + 2),
                        break_on_hyphens=False, break_long_words=False))


def note(text: str) -> None:
    print(textwrap.fill(text, width=92, initial_indent="   ", subsequent_indent="   ",
                        break_on_hyphens=False, break_long_words=False))


def show(output: str) -> None:
    for line in output.rstrip("\n").splitlines():
        print(f"     | {line}")


# --------------------------------------------------------------------------- plumbing


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env = dict(os.environ, CASEWAY_PASSPHRASE=PASSPHRASE,
                        # quick retries, so "waits, then is delivered" takes seconds
                        CASEWAY_DELIVERY_BACKOFF_BASE="2", CASEWAY_DELIVERY_BACKOFF_CAP="3",
                        CASEWAY_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
        self.env.pop("CASEWAY_TOKEN", None)
        self.env.pop("CASEWAY_HOME", None)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, tuple[int, int]] = {}

    def home(self, who: str) -> Path:
        return self.workdir / who

    def caseway(self, *args: str, check: bool = True, show_command: bool = False) -> str:
        """Run one ``caseway`` command; returns its standard output."""
        if show_command:
            print(f"     $ caseway {' '.join(_short(a, self.workdir) for a in args)}")
        done = subprocess.run([*CASEWAY, *args], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise DemoFailed(f"`caseway {' '.join(args[:2])}` failed "
                             f"(exit {done.returncode}): {done.stderr.strip()}")
        return done.stdout + (done.stderr if not check else "")

    # -- nodes -------------------------------------------------------------------------

    def init_node(self, who: str) -> None:
        federation, api = free_port(), free_port()
        self.ports[who] = (federation, api)
        self.caseway("init", "--id", who, "--dir", str(self.home(who)),
                     "--federation-listen", f"127.0.0.1:{federation}",
                     "--api-listen", f"127.0.0.1:{api}",
                     "--endpoint", f"http://127.0.0.1:{federation}",
                     "--profile", str(SAMPLE_PARTICIPANTS / f"{who}.json"),
                     "--authority-key", str(self.workdir / "authority" / "authority.pub.json"),
                     "--kdf-limits", "min")

    def api_url(self, who: str) -> str:
        return f"http://127.0.0.1:{self.ports[who][1]}"

    def start(self, who: str) -> None:
        log = open(self.home(who) / "node.log", "ab")  # noqa: SIM115 - closed with the process
        try:
            process = subprocess.Popen([*CASEWAY, "serve", "--dir", str(self.home(who))],
                                       env=self.env, cwd=self.workdir, stdout=log,
                                       stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.processes[who] = process
        self.wait_healthy(who)

    def wait_healthy(self, who: str) -> None:
        from caseway.node.client import NodeClient

        client = NodeClient(self.api_url(who), None, timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.processes[who].poll() is not None:
                raise DemoFailed(f"{who} exited at start; see its log:\n"
                                 + self.log_tail(who))
            if client.healthy():
                return
            time.sleep(0.1)
        raise DemoFailed(f"{who} did not start within {START_TIMEOUT:.0f} s")

    def stop(self, who: str) -> int:
        """SIGTERM (graceful), then SIGKILL if it does not stop in time."""
        process = self.processes.pop(who, None)
        if process is None or process.poll() is not None:
            return 0 if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=STOP_TIMEOUT)

    def stop_all(self) -> None:
        for who in list(self.processes):
            with contextlib.suppress(Exception):
                self.stop(who)

    def log_tail(self, who: str, lines: int = 20) -> str:
        try:
            text = (self.home(who) / "node.log").read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class DemoFailed(Exception):
    pass


def _short(arg: str, workdir: Path) -> str:
    text = arg.replace(str(workdir) + os.sep, "")
    return text if " " not in text else repr(text)


def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"gave up waiting: {what} (after {timeout:.0f} s)")
        time.sleep(0.2)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="caseway-demo-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- the story


def run(demo: Demo) -> None:
    work = demo.workdir
    print("Caseway demo: a return referral from Kuala Lumpur to Manila, on two real nodes.")
    note(f"(Everything runs on this computer, in {work}, removed at the end.)")

    step("A directory authority is set up. It decides which agencies belong to the network "
         "and signs the list of them; every node checks that signature.")
    demo.caseway("authority", "init", "--dir", str(work / "authority"), "--kdf-limits", "min")
    pub = json.loads((work / "authority" / "authority.pub.json").read_text())
    note(f"Authority key id {pub['key_id']} (nodes trust only lists signed with it).")

    step("The embassy (ph-embassy-kl) and the shelter (ph-shelter-manila) each set up their "
         "node: fresh private keys, locked with a passphrase, an empty database and a "
         "configuration file.")
    for who in (EMBASSY, SHELTER):
        demo.init_node(who)
        entry = json.loads((demo.home(who) / "participant.json").read_text())
        signing = next(k["key_id"] for k in entry["keys"] if k["use"] == "signing")
        note(f"{who}: signing key {signing}, reachable at {entry['endpoint']}")

    samples = [json.loads(p.read_text()) for p in sorted(SAMPLE_PARTICIPANTS.glob("*.json"))]
    step("Each agency sends its public keys and address to the authority, which adds them "
         f"to the sample network ({len(samples)} agencies in "
         f"{len({p['country'] for p in samples})} countries, including an immigration "
         "enforcement office) and signs the directory.")
    for path in sorted(SAMPLE_PARTICIPANTS.glob("*.json")):
        if path.stem not in (EMBASSY, SHELTER):
            demo.caseway("authority", "add", "--dir", str(work / "authority"), str(path))
    for who in (EMBASSY, SHELTER):
        demo.caseway("authority", "add", "--dir", str(work / "authority"),
                     str(demo.home(who) / "participant.json"))
    signed = work / "directory.json"
    demo.caseway("authority", "sign", "--dir", str(work / "authority"), "-o", str(signed),
                 "--publisher", "Demo referral network")
    note(f"Directory serial 1 signed: {len(samples)} agencies, "
         f"{sum(1 for p in samples if p.get('endpoint'))} of them with a node. A copy goes to "
         "each node.")
    for who in (EMBASSY, SHELTER):
        shutil.copyfile(signed, demo.home(who) / "directory.json")

    step("Both nodes start. Each opens its keys, checks the directory signature and listens: "
         "one door for other agencies' nodes, one (on this computer only) for its own staff.")
    for who in (EMBASSY, SHELTER):
        demo.start(who)
        fed, api = demo.ports[who]
        note(f"{who} is running (other nodes: port {fed}; staff: port {api}).")
    for who, name, role in ((EMBASSY, "embkl-sup-02", "supervisor"),
                            (SHELTER, "nswc-sw-11", "caseworker")):
        demo.caseway("token", "create", "--dir", str(demo.home(who)), "--name", name,
                     "--role", role, "--save")
        note(f"{who}: access token for {name} ({role}); the node keeps only its hash.")

    run_case_steps(demo)

    step("The demo ends: both nodes are stopped gracefully.")
    for who in (EMBASSY, SHELTER):
        code = demo.stop(who)
        note(f"{who} stopped (exit {code}).")


def client(demo: Demo, who: str) -> Any:
    from caseway.node.client import NodeClient

    token = (demo.home(who) / "api-token").read_text().strip()
    return NodeClient(demo.api_url(who), token, timeout=10)


def outbox_item(demo: Demo, who: str, message_id: str) -> dict[str, Any] | None:
    items = client(demo, who).get("/api/v1/outbox")["items"]
    return next((i for i in items if i["message_id"] == message_id), None)


def wait_delivered(demo: Demo, who: str, sent: dict[str, Any]) -> dict[str, Any]:
    """Poll the sender's delivery status until the peer's signed receipt is in."""
    def delivered() -> dict[str, Any] | None:
        item = outbox_item(demo, who, sent["message_id"])
        if item is not None and item["state"] == "dead":
            raise DemoFailed(f"{sent['type']} was given up: {item.get('last_error')}")
        return item if item is not None and item["state"] == "delivered" else None

    item: dict[str, Any] = wait_until(f"{sent['type']} delivered to {sent['destination']}",
                                      delivered, DELIVERY_TIMEOUT)
    return item


def thread_state(demo: Demo, who: str, thread_id: str) -> str | None:
    for case in client(demo, who).get("/api/v1/cases")["cases"]:
        for t in case["threads"]:
            if t["thread_id"] == thread_id:
                return str(t["state"])
    return None


def cli(demo: Demo, who: str, *args: str, check: bool = True) -> str:
    """A `caseway` case command as the agency's caseworker types it, and its answer."""
    out = demo.caseway(*args, "--dir", str(demo.home(who)), check=check, show_command=True)
    show(out)
    return out


def cli_json(demo: Demo, who: str, *args: str) -> Any:
    return json.loads(demo.caseway(*args, "--dir", str(demo.home(who)), "--json"))


def run_case_steps(demo: Demo) -> None:
    """The referral itself, through the `caseway` case commands (clients of the local API)."""
    work = demo.workdir
    referral = json.loads(SAMPLE_REFERRAL.read_text())
    now = int(time.time())
    consent = referral["consent"]
    consent["given_at"] = now - 1800
    consent["expires_at"] = now + 180 * 86400
    referral.pop("respond_by", None)
    referral_file = work / "referral-lorna.json"
    referral_file.write_text(json.dumps(referral, indent=2, ensure_ascii=False))

    step("At the embassy, a caseworker records the survivor's consent (in writing, in "
         "Filipino): her case may go to the shelter in Manila, for her safe return, with these "
         "kinds of information. Then the embassy sends the return referral.")
    note("Consent covers: " + ", ".join(consent["scope"]["data_categories"]) + ".")
    note("She refuses: " + ", ".join(consent["services_refused"]).replace("_", "/")
         + " services. Her conditions: "
         + ", ".join(consent["restrictions"]).replace("_", " ") + ".")
    cli(demo, EMBASSY, "refer", "--to", SHELTER, str(referral_file))
    sent = max(cli_json(demo, EMBASSY, "outbox")["items"], key=lambda i: i["id"])
    case_id, thread_id = sent["case_id"], sent["thread_id"]
    first_consent = consent["consent_id"]
    wait_delivered(demo, EMBASSY, sent)
    note("The embassy's node encrypted the referral for the shelter's key only, signed it, and "
         "delivered it; the shelter's node answered with a signed receipt:")
    cli(demo, EMBASSY, "outbox")

    step("At the shelter, the caseworker sees the new referral in the inbox, opens it and "
         "accepts it.")
    cli(demo, SHELTER, "inbox")
    cli(demo, SHELTER, "case", "show", case_id)
    accept = cli_json(demo, SHELTER, "case", "accept", thread_id, "--ref", "NSWC-2026-311",
                      "--note", "Female social worker assigned; pick-up at NAIA arranged.")
    wait_delivered(demo, SHELTER, accept)
    note(f"Accepted (shelter file NSWC-2026-311); the embassy's node now shows the case as "
         f"'{thread_state(demo, EMBASSY, thread_id)}'.")

    step("The shelter needs more information before she arrives (her flight), and asks the "
         "embassy for it.")
    ask = cli_json(demo, SHELTER, "case", "request-info", thread_id, "--categories",
                   "location_return", "--note", "Please confirm flight number and arrival time.")
    wait_delivered(demo, SHELTER, ask)
    note(f"Asked for: location_return. Embassy side: '{thread_state(demo, EMBASSY, thread_id)}'.")

    step("The embassy answers, sharing only what her consent covers.")
    answer_file = work / "answer.json"
    answer_file.write_text(json.dumps({"sections": {"location_return": {
        **referral["sections"]["location_return"],
        "port_of_entry": "NAIA Terminal 1, Manila; flight PR 0555 (fictional), 14:35"}}}))
    answer = cli_json(demo, EMBASSY, "case", "answer", thread_id, str(answer_file))
    wait_delivered(demo, EMBASSY, answer)
    note("Answer delivered and receipted.")

    step("The shelter reports back: an appointment, then a service delivered, then it closes "
         "the case with an outcome.")
    for args in (("--kind", "appointment", "--at", str(now + 2 * 86400), "--note",
                  "Intake interview with a female social worker."),
                 ("--kind", "service_delivered", "--service",
                  "mental_health_psychosocial", "--note", "First counselling session held.")):
        update = cli_json(demo, SHELTER, "case", "update", thread_id, *args)
        wait_delivered(demo, SHELTER, update)
    close = cli_json(demo, SHELTER, "case", "close", thread_id, "--outcome",
                     "services_completed", "--services",
                     "safe_shelter,mental_health_psychosocial,economic_reintegration")
    wait_delivered(demo, SHELTER, close)
    note("Two updates and the closing message delivered.")

    step("Back at the embassy, the caseworker sees the outcome: the loop is closed.")
    cli(demo, EMBASSY, "case", "show", case_id)

    step("Someone at the embassy tries to send the same case to the immigration enforcement "
         "office in Kuala Lumpur. The firewall refuses it, whatever the consent says: "
         "immigration enforcement never receives case data.")
    out = cli(demo, EMBASSY, "refer", "--to", IMMIGRATION, str(referral_file), check=False)
    if "firewall" not in out:
        raise DemoFailed("the send to immigration enforcement was not refused by the firewall")
    note("Nothing was queued or sent.")

    step("The shelter's node goes offline (a power cut in Manila). Meanwhile the embassy "
         "refers a second woman to the shelter: the referral cannot be delivered now, so it "
         "waits in the embassy's outbox and is retried on its own.")
    demo.stop(SHELTER)
    note("The shelter's node is stopped.")
    second_file = work / "referral-second.json"
    second_referral = json.loads(referral_file.read_text())
    second_referral["survivor_ref"] = "EMBKL-2026-0057"
    second_referral["consent"].pop("consent_id", None)  # her own consent, a new id
    second_referral["sections"]["identity"].update(given_name="Maricel", family_name="Santos",
                                                   date_of_birth="1990-07-02")
    second_file.write_text(json.dumps(second_referral, indent=2, ensure_ascii=False))
    second = cli_json(demo, EMBASSY, "refer", "--to", SHELTER, str(second_file))

    def tried() -> dict[str, Any] | None:
        item = outbox_item(demo, EMBASSY, second["message_id"])
        return item if item is not None and item["attempts"] >= 1 else None

    wait_until("a first delivery attempt", tried, DELIVERY_TIMEOUT)
    cli(demo, EMBASSY, "outbox", "--state", "queued")

    step("The shelter's node comes back. The embassy's node retries on its own and the "
         "referral is delivered: nothing was lost.")
    demo.start(SHELTER)
    item = wait_delivered(demo, EMBASSY, second)
    note(f"Referral delivered after {item['attempts'] + 1} attempts.")
    cli(demo, SHELTER, "inbox")

    step("Weeks later, the first woman tells the embassy she withdraws her consent. A "
         "supervisor records it: the embassy erases her case and tells every agency that "
         "received it to erase it too, and to confirm.")
    consent_id = first_consent
    cli(demo, EMBASSY, "consent", "withdraw", consent_id)

    def confirmed() -> dict[str, Any] | None:
        status = cli_json(demo, EMBASSY, "consent", "status", consent_id)
        recipients = status["recipients"]
        if recipients and all(r["status"] in ("confirmed", "not_sent") for r in recipients):
            return status
        if any(r["status"] == "failed" for r in recipients):
            raise DemoFailed("a withdrawal could not be delivered")
        return None

    wait_until("the shelter's erasure confirmation", confirmed, DELIVERY_TIMEOUT)
    note("The shelter's node erased the case and sent back a signed erasure confirmation. "
         "The embassy now shows:")
    cli(demo, EMBASSY, "consent", "status", consent_id)
    timeline = cli_json(demo, SHELTER, "case", "show", case_id)
    tomb = timeline.get("tombstone") or {}
    if not tomb:
        raise DemoFailed("the shelter still holds the case")
    note(f"At the shelter only a tombstone is left ({tomb.get('contents_erased')} messages "
         "erased; ids and times kept, no contents). The second woman's case is untouched.")


def main() -> int:
    started = time.monotonic()
    with workspace() as work:
        demo = Demo(work)
        try:
            run(demo)
        except DemoFailed as exc:
            print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
            for who in (EMBASSY, SHELTER):
                if (demo.home(who) / "node.log").exists():
                    print(f"--- last lines of {who}'s log ---\n{demo.log_tail(who)}",
                          file=sys.stderr)
            return 1
        finally:
            demo.stop_all()
    print(f"\nDone in {time.monotonic() - started:.1f} s. All processes stopped, temporary "
          "folder removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
