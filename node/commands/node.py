"""``caseway init|serve|token|audit``: set up, run and check a node from its home folder.

Rules of this module:

1. These commands work on the node home directly (``--dir``, default ``$CASEWAY_HOME``):
   ``init`` creates it, ``serve`` runs it, ``token create`` and ``audit verify`` open its
   database. The case commands (:mod:`.cases`) are clients of the running node instead.
2. A bad or missing configuration is one line naming the problem and exit status 2
   (:func:`config_errors`), never a traceback.
3. Nothing secret is printed except a new API token, once, when it is created.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caseway.keys.keystore import (
    MEMLIMIT_DEFAULT,
    MEMLIMIT_MIN,
    OPSLIMIT_DEFAULT,
    OPSLIMIT_MIN,
    read_passphrase,
)
from caseway.protocol.encoding import b64encode, parse_json
from caseway.protocol.errors import CasewayError, ErrorCode

from ..config import ConfigError, NodeConfig, load_config
from ..home import (
    DEFAULT_API_LISTEN,
    DEFAULT_FEDERATION_LISTEN,
    PARTICIPANT_FILE,
    InitOptions,
    authority_key_text,
    init_home,
    local_api_url,
    resolve_home,
    save_token,
)
from ..storage import StorageError

KDF_LIMITS = {"moderate": (OPSLIMIT_DEFAULT, MEMLIMIT_DEFAULT), "min": (OPSLIMIT_MIN,
                                                                         MEMLIMIT_MIN)}
ROLES = ("caseworker", "supervisor", "admin", "auditor")


def config_errors(handler: Callable[[argparse.Namespace], int]
                  ) -> Callable[[argparse.Namespace], int]:
    """Rule 2: configuration and database problems as one readable line, exit 2."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ConfigError as exc:
            print(f"error: configuration: {exc}", file=sys.stderr)
            return 2
        except StorageError as exc:
            print(f"error: database: {exc}", file=sys.stderr)
            return 2

    return wrapped


def register(sub: Any) -> None:
    init = sub.add_parser(
        "init", help="create a node home: keys, configuration and an empty database",
        description="Create a new node home folder. Prints this node's directory entry "
        "(public keys and address) to send to the directory authority.")
    init.add_argument("--id", required=True, dest="participant",
                      help="this agency's participant id, e.g. ph-embassy-kl")
    _home_argument(init)
    init.add_argument("--federation-listen", default=DEFAULT_FEDERATION_LISTEN,
                      metavar="HOST:PORT", help="where other nodes reach this one "
                      f"(default {DEFAULT_FEDERATION_LISTEN})")
    init.add_argument("--api-listen", default=DEFAULT_API_LISTEN, metavar="HOST:PORT",
                      help=f"local API for your staff (default {DEFAULT_API_LISTEN})")
    init.add_argument("--endpoint", metavar="URL",
                      help="public address peers use, e.g. https://caseway.example.org "
                      "(default: from --federation-listen)")
    init.add_argument("--authority-key", action="append", default=[], metavar="KEY",
                      help="directory authority public key to trust (base64url, or "
                      "authority.pub.json); repeatable; write --authority-key=KEY when the "
                      "key starts with '-'")
    init.add_argument("--directory", type=Path, metavar="FILE",
                      help="signed directory to install (checked against --authority-key)")
    init.add_argument("--profile", type=Path, metavar="FILE",
                      help="this agency's directory entry (names, country, services...) to "
                      "complete with the new keys")
    init.add_argument("--tls-cert", type=Path, metavar="PEM", help="HTTPS certificate chain")
    init.add_argument("--tls-key", type=Path, metavar="PEM", help="HTTPS private key")
    init.add_argument("--allow-plain-http", action="store_true",
                      help="allow plain HTTP on a public address (only behind a TLS proxy)")
    init.add_argument("--passphrase-file", type=Path, help="file holding the passphrase")
    init.add_argument("--kdf-limits", choices=sorted(KDF_LIMITS), default="moderate",
                      help=argparse.SUPPRESS)
    init.set_defaults(handler=run_init)

    serve = sub.add_parser("serve", help="run the node (federation listener and local API)",
                           description="Run the node until Ctrl-C or SIGTERM. Requests in "
                           "progress are finished before it stops.")
    _home_argument(serve)
    serve.add_argument("--passphrase-file", type=Path, help="file holding the passphrase")
    serve.add_argument("--allow-plain-http", action="store_true",
                       help="allow plain HTTP on a public address (only behind a TLS proxy)")
    serve.set_defaults(handler=run_serve)

    token = sub.add_parser("token", help="local API access tokens")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="create a token (printed once)",
                             description="Create a local API token for a person or a system. "
                             "The token is shown once; the node keeps only its hash.")
    _home_argument(create)
    create.add_argument("--name", required=True, help="who uses it, e.g. 'maria (caseworker)'")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--save", action="store_true",
                        help="also save it in the node home for the `caseway` commands on "
                        "this computer (file mode 0600)")
    create.set_defaults(handler=run_token_create)

    audit = sub.add_parser("audit", help="check the audit log")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = asub.add_parser("verify", help="check that no audit entry was changed or removed",
                             description="Walk the hash-chained audit log. Exit 0 if intact, "
                             "1 if an entry was edited, deleted or reordered.")
    _home_argument(verify)
    verify.add_argument("--db", type=Path, default=None,
                        help="check this database file (e.g. an auditor's copy) instead of "
                        "the node home's; opened read-only")
    verify.add_argument("--json", action="store_true", help="print a JSON summary")
    verify.set_defaults(handler=run_audit_verify)


def _home_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None, metavar="HOME",
                        help="node home folder (default $CASEWAY_HOME or ./caseway-node)")


# --------------------------------------------------------------------------- init


@config_errors
def run_init(args: argparse.Namespace) -> int:
    home = resolve_home(args.dir)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("give --tls-cert and --tls-key together")
    profile = None
    if args.profile is not None:
        try:
            profile = parse_json(args.profile.read_bytes(), max_bytes=64 * 1024)
        except FileNotFoundError:
            raise CasewayError(ErrorCode.NOT_FOUND, "profile file not found") from None
    directory = None
    if args.directory is not None:
        try:
            directory = args.directory.read_bytes()
        except FileNotFoundError:
            raise CasewayError(ErrorCode.NOT_FOUND, "directory file not found") from None
    options = InitOptions(
        participant=args.participant, home=home,
        federation_listen=args.federation_listen, api_listen=args.api_listen,
        endpoint=args.endpoint, authority_keys=authority_key_text(args.authority_key),
        directory=directory, profile=profile,
        tls_cert=args.tls_cert.resolve() if args.tls_cert else None,
        tls_key=args.tls_key.resolve() if args.tls_key else None,
        allow_plain_http=args.allow_plain_http, kdf_limits=KDF_LIMITS[args.kdf_limits])
    passphrase = read_passphrase(file=args.passphrase_file, confirm=True)
    result = init_home(options, passphrase)
    config = result.config
    print(f"Created the node home for {config.participant} in {home}")
    print("  keys:          keystore.json (encrypted with your passphrase; keep a backup)")
    print("  configuration: caseway.toml")
    print("  database:      caseway.db (empty)")
    print(f"  other nodes reach it at {result.entry['endpoint']}; your staff and the "
          f"`caseway` commands at {local_api_url(config)}")
    print()
    print(f"Send this to the directory authority (also saved as {home / PARTICIPANT_FILE}):")
    print(json.dumps(result.entry, indent=2, ensure_ascii=False))
    print()
    steps = []
    if not result.complete:
        steps.append("the authority completes the entry (fields marked TO FILL IN), then "
                     "runs `caseway authority add` and `caseway authority sign`")
    else:
        steps.append("the authority runs `caseway authority add` with this entry, then "
                     "`caseway authority sign`")
    if not config.authority_keys:
        steps.append("put the authority's public key in caseway.toml (authority_keys)")
    if directory is None:
        steps.append(f"copy the signed directory to {config.directory}")
    steps.append(f"start the node: caseway serve --dir {home}")
    steps.append(f"create a token for yourself: caseway token create --dir {home} "
                 "--name YOUR-NAME --role caseworker --save")
    print("Next steps:")
    for n, step in enumerate(steps, 1):
        print(f"  {n}. {step}")
    return 0


# --------------------------------------------------------------------------- serve


def _load(args: argparse.Namespace) -> NodeConfig:
    home = resolve_home(args.dir)
    if not home.is_dir():
        raise ConfigError(f"no node home at {home} (run `caseway init` first, or give --dir)")
    return load_config(home)


@config_errors
def run_serve(args: argparse.Namespace) -> int:
    import os

    if args.allow_plain_http:
        os.environ["CASEWAY_FEDERATION_ALLOW_PLAIN_HTTP"] = "true"
    config = _load(args)
    passphrase = read_passphrase(file=args.passphrase_file)
    from ..app import serve_from_config

    def started(server: Any) -> None:
        scheme = "https" if config.tls else "http"
        fed_host, fed_port = server.federation_address
        api_host, api_port = server.local_api_address
        api_scheme = "https" if config.tls and not config.local_api.is_loopback else "http"
        print(f"{config.participant} is running: other nodes {scheme}://{fed_host}:{fed_port}, "
              f"local API {api_scheme}://{api_host}:{api_port} (Ctrl-C to stop)", flush=True)

    asyncio.run(serve_from_config(config, passphrase, on_started=started))
    print(f"{config.participant} stopped.", flush=True)
    return 0


# --------------------------------------------------------------------------- token


@config_errors
def run_token_create(args: argparse.Namespace) -> int:
    config = _load(args)
    from ..api import create_token
    from ..storage import SqliteStorage

    async def create() -> str:
        storage = await SqliteStorage.open(config.database)
        try:
            token: str = await create_token(storage, name=args.name, role=args.role,
                                            now=int(time.time()))
            return token
        finally:
            await storage.close()

    token = asyncio.run(create())
    print(f"Token for {args.name!r} (role {args.role}). It is shown only this once:")
    print(token)
    if args.save:
        path = save_token(config.home, token)
        print(f"Saved for the `caseway` commands on this computer in {path}.")
    return 0


# --------------------------------------------------------------------------- audit


@config_errors
def run_audit_verify(args: argparse.Namespace) -> int:
    # An auditor may check a copy of the database alone (--db), without the node's config.
    database = args.db if args.db is not None else _load(args).database
    if not database.exists():
        raise ConfigError(f"no database at {database}", key="database")
    from ..audit import verify_entries
    from ..storage import SqliteStorage

    async def verify() -> Any:
        # Read-only: verifying must never change what it verifies.
        storage = await SqliteStorage.open(database, read_only=True)
        try:
            return await verify_entries(storage.audit_entries())
        finally:
            await storage.close()

    report = asyncio.run(verify())
    if args.json:
        print(json.dumps({"ok": report.ok, "entries": report.entries,
                          "head": b64encode(report.head), "first_bad_seq": report.first_bad_seq,
                          "problem": report.problem}, indent=2))
    elif report.ok:
        print(f"Audit log intact: {report.entries} entries, all links and hashes check out.")
        print(f"Head: {b64encode(report.head)}")
        print("Write the head down (or send it elsewhere): a later check that shows the same "
              "head proves nothing before it changed.")
    else:
        print(f"AUDIT LOG BROKEN at entry {report.first_bad_seq}: {report.problem}.")
        print(f"The {report.entries} entries before it check out. Keep a copy of the database "
              "as it is and tell your supervisor.")
    return 0 if report.ok else 1
