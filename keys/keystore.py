"""The keystore: a node's private keys in one file, encrypted at rest under a passphrase.

Rules of this module (SPEC.md "Keystore file"):

1. The file is never written in place. A new version goes to a temporary file in the same
   folder (mode 0600 from its creation), is flushed and fsync'd, then atomically renamed over
   the old one and the folder is fsync'd. A crash leaves either the old or the new file,
   never half of one. Creating a keystore never replaces an existing file unless asked to.
2. Key derivation is Argon2id (libsodium ``crypto_pwhash``, version 1.3) with a random
   16-byte salt; the derived 32-byte key opens an XSalsa20-Poly1305 SecretBox. The Argon2id
   cost is stored in the file so a keystore made with the fast test limits still opens.
3. Two failures are kept apart because an operator acts differently on them: an intact file
   that does not open is ``keystore_locked`` (wrong passphrase); a file that is not what this
   module wrote (truncated, edited, unparsable, impossible parameters) is
   ``keystore_corrupt``. The outer JSON carries an unkeyed BLAKE2b-256 checksum over the
   encrypted fields for exactly this distinction; the SecretBox tag is what authenticates.
4. Nothing here prints, logs or puts secret material or the passphrase into an exception.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.utils

from caseway.protocol import crypto
from caseway.protocol.encoding import b64decode, b64encode, dump_json, parse_json
from caseway.protocol.errors import CasewayError, ErrorCode

from .identity import Identity

FORMAT = "caseway-keystore"
FORMAT_VERSION = 1
KDF = "argon2id13"
MAX_KEYSTORE_BYTES = 1_048_576
SALT_BYTES = argon2id.SALTBYTES  # 16
NONCE_BYTES = 24
STORAGE_KEY_BYTES = 32

# Production default: libsodium's "moderate" Argon2id limits (3 passes, 256 MiB).
OPSLIMIT_DEFAULT = argon2id.OPSLIMIT_MODERATE
MEMLIMIT_DEFAULT = argon2id.MEMLIMIT_MODERATE
# Fastest limits libsodium accepts; for tests only.
OPSLIMIT_MIN = argon2id.OPSLIMIT_MIN
MEMLIMIT_MIN = argon2id.MEMLIMIT_MIN
# A file asking for more than this is refused as corrupt rather than exhausting the machine.
OPSLIMIT_CAP = 16
MEMLIMIT_CAP = 4 * 1024**3

OUTER_FIELDS = ("format", "v", "kdf", "opslimit", "memlimit", "salt", "nonce", "ciphertext",
                "checksum")


@dataclass
class EncryptionKeyTimes:
    """Lifecycle of one of this node's encryption keys (Unix seconds).

    ``retired_at`` is when a newer key replaced it (peers stop sealing to it);
    ``destroy_at`` is when its private key is erased from the keystore
    (:func:`caseway.keys.lifecycle.destroy_expired_keys`).
    """

    created: int
    retired_at: int | None = None
    destroy_at: int | None = None


@dataclass
class KeystoreContents:
    """Everything a node keeps secret. ``identity.encryption_keys`` lists the current key
    first, then retired keys not yet destroyed; ``encryption_times`` is keyed by key id."""

    identity: Identity
    storage_key: bytes
    created: int = 0
    signing_created: int = 0
    encryption_times: dict[str, EncryptionKeyTimes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.storage_key) != STORAGE_KEY_BYTES:
            raise CasewayError(ErrorCode.BAD_ENCODING, "storage key must be 32 bytes")
        for keypair in self.identity.encryption_keys:
            self.encryption_times.setdefault(keypair.key_id, EncryptionKeyTimes(self.created))

    @classmethod
    def generate(cls, participant: str, *, now: int) -> KeystoreContents:
        """Fresh keys for a new node: signing, encryption and storage keys from the OS RNG."""
        return cls(Identity.generate(participant), nacl.utils.random(STORAGE_KEY_BYTES),
                   created=now, signing_created=now)

    def __repr__(self) -> str:  # never print secret material
        return f"KeystoreContents(participant={self.identity.participant!r})"


# --------------------------------------------------------------------------- plaintext


def _contents_to_json(contents: KeystoreContents) -> bytes:
    identity = contents.identity
    keys = []
    for keypair in identity.encryption_keys:
        times = contents.encryption_times[keypair.key_id]
        keys.append({"secret": b64encode(keypair.secret), "created": times.created,
                     "retired_at": times.retired_at, "destroy_at": times.destroy_at})
    return dump_json({
        "participant": identity.participant,
        "created": contents.created,
        "signing_seed": b64encode(identity.signing.seed),
        "signing_created": contents.signing_created,
        "encryption_keys": keys,
        "storage_key": b64encode(contents.storage_key),
    })


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore time is not an integer")
    return value


def _contents_from_json(plaintext: bytes) -> KeystoreContents:
    try:
        obj: Any = parse_json(plaintext, max_bytes=MAX_KEYSTORE_BYTES)
        keys = obj["encryption_keys"]
        if not isinstance(keys, list) or not keys:
            raise KeyError("encryption_keys")
        keypairs = [crypto.EncryptionKeyPair(b64decode(k["secret"], length=32, field="secret"))
                    for k in keys]
        identity = Identity(
            obj["participant"],
            crypto.SigningKeyPair(b64decode(obj["signing_seed"], length=32,
                                            field="signing_seed")),
            keypairs,
        )
        times = {
            kp.key_id: EncryptionKeyTimes(_optional_int(k["created"]) or 0,
                                          _optional_int(k["retired_at"]),
                                          _optional_int(k["destroy_at"]))
            for kp, k in zip(keypairs, keys, strict=True)
        }
        return KeystoreContents(
            identity,
            b64decode(obj["storage_key"], length=STORAGE_KEY_BYTES, field="storage_key"),
            created=_optional_int(obj["created"]) or 0,
            signing_created=_optional_int(obj["signing_created"]) or 0,
            encryption_times=times,
        )
    except CasewayError as exc:
        if exc.code is ErrorCode.KEYSTORE_CORRUPT:
            raise
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore contents malformed") from None
    except (KeyError, TypeError, AttributeError):
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore contents malformed") from None


# --------------------------------------------------------------------------- sealed file


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return bytes(argon2id.kdf(32, passphrase, salt, opslimit=opslimit, memlimit=memlimit))


def _checksum(outer: dict[str, Any]) -> str:
    covered = dump_json([outer["format"], outer["v"], outer["kdf"], outer["opslimit"],
                         outer["memlimit"], outer["salt"], outer["nonce"], outer["ciphertext"]])
    return b64encode(crypto.digest(covered))


def seal_secret(plaintext: bytes, passphrase: bytes, *, opslimit: int = OPSLIMIT_DEFAULT,
                memlimit: int = MEMLIMIT_DEFAULT) -> bytes:
    """Encrypt ``plaintext`` under ``passphrase``; returns the keystore file bytes."""
    _check_passphrase(passphrase)
    if not OPSLIMIT_MIN <= opslimit <= OPSLIMIT_CAP or not MEMLIMIT_MIN <= memlimit <= MEMLIMIT_CAP:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "Argon2id limits out of range")
    salt = nacl.utils.random(SALT_BYTES)
    nonce = nacl.utils.random(NONCE_BYTES)
    key = _derive(passphrase, salt, opslimit, memlimit)
    ciphertext = sodium.crypto_secretbox(plaintext, nonce, key)
    outer: dict[str, Any] = {
        "format": FORMAT, "v": FORMAT_VERSION, "kdf": KDF, "opslimit": opslimit,
        "memlimit": memlimit, "salt": b64encode(salt), "nonce": b64encode(nonce),
        "ciphertext": b64encode(bytes(ciphertext)),
    }
    outer["checksum"] = _checksum(outer)
    return dump_json(outer) + b"\n"


def open_secret(data: bytes, passphrase: bytes) -> bytes:
    """Decrypt keystore file bytes: ``keystore_corrupt`` or ``keystore_locked`` on failure."""
    try:
        outer = parse_json(data.rstrip(b"\n"), max_bytes=MAX_KEYSTORE_BYTES, max_depth=1)
    except CasewayError:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore file is not valid JSON "
                           "(truncated or edited)") from None
    if not isinstance(outer, dict) or set(outer) != set(OUTER_FIELDS):
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore fields wrong")
    if outer["format"] != FORMAT or outer["v"] != FORMAT_VERSION or outer["kdf"] != KDF:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "not a version 1 Caseway keystore")
    if outer["checksum"] != _checksum(outer):
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore checksum mismatch")
    opslimit, memlimit = outer["opslimit"], outer["memlimit"]
    if (type(opslimit) is not int or type(memlimit) is not int
            or not OPSLIMIT_MIN <= opslimit <= OPSLIMIT_CAP
            or not MEMLIMIT_MIN <= memlimit <= MEMLIMIT_CAP):
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "Argon2id limits out of range")
    try:
        salt = b64decode(outer["salt"], length=SALT_BYTES, field="salt")
        nonce = b64decode(outer["nonce"], length=NONCE_BYTES, field="nonce")
        ciphertext = b64decode(outer["ciphertext"], field="ciphertext")
    except CasewayError:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore field encoding") from None
    _check_passphrase(passphrase)
    key = _derive(passphrase, salt, opslimit, memlimit)
    try:
        return bytes(sodium.crypto_secretbox_open(ciphertext, nonce, key))
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError):
        # The checksum matched, so the bytes are as written: the passphrase is wrong.
        raise CasewayError(ErrorCode.KEYSTORE_LOCKED, "wrong passphrase") from None


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes) or not passphrase:
        raise CasewayError(ErrorCode.KEYSTORE_LOCKED, "no passphrase given")


def write_atomic(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (rule 1).

    Without ``overwrite`` an existing file is refused (``conflict``) and left untouched; the
    final step is then a hard link, which fails if the name appeared in the meantime.
    """
    path = Path(path)
    folder = path.parent
    if not overwrite and path.exists():
        raise CasewayError(ErrorCode.CONFLICT, "file already exists (use overwrite)")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CasewayError(ErrorCode.CONFLICT, "file already exists") from None
            tmp.unlink()
        _fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def read_file(path: Path) -> bytes:
    """Read a keystore file; a missing file is ``keystore_corrupt`` naming no path value."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEYSTORE_BYTES + 1)
    except FileNotFoundError:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore file not found") from None
    if len(data) > MAX_KEYSTORE_BYTES:
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore file too large")
    return data


# --------------------------------------------------------------------------- public API


def create_keystore(path: Path, passphrase: bytes, contents: KeystoreContents, *,
                    opslimit: int = OPSLIMIT_DEFAULT, memlimit: int = MEMLIMIT_DEFAULT,
                    overwrite: bool = False) -> None:
    """Write a new keystore file (atomic, 0600). Refuses an existing file unless
    ``overwrite`` (``conflict``)."""
    plaintext = _contents_to_json(contents)
    write_atomic(Path(path), seal_secret(plaintext, passphrase, opslimit=opslimit,
                                         memlimit=memlimit), overwrite=overwrite)


def save_keystore(path: Path, passphrase: bytes, contents: KeystoreContents, *,
                  opslimit: int = OPSLIMIT_DEFAULT, memlimit: int = MEMLIMIT_DEFAULT) -> None:
    """Rewrite an existing keystore (after rotation or destruction), atomically.

    A fresh salt and nonce are drawn on every save; the old file is replaced as a whole, so
    a destroyed key is no longer in the file once this returns.
    """
    create_keystore(path, passphrase, contents, opslimit=opslimit, memlimit=memlimit,
                    overwrite=True)


def open_keystore(path: Path, passphrase: bytes) -> KeystoreContents:
    """Open a keystore: ``keystore_locked`` (wrong or empty passphrase) or
    ``keystore_corrupt`` (missing, truncated, edited). Never writes anything."""
    return _contents_from_json(open_secret(read_file(Path(path)), passphrase))


def keystore_limits(path: Path) -> tuple[int, int]:
    """The (opslimit, memlimit) a keystore file was written with, to keep them on save."""
    try:
        outer = parse_json(read_file(Path(path)).rstrip(b"\n"), max_bytes=MAX_KEYSTORE_BYTES,
                           max_depth=1)
        return int(outer["opslimit"]), int(outer["memlimit"])
    except (CasewayError, KeyError, TypeError, ValueError):
        raise CasewayError(ErrorCode.KEYSTORE_CORRUPT, "keystore fields wrong") from None


def read_passphrase(*, env: str = "CASEWAY_PASSPHRASE", file: Path | None = None,
                    prompt: bool = True, confirm: bool = False) -> bytes:
    """The keystore passphrase, from (in this order) ``file``, the environment variable
    ``env``, or an interactive prompt on a terminal. One trailing newline of a file is
    dropped. Nothing found, or an empty passphrase, is ``keystore_locked``."""
    if file is not None:
        try:
            raw = Path(file).read_bytes()
        except OSError:
            raise CasewayError(ErrorCode.KEYSTORE_LOCKED, "passphrase file unreadable") from None
        value = raw.removesuffix(b"\n").removesuffix(b"\r")
    elif os.environ.get(env):
        value = os.environ[env].encode("utf-8")
    elif prompt and sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass("Keystore passphrase: ").encode("utf-8")
        if confirm and getpass.getpass("Repeat passphrase: ").encode("utf-8") != value:
            raise CasewayError(ErrorCode.KEYSTORE_LOCKED, "passphrases differ")
    else:
        raise CasewayError(ErrorCode.KEYSTORE_LOCKED,
                           f"no passphrase: set {env}, give a passphrase file, or use a "
                           "terminal")
    if not value:
        raise CasewayError(ErrorCode.KEYSTORE_LOCKED, "empty passphrase")
    return value
