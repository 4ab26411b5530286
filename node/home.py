"""The node home: one folder holding everything a node keeps on disk.

Rules of this module:

1. ``caseway init`` creates the home once. An existing home (a ``caseway.toml`` or a
   keystore already there) is refused, never overwritten: replacing a node's keys by
   accident would cut it off from every case in flight.
2. The folder is mode 0700; secrets inside it (keystore, saved API token) are 0600 and
   written atomically (:func:`caseway.keys.keystore.write_atomic`).
3. The configuration written is the one :mod:`caseway.node.config` reads, with a comment
   above every setting, so an operator who is not an engineer can read and change it.
   :func:`init_home` loads it back before returning, so a home it made always starts.
4. What the authority needs (public keys and the endpoint) is written to
   ``participant.json`` and returned; nothing secret ever goes into it.

Layout::

    HOME/
      caseway.toml       configuration (commented)
      keystore.json      encrypted private keys and the storage key (0600)
      caseway.db         SQLite database (created empty, migrated)
      participant.json   this node's directory entry, for the authority
      directory.json     the signed directory (copied from the authority)
      api-token          optional: a local API token saved for the CLI (0600)
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caseway.keys.directory import parse_participant, verify_directory, with_node_keys
from caseway.keys.keystore import (
    MEMLIMIT_DEFAULT,
    OPSLIMIT_DEFAULT,
    KeystoreContents,
    create_keystore,
    write_atomic,
)
from caseway.keys.lifecycle import public_key_entries
from caseway.protocol.encoding import b64encode
from caseway.protocol.errors import CasewayError, ErrorCode

from .config import CONFIG_FILE, NodeConfig, env_name, load_config, parse_listen
from .storage import SqliteStorage

PARTICIPANT_FILE = "participant.json"
DIRECTORY_FILE = "directory.json"
TOKEN_FILE = "api-token"
HOME_ENV = "CASEWAY_HOME"
DEFAULT_FEDERATION_LISTEN = "127.0.0.1:8443"
DEFAULT_API_LISTEN = "127.0.0.1:8444"
FEDERATION_PATH = "/caseway/v1/envelopes"


@dataclass(frozen=True, slots=True)
class InitOptions:
    participant: str
    home: Path
    federation_listen: str = DEFAULT_FEDERATION_LISTEN
    api_listen: str = DEFAULT_API_LISTEN
    endpoint: str | None = None  # public base URL peers use; default from federation_listen
    authority_keys: tuple[str, ...] = ()  # base64url keys to pin
    directory: bytes | None = None  # a signed directory to install (verified first)
    profile: Mapping[str, Any] | None = None  # a directory entry to complete with our keys
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plain_http: bool = False
    kdf_limits: tuple[int, int] = (OPSLIMIT_DEFAULT, MEMLIMIT_DEFAULT)


@dataclass(frozen=True, slots=True)
class InitResult:
    config: NodeConfig
    entry: dict[str, Any]  # the participant entry for the authority (public)
    complete: bool  # True: ``entry`` is a full directory entry `authority add` accepts


def init_home(options: InitOptions, passphrase: bytes, *, now: int | None = None) -> InitResult:
    """Create a node home (module rules 1–4). Raises ``CasewayError`` (``conflict`` for an
    existing home) or :class:`~caseway.node.config.ConfigError` for bad settings; on a
    settings error nothing is written."""
    now = int(time.time()) if now is None else now
    home = options.home
    if (home / CONFIG_FILE).exists() or (home / "keystore.json").exists():
        raise CasewayError(ErrorCode.CONFLICT, f"{home} already holds a node; refusing to "
                           "overwrite it (choose another --dir)")
    text = render_config(options)
    # Validate everything before the first byte is written: a refused option leaves nothing.
    import tomllib

    from .config import parse_config

    # Without a pinned key yet the home is still made (the operator may learn the
    # authority's key later); `caseway serve` then names the missing setting.
    unpinned = {} if options.authority_keys else {env_name("directory.authority_keys"): "-"}
    parse_config(home, tomllib.loads(text), env=unpinned)
    endpoint = options.endpoint or default_endpoint(options)
    if options.directory is not None:
        keys = [_key_bytes(k) for k in options.authority_keys]
        if not keys:
            raise CasewayError(ErrorCode.UNTRUSTED_AUTHORITY,
                               "--directory needs --authority-key to verify it")
        verify_directory(options.directory.rstrip(b"\n"), keys)

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)  # mkdir's mode is masked by umask; an existing empty folder too
    contents = KeystoreContents.generate(options.participant, now=now)
    create_keystore(home / "keystore.json", passphrase, contents,
                    opslimit=options.kdf_limits[0], memlimit=options.kdf_limits[1])
    write_atomic(home / CONFIG_FILE, text.encode("utf-8"), overwrite=False)
    if options.directory is not None:
        write_atomic(home / DIRECTORY_FILE, options.directory.rstrip(b"\n") + b"\n",
                     overwrite=False)
    config = load_config(home, env=unpinned)
    asyncio.run(_create_database(config.database))

    entry, complete = participant_entry(options.participant, contents, endpoint,
                                        options.profile)
    write_atomic(home / PARTICIPANT_FILE,
                 (json.dumps(entry, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
                 overwrite=False)
    return InitResult(config, entry, complete)


async def _create_database(path: Path) -> None:
    storage = await SqliteStorage.open(path)  # runs the migrations
    await storage.close()
    os.chmod(path, 0o600)


def _key_bytes(value: str) -> bytes:
    from caseway.protocol import crypto
    from caseway.protocol.encoding import b64decode

    return b64decode(value, length=crypto.PUBLIC_KEY_BYTES, field="authority key")


def default_endpoint(options: InitOptions) -> str:
    listen = parse_listen("federation.listen", options.federation_listen)
    scheme = "https" if options.tls_cert else "http"
    host = listen.host
    if host in ("0.0.0.0", "::"):
        host = "YOUR-PUBLIC-HOST-NAME"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{listen.port}"


def participant_entry(participant: str, contents: KeystoreContents, endpoint: str,
                      profile: Mapping[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """This node's directory entry: the ``profile`` (names, country, services...) with our
    real keys and endpoint, or, without a profile, a skeleton for the authority to fill in.
    Returns (entry, complete)."""
    keys = public_key_entries(contents)
    if profile is not None:
        if profile.get("id") != participant:
            raise CasewayError(ErrorCode.SCHEMA_INVALID,
                               f"the profile is for {profile.get('id')!r}, not {participant!r}")
        entry = with_node_keys(profile, keys, endpoint=endpoint)
        parse_participant(entry)  # schema_invalid naming the field
        return entry, True
    skeleton: dict[str, Any] = {
        "id": participant,
        "names": {"en": "TO FILL IN: the agency's name in English"},
        "country": "TO FILL IN: two-letter country code, e.g. PH",
        "sectors": ["TO FILL IN, e.g. shelter"],
        "services": [],
        "languages": ["en"],
        "hours": {"timezone": "TO FILL IN, e.g. Asia/Manila", "always_open": False,
                  "periods": []},
        "contacts": {},
        "endpoint": endpoint,
        "keys": keys,
    }
    return skeleton, False


# --------------------------------------------------------------------------- config text


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(options: InitOptions) -> str:
    """The commented ``caseway.toml`` (module rule 3)."""
    keys = ", ".join(_toml_str(k) for k in options.authority_keys)
    pin = (f"authority_keys = [{keys}]" if options.authority_keys else
           '# authority_keys = ["PASTE-THE-AUTHORITY-KEY-HERE"]   '
           "# REQUIRED before `caseway serve`")
    tls_cert = _toml_str(str(options.tls_cert)) if options.tls_cert else '""'
    tls_key = _toml_str(str(options.tls_key)) if options.tls_key else '""'
    plain = "true" if options.allow_plain_http else "false"
    return f"""\
# Caseway node configuration for {options.participant}.
# Written by `caseway init`. Every setting can also be given as an environment variable:
# CASEWAY_ then the name in capitals with _ for . (federation.listen -> CASEWAY_FEDERATION_LISTEN).
# Paths are relative to this folder. The keystore passphrase is NOT kept here: give it with
# CASEWAY_PASSPHRASE or --passphrase-file, or type it when asked.

# This node's name in the directory. Must match the keystore; do not change it.
participant = {_toml_str(options.participant)}

# Where the node keeps its data. Back up the keystore and the database together.
database = "caseway.db"
keystore = "keystore.json"

# Log format: "auto" (readable on a terminal, JSON lines otherwise), "json" or "console".
log_format = "auto"

[federation]
# Where other agencies' nodes send messages (HOST:PORT). Peers reach it at the
# endpoint written in participant.json.
listen = {_toml_str(options.federation_listen)}
# HTTPS certificate chain and private key (PEM files). Required on a public address,
# unless a TLS proxy in front of the node handles HTTPS and allow_plain_http is true.
tls_cert = {tls_cert}
tls_key = {tls_key}
allow_plain_http = {plain}

[local_api]
# Where your own staff, the `caseway` commands and your case-management system connect.
# Keep it on 127.0.0.1 (this computer only) unless you know you need otherwise.
listen = {_toml_str(options.api_listen)}

[directory]
# The signed list of agencies, from the directory authority. Replace the file when the
# authority publishes a new one.
path = "directory.json"
# The authority's public key(s): the node trusts only directories they signed.
{pin}

[delivery]
# Retry schedule for messages a peer could not take yet (seconds): the first retry after
# about backoff_base, then doubling, never more than backoff_cap apart.
backoff_base = 5.0
backoff_multiplier = 2.0
backoff_cap = 3600.0
# How long a message keeps being retried before it is given up (seconds; 7 days).
envelope_lifetime = 604800
request_timeout = 30.0
"""


# --------------------------------------------------------------------------- reading a home


def resolve_home(value: Path | None) -> Path:
    """``--dir``, else ``$CASEWAY_HOME``, else ``./caseway-node``."""
    if value is not None:
        return value
    return Path(os.environ.get(HOME_ENV) or "caseway-node")


def read_saved_token(home: Path) -> str | None:
    try:
        text = (home / TOKEN_FILE).read_text("utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def save_token(home: Path, token: str) -> Path:
    path = home / TOKEN_FILE
    write_atomic(path, (token + "\n").encode("utf-8"), overwrite=True)
    return path


def local_api_url(config: NodeConfig) -> str:
    listen = config.local_api
    scheme = "https" if config.tls and not listen.is_loopback else "http"
    host = listen.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{listen.port}"


def authority_key_text(values: Sequence[str]) -> tuple[str, ...]:
    """Pinned keys as base64url text: each value a key, or a file holding one
    (``authority.pub.json`` or a one-line key file)."""
    from .commands.directory import parse_authority_key

    return tuple(b64encode(parse_authority_key(v)) for v in values)
