"""The node commands: ``caseway init`` makes a private, working home; configuration problems
are one line naming the problem; ``caseway audit verify`` catches an edited row; the case
commands talk to a real node (``caseway serve``) over loopback HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from caseway.keys.directory import build_directory, load_participants
from caseway.keys.identity import generate_signing_key
from caseway.keys.keystore import MEMLIMIT_MIN, OPSLIMIT_MIN, open_keystore
from caseway.node.cli import main
from caseway.node.client import NodeClient
from caseway.node.config import load_config
from caseway.node.home import InitOptions, init_home
from caseway.protocol.encoding import b64encode

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "directory" / "participants"
REFERRAL = ROOT / "examples" / "referrals" / "ph-return-full.json"
PASSPHRASE = "correct horse battery staple"
EMBASSY, SHELTER = "ph-embassy-kl", "ph-shelter-manila"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEWAY_PASSPHRASE", PASSPHRASE)
    for name in ("CASEWAY_TOKEN", "CASEWAY_HOME", "CASEWAY_NODE_URL"):
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def init(home: Path, participant: str = EMBASSY, *extra: str) -> int:
    return main(["init", "--id", participant, "--dir", str(home), "--kdf-limits", "min",
                 "--federation-listen", f"127.0.0.1:{free_port()}",
                 "--api-listen", f"127.0.0.1:{free_port()}", *extra])


PINNED = b64encode(generate_signing_key().public_key)


def init_pinned(home: Path, participant: str = EMBASSY) -> int:
    # The "=" form: a base64url key may start with "-", which argparse would take for an option.
    return init(home, participant, f"--authority-key={PINNED}")


# --------------------------------------------------------------------------- init


def test_init_creates_a_private_home_that_loads(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "embassy"
    authority = generate_signing_key()
    assert init(home, EMBASSY, f"--authority-key={b64encode(authority.public_key)}",
                "--profile", str(SAMPLES / f"{EMBASSY}.json")) == 0
    out = capsys.readouterr().out

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "keystore.json").stat().st_mode) == 0o600
    config = load_config(home, env={})
    assert config.participant == EMBASSY
    assert config.authority_keys == (b64encode(authority.public_key),)
    assert config.database.exists()
    contents = open_keystore(config.keystore, PASSPHRASE.encode())
    assert contents.identity.participant == EMBASSY
    # The config is commented for a non-engineer.
    assert (home / "caseway.toml").read_text().count("# ") > 10

    # The directory entry for the authority carries our real keys and passes `authority add`.
    entry = json.loads((home / "participant.json").read_text())
    assert entry["id"] == EMBASSY and {k["use"] for k in entry["keys"]} == {"signing",
                                                                             "encryption"}
    assert json.dumps(entry["keys"][0]["key"]) in out
    for secret in (contents.identity.signing.seed, contents.identity.encryption.secret,
                   contents.storage_key):
        assert b64encode(secret) not in out
    auth = tmp_path / "authority"
    assert main(["authority", "init", "--dir", str(auth), "--kdf-limits", "min"]) == 0
    assert main(["authority", "add", "--dir", str(auth), str(home / "participant.json")]) == 0


def test_init_refuses_an_existing_home(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "node"
    assert init(home) == 0
    before = (home / "keystore.json").read_bytes()
    capsys.readouterr()
    assert init(home) == 2
    assert "already holds a node" in capsys.readouterr().err
    assert (home / "keystore.json").read_bytes() == before


def test_init_without_a_passphrase_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CASEWAY_PASSPHRASE")
    monkeypatch.setattr(sys, "stdin", None)
    assert init(tmp_path / "node") == 2
    assert "passphrase" in capsys.readouterr().err
    assert not (tmp_path / "node" / "keystore.json").exists()


def test_init_refuses_a_bad_setting_before_writing_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "node"
    code = main(["init", "--id", EMBASSY, "--dir", str(home), "--kdf-limits", "min",
                 "--api-listen", "0.0.0.0:8444"])
    assert code == 2
    assert "local_api.listen" in capsys.readouterr().err
    assert not home.exists()


def test_init_installs_a_directory_only_if_the_pinned_key_signed_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    authority, stranger = generate_signing_key(), generate_signing_key()
    now = int(time.time())
    signed = build_directory(load_participants(SAMPLES), authority=authority, serial=1,
                             issued=now, expires=now + 86400)
    (tmp_path / "directory.json").write_bytes(signed)
    args = ["--directory", str(tmp_path / "directory.json")]

    assert init(tmp_path / "a", EMBASSY, *args,
                f"--authority-key={b64encode(stranger.public_key)}") == 2
    assert "untrusted_authority" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()

    assert init(tmp_path / "b", EMBASSY, *args,
                f"--authority-key={b64encode(authority.public_key)}") == 0
    assert (tmp_path / "b" / "directory.json").read_bytes().rstrip() == signed


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(("edit", "words"), [
    (None, "no configuration file"),
    ("participant = ", "not valid TOML"),
    ("participant = \"ph-embassy-kl\"\nlisten_port = 3\n", "listen_port: unknown setting"),
])
@pytest.mark.parametrize("command", [["serve"], ["audit", "verify"],
                                     ["token", "create", "--name", "x", "--role", "admin"],
                                     ["inbox"]])
def test_a_missing_or_malformed_config_is_one_line_naming_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str | None, words: str,
        command: list[str]) -> None:
    home = tmp_path / "node"
    home.mkdir()
    if edit is not None:
        (home / "caseway.toml").write_text(edit)
    assert main([*command, "--dir", str(home)]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_missing_home_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "no node home at" in capsys.readouterr().err


# --------------------------------------------------------------------------- audit verify


def _audited_home(tmp_path: Path) -> Path:
    import asyncio

    from caseway.node.storage import SqliteStorage

    home = tmp_path / "node"
    assert init_pinned(home) == 0

    async def write() -> None:
        storage = await SqliteStorage.open(home / "caseway.db")
        for n in range(5):
            await storage.append_audit(at=1_700_000_000 + n, event="send", actor="test",
                                       subject=f"case-{n}", detail={"n": n})
        await storage.close()

    asyncio.run(write())
    return home


def test_audit_verify_reports_an_intact_chain(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    home = _audited_home(tmp_path)
    capsys.readouterr()
    assert main(["audit", "verify", "--dir", str(home)]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out
    assert main(["audit", "verify", "--dir", str(home), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["entries"] == 5


def test_audit_verify_detects_an_edited_row(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    home = _audited_home(tmp_path)
    # Someone with the file drops the append-only trigger and edits entry 3.
    db = sqlite3.connect(home / "caseway.db")
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET subject = 'someone-else' WHERE seq = 3")
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["audit", "verify", "--dir", str(home)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at entry 3" in out and "edited" in out
    assert main(["audit", "verify", "--dir", str(home), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["first_bad_seq"] == 3


def test_audit_verify_reads_a_bare_copy_without_changing_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib
    import shutil

    home = _audited_home(tmp_path)
    # An auditor's copy: the database alone, checkpointed, no config beside it.
    db = sqlite3.connect(home / "caseway.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    copy = tmp_path / "copy.db"
    shutil.copyfile(home / "caseway.db", copy)
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["audit", "verify", "--db", str(copy)]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before


# --------------------------------------------------------------------------- a real node


@dataclass
class Network:
    homes: dict[str, Path]
    api: dict[str, str]


def _network(tmp_path: Path) -> Network:
    """Two node homes (embassy, shelter) and a directory signed with their real keys and
    loopback endpoints, plus the other sample participants."""
    authority = generate_signing_key()
    homes, api, entries = {}, {}, {}
    for who in (EMBASSY, SHELTER):
        fed, port = free_port(), free_port()
        profile = json.loads((SAMPLES / f"{who}.json").read_text())
        result = init_home(InitOptions(
            participant=who, home=tmp_path / who, federation_listen=f"127.0.0.1:{fed}",
            api_listen=f"127.0.0.1:{port}", endpoint=f"http://127.0.0.1:{fed}",
            authority_keys=(b64encode(authority.public_key),), profile=profile,
            kdf_limits=(OPSLIMIT_MIN, MEMLIMIT_MIN)), PASSPHRASE.encode())
        homes[who], api[who], entries[who] = tmp_path / who, f"http://127.0.0.1:{port}", \
            result.entry
    others = [p for p in load_participants(SAMPLES) if p["id"] not in entries]
    now = int(time.time())
    signed = build_directory([*others, *entries.values()], authority=authority, serial=1,
                             issued=now - 60, expires=now + 30 * 86400)
    for home in homes.values():
        (home / "directory.json").write_bytes(signed + b"\n")
    return Network(homes, api)


@pytest.fixture
def network(tmp_path: Path) -> Network:
    return _network(tmp_path)


@contextlib.contextmanager
def serving(home: Path, health: NodeClient) -> Iterator[subprocess.Popen[bytes]]:
    """`caseway serve --dir home` as a real process, until it answers ``/healthz``; stopped
    with SIGTERM afterwards, which must be a clean exit."""
    env = dict(os.environ, CASEWAY_PASSPHRASE=PASSPHRASE, CASEWAY_LOG_FORMAT="json")
    process = subprocess.Popen([sys.executable, "-m", "caseway.node.cli", "serve", "--dir",
                                str(home)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not health.healthy():
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"node exited at start: {output}")
            assert time.monotonic() < deadline, "node did not start"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
    assert process.returncode == 0  # graceful stop on SIGTERM


@pytest.fixture
def embassy(network: Network) -> Iterator[Network]:
    """The embassy's node running as `caseway serve` (a real process, real HTTP)."""
    with serving(network.homes[EMBASSY], NodeClient(network.api[EMBASSY], None, timeout=1)):
        yield network


def test_serve_refuses_plain_http_on_a_public_address(
        network: Network, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEWAY_FEDERATION_LISTEN", "0.0.0.0:8443")
    assert main(["serve", "--dir", str(network.homes[EMBASSY])]) == 2
    err = capsys.readouterr().err
    assert "federation.listen: plain HTTP on a non-loopback address is refused" in err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_serve_speaks_https_with_a_configured_certificate(network: Network,
                                                          tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    home = network.homes[EMBASSY]
    config = load_config(home, env={})
    toml = (home / "caseway.toml").read_text()
    toml = toml.replace('tls_cert = ""', f'tls_cert = "{cert}"').replace(
        'tls_key = ""', f'tls_key = "{key}"')
    (home / "caseway.toml").write_text(toml)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    port = config.federation.port
    with serving(home, NodeClient(network.api[EMBASSY], None, timeout=1)):
        secure = NodeClient(f"https://127.0.0.1:{port}", None, timeout=2,
                            ssl_context=context)
        assert secure.healthy()
        assert not NodeClient(f"http://127.0.0.1:{port}", None, timeout=2).healthy()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def fresh_referral(tmp_path: Path) -> Path:
    """The sample referral with consent recorded today (the sample's dates are fixed)."""
    referral = json.loads(REFERRAL.read_text())
    now = int(time.time())
    referral["consent"]["given_at"] = now - 3600
    referral["consent"]["expires_at"] = now + 180 * 86400
    path = tmp_path / "referral.json"
    path.write_text(json.dumps(referral))
    return path


def test_token_create_prints_the_token_once_and_saves_it(
        network: Network, capsys: pytest.CaptureFixture[str]) -> None:
    home = network.homes[EMBASSY]
    assert main(["token", "create", "--dir", str(home), "--name", "embkl-sw-07",
                 "--role", "caseworker", "--save"]) == 0
    out = capsys.readouterr().out
    token = (home / "api-token").read_text().strip()
    assert token and out.count(token) == 1
    assert stat.S_IMODE((home / "api-token").stat().st_mode) == 0o600


def test_refer_then_outbox_end_to_end(embassy: Network, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    home = str(embassy.homes[EMBASSY])
    assert main(["token", "create", "--dir", home, "--name", "embkl-sw-07", "--role",
                 "supervisor", "--save"]) == 0
    sent = run_json(capsys, "refer", "--to", SHELTER, str(fresh_referral(tmp_path)),
                    "--dir", home)
    assert sent["destination"] == SHELTER and sent["type"] == "referral"

    # The shelter is not running: the referral waits in the outbox, with its next try.
    items = run_json(capsys, "outbox", "--dir", home)["items"]
    assert [(i["message_id"], i["state"]) for i in items] == [(sent["message_id"], "queued")]

    timeline = run_json(capsys, "case", "show", sent["case_id"], "--dir", home)
    assert timeline["messages"][0]["type"] == "referral"
    assert run_json(capsys, "inbox", "--dir", home)["threads"] == []

    # Readable forms for people.
    assert main(["outbox", "--dir", home]) == 0
    out = capsys.readouterr().out
    assert SHELTER in out and "waiting" in out


def test_a_refusal_is_one_plain_sentence_with_its_code(
        embassy: Network, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(embassy.homes[EMBASSY])
    assert main(["token", "create", "--dir", home, "--name", "embkl-sw-07", "--role",
                 "caseworker", "--save"]) == 0
    capsys.readouterr()
    code = main(["refer", "--to", "my-immigration-kl", str(fresh_referral(tmp_path)),
                 "--dir", home])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("refused: firewall — ")
    assert len(err.strip().splitlines()) == 1


def test_a_bad_token_is_refused_plainly(embassy: Network,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEWAY_TOKEN", "not-a-token")
    assert main(["inbox", "--dir", str(embassy.homes[EMBASSY])]) == 1
    assert capsys.readouterr().err.startswith("not allowed: ")


def test_a_stopped_node_is_named(network: Network, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEWAY_TOKEN", "anything")
    assert main(["inbox", "--dir", str(network.homes[EMBASSY])]) == 3
    err = capsys.readouterr().err
    assert err.strip() == (f"cannot reach the node at {network.api[EMBASSY]} — is "
                           "`caseway serve` running?")


def test_no_token_says_how_to_get_one(network: Network,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "--dir", str(network.homes[EMBASSY])]) == 2
    assert "caseway token create" in capsys.readouterr().err


def test_ids_this_node_issues_never_start_with_a_dash() -> None:
    # Staff type case, thread and consent ids on command lines, where "-…" is an option.
    from caseway.node.cases import typeable_id

    for first in range(256):
        text = typeable_id(bytes([first]) + bytes(range(15)))
        assert not text.startswith("-")
        assert len(text) == 22
    # Only the one colliding value changes; every other id is the plain base64url.
    assert typeable_id(bytes([0xF8]) + bytes(15)).startswith("_")
    assert typeable_id(bytes([0x00]) + bytes(15)) == "A" * 22


def test_an_id_starting_with_a_dash_is_accepted_after_double_dash() -> None:
    from caseway.node.cli import build_parser

    args = build_parser().parse_args(["case", "show", "--", "-AbCdEfGhIjKlMnOpQrStUg"])
    assert args.id == "-AbCdEfGhIjKlMnOpQrStUg"
