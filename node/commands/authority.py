"""``caseway authority init|add|sign|rotate``: run a directory authority from a folder.

Authority folder layout (``--dir``, default ``./authority``):

- ``authority.keystore``: the authority's Ed25519 seed, encrypted like a node keystore
  (Argon2id + SecretBox, mode 0600); passphrase from ``$CASEWAY_PASSPHRASE``,
  ``--passphrase-file`` or a prompt;
- ``authority.pub.json``: ``{"key", "key_id"}``, the key nodes pin;
- ``participants/<id>.json``: entries added with ``add`` (validated, one per participant);
- ``state.json``: the last serial signed.

The successor chain (after ``rotate``) is kept inside the encrypted keystore with the new
seed, so a rotation is one atomic file replacement: a crash leaves the old key and no
statement, or the new key and its statement, never one without the other.

``add`` validates before writing anything; ``sign`` validates the whole document before
signing, increments the serial, and writes the output atomically.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from caseway.keys.directory import (
    build_directory,
    load_participants,
    parse_participant,
)
from caseway.keys.identity import generate_signing_key
from caseway.keys.keystore import (
    MEMLIMIT_DEFAULT,
    MEMLIMIT_MIN,
    OPSLIMIT_DEFAULT,
    OPSLIMIT_MIN,
    keystore_limits,
    open_secret,
    read_file,
    read_passphrase,
    seal_secret,
    write_atomic,
)
from caseway.keys.trust import sign_successor
from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json
from caseway.protocol.errors import CasewayError, ErrorCode

KEYSTORE = "authority.keystore"
PUBLIC = "authority.pub.json"
STATE = "state.json"
PARTICIPANTS = "participants"
DEFAULT_VALID_DAYS = 30
KDF_LIMITS = {"moderate": (OPSLIMIT_DEFAULT, MEMLIMIT_DEFAULT), "min": (OPSLIMIT_MIN,
                                                                         MEMLIMIT_MIN)}


def register(sub: Any) -> None:
    authority = sub.add_parser("authority", help="directory authority tooling")
    asub = authority.add_subparsers(dest="authority_command", metavar="ACTION", required=True)

    init = asub.add_parser("init", help="create an authority key and folder")
    _common(init)
    init.add_argument("--kdf-limits", choices=sorted(KDF_LIMITS), default="moderate",
                      help=argparse.SUPPRESS)
    init.set_defaults(handler=run_init)

    add = asub.add_parser("add", help="validate a participant JSON file and add it")
    add.add_argument("file", type=Path)
    add.add_argument("--dir", type=Path, default=Path("authority"), help="authority folder")
    add.set_defaults(handler=run_add)

    sign = asub.add_parser("sign", help="sign a new directory (serial + 1)")
    _common(sign)
    sign.add_argument("-o", "--output", type=Path, required=True)
    sign.add_argument("--valid-days", type=int, default=DEFAULT_VALID_DAYS,
                      help=f"directory lifetime in days (default {DEFAULT_VALID_DAYS})")
    sign.add_argument("--publisher", help="authority name (English) put in the directory")
    sign.set_defaults(handler=run_sign)

    rotate = asub.add_parser("rotate", help="replace the authority key; the old key signs "
                             "a successor statement carried in later directories")
    _common(rotate)
    rotate.set_defaults(handler=run_rotate)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("authority"), help="authority folder")
    parser.add_argument("--passphrase-file", type=Path, help="file holding the passphrase")


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> bytes:
    return read_passphrase(file=args.passphrase_file, confirm=confirm)


def _write_key(folder: Path, passphrase: bytes, key: crypto.SigningKeyPair, now: int,
               limits: tuple[int, int], chain: list[dict[str, str]], *,
               overwrite: bool) -> None:
    secret = dump_json({"kind": "authority", "signing_seed": b64encode(key.seed),
                        "created": now, "chain": chain})
    write_atomic(folder / KEYSTORE, seal_secret(secret, passphrase, opslimit=limits[0],
                                                memlimit=limits[1]), overwrite=overwrite)
    public = {"key": b64encode(key.public_key), "key_id": key.key_id}
    write_atomic(folder / PUBLIC, (json.dumps(public, indent=2) + "\n").encode(),
                 overwrite=True)


def _open_key(folder: Path, passphrase: bytes
              ) -> tuple[crypto.SigningKeyPair, list[dict[str, str]]]:
    plaintext = open_secret(read_file(folder / KEYSTORE), passphrase)
    try:
        obj = parse_json(plaintext, max_bytes=65536)
        chain = obj["chain"]
        if not isinstance(chain, list):
            raise TypeError("chain")
        return crypto.SigningKeyPair(b64decode(obj["signing_seed"], length=32,
                                               field="signing_seed")), chain
    except (CasewayError, KeyError, TypeError):
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "authority keystore contents") from None


def _state(folder: Path) -> dict[str, Any]:
    path = folder / STATE
    if not path.exists():
        return {"serial": 0}
    state: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return state


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    write_atomic(folder / STATE, (json.dumps(state, indent=2) + "\n").encode(), overwrite=True)


def run_init(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if (folder / KEYSTORE).exists():
        raise CasewayError(ErrorCode.CONFLICT, "authority folder already initialised")
    passphrase = _passphrase(args, confirm=True)
    (folder / PARTICIPANTS).mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    _write_key(folder, passphrase, key, int(time.time()), KDF_LIMITS[args.kdf_limits], [],
               overwrite=False)
    _save_state(folder, {"serial": 0})
    print(f"authority key {key.key_id} created in {folder}")
    print(f"nodes pin the public key in {folder / PUBLIC}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if not (folder / PARTICIPANTS).is_dir():
        raise CasewayError(ErrorCode.NOT_FOUND, "authority folder not initialised (run "
                           "'caseway authority init')")
    try:
        data = args.file.read_bytes()
    except FileNotFoundError:
        raise CasewayError(ErrorCode.NOT_FOUND, "participant file not found") from None
    obj = parse_json(data, max_bytes=64 * 1024)
    participant = parse_participant(obj)  # schema_invalid naming the field; nothing written
    target = folder / PARTICIPANTS / f"{participant.id}.json"
    replaced = target.exists()
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    write_atomic(target, text.encode("utf-8"), overwrite=True)
    print(f"{'updated' if replaced else 'added'} participant {participant.id}")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    if args.valid_days <= 0:
        raise CasewayError(ErrorCode.SCHEMA_INVALID, "--valid-days must be positive")
    participants = load_participants(folder / PARTICIPANTS)
    state = _state(folder)
    key, chain = _open_key(folder, _passphrase(args))
    now = int(time.time())
    serial = int(state["serial"]) + 1
    data = build_directory(
        participants, authority=key, serial=serial, issued=now,
        expires=now + args.valid_days * 24 * 3600,
        publisher={"en": args.publisher} if args.publisher else None,
        authority_chain=chain,
    )
    write_atomic(args.output, data + b"\n", overwrite=True)
    state["serial"] = serial
    _save_state(folder, state)
    print(f"signed directory serial {serial} with {len(participants)} participants "
          f"-> {args.output}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    passphrase = _passphrase(args)
    old, chain = _open_key(folder, passphrase)
    new = generate_signing_key()
    now = int(time.time())
    chain.append(sign_successor(old, new.public_key, issued=now))
    # One atomic replacement holds the new seed and the statement naming it (module doc).
    _write_key(folder, passphrase, new, now, keystore_limits(folder / KEYSTORE), chain,
               overwrite=True)
    print(f"authority key rotated: {old.key_id} -> {new.key_id}; the next signed "
          "directories carry the successor statement")
    return 0
