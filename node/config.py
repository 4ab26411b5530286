"""The node's configuration: ``caseway.toml`` in the node home, then ``CASEWAY_*`` overrides.

Rules of this module (SPEC.md "Node configuration"):

1. Every key is declared once in :data:`KEYS` with its type and default. A key the file
   does not declare is an error (a typo must not silently fall back to a default), and
   every error names the key and the problem, never a secret.
2. An environment variable overrides the file: ``CASEWAY_`` followed by the dotted key in
   upper case with ``_`` for ``.`` (``federation.listen`` -> ``CASEWAY_FEDERATION_LISTEN``).
   Lists are comma-separated; booleans are ``true``/``false``/``1``/``0``.
3. Safe defaults: the local API listens on loopback; plain HTTP on a non-loopback address
   is refused unless ``federation.allow_plain_http`` is set. Relative paths are relative to
   the node home.
4. The keystore passphrase is not configuration; it comes from
   :func:`caseway.keys.keystore.read_passphrase`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "caseway.toml"
_PARTICIPANT = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
ENV_PREFIX = "CASEWAY_"
LOG_FORMATS = ("auto", "json", "console")


class ConfigError(Exception):
    """The configuration cannot be used. ``key`` names the offending setting, if any."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Outbox retry schedule and envelope lifetime (SPEC.md "Delivery")."""

    backoff_base: float = 5.0
    backoff_multiplier: float = 2.0
    backoff_cap: float = 3600.0
    envelope_lifetime: int = 7 * 24 * 3600
    request_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class IngressSettings:
    """Federation listener limits (SPEC.md "Federation endpoint")."""

    max_concurrency: int = 64
    sender_rate: float = 20.0  # envelopes per second, sustained, per sender participant
    sender_burst: float = 200.0
    address_rate: float = 50.0  # requests per second per peer address, before parsing
    address_burst: float = 400.0
    body_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    home: Path
    participant: str
    database: Path
    keystore: Path
    federation: Listen
    local_api: Listen
    tls_cert: Path | None
    tls_key: Path | None
    allow_plain_http: bool
    directory: Path
    authority_keys: tuple[str, ...]
    log_format: str
    delivery: DeliverySettings
    ingress: IngressSettings

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


# key -> (type, default); default None means "required" unless listed in OPTIONAL.
_D, _I = DeliverySettings(), IngressSettings()
KEYS: dict[str, tuple[type, Any]] = {
    "participant": (str, None),
    "database": (str, "caseway.db"),
    "keystore": (str, "keystore.json"),
    "log_format": (str, "auto"),
    "federation.listen": (str, "0.0.0.0:8443"),
    "federation.tls_cert": (str, ""),
    "federation.tls_key": (str, ""),
    "federation.allow_plain_http": (bool, False),
    "local_api.listen": (str, "127.0.0.1:8444"),
    "directory.path": (str, "directory.json"),
    "directory.authority_keys": (list, None),
    "delivery.backoff_base": (float, _D.backoff_base),
    "delivery.backoff_multiplier": (float, _D.backoff_multiplier),
    "delivery.backoff_cap": (float, _D.backoff_cap),
    "delivery.envelope_lifetime": (int, _D.envelope_lifetime),
    "delivery.request_timeout": (float, _D.request_timeout),
    "ingress.max_concurrency": (int, _I.max_concurrency),
    "ingress.sender_rate": (float, _I.sender_rate),
    "ingress.sender_burst": (float, _I.sender_burst),
    "ingress.address_rate": (float, _I.address_rate),
    "ingress.address_burst": (float, _I.address_burst),
    "ingress.body_timeout": (float, _I.body_timeout),
}
del _D, _I


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace(".", "_")


def load_config(home: Path, *, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read ``home/caseway.toml``, apply environment overrides, validate (rules 1–3)."""
    env = os.environ if env is None else env
    path = home / CONFIG_FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path} (run `caseway init` first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({type(exc).__name__})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message gives line and column and the kind of error, not the value.
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(home, document, env)


def parse_config(home: Path, document: Mapping[str, Any], env: Mapping[str, str]) -> NodeConfig:
    values = _flatten(document)
    for key in values:
        if key not in KEYS:
            raise ConfigError("unknown setting (check the spelling)", key=key)
    settings: dict[str, Any] = {}
    for key, (kind, default) in KEYS.items():
        if env_name(key) in env:
            settings[key] = _from_env(key, kind, env[env_name(key)])
        elif key in values:
            settings[key] = _typed(key, kind, values[key])
        elif default is None:
            raise ConfigError(f"required setting missing (set it in {CONFIG_FILE} or "
                              f"{env_name(key)})", key=key)
        else:
            settings[key] = default
    return _build(home, settings)


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in document.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _typed(key: str, kind: type, value: Any) -> Any:
    if kind is float and type(value) is int:
        return float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("must be a list of strings", key=key)
        return tuple(value)
    if type(value) is not kind:
        raise ConfigError(f"must be a {kind.__name__}", key=key)
    return value


def _from_env(key: str, kind: type, raw: str) -> Any:
    name = env_name(key)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if kind is list:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return kind(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a {kind.__name__}",
                          key=key) from None


def parse_listen(key: str, value: str) -> Listen:
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError("must be HOST:PORT (for example 127.0.0.1:8444)", key=key)
    return Listen(host, int(port_text))


def _positive(settings: dict[str, Any], key: str) -> None:
    if not settings[key] > 0:
        raise ConfigError("must be greater than zero", key=key)


def _build(home: Path, s: dict[str, Any]) -> NodeConfig:
    def path(key: str) -> Path:
        value = Path(s[key])
        return value if value.is_absolute() else home / value

    if s["log_format"] not in LOG_FORMATS:
        raise ConfigError(f"must be one of {', '.join(LOG_FORMATS)}", key="log_format")
    for key in KEYS:
        if key.startswith(("delivery.", "ingress.")):
            _positive(s, key)
    if s["delivery.backoff_multiplier"] < 1:
        raise ConfigError("must be at least 1", key="delivery.backoff_multiplier")
    federation = parse_listen("federation.listen", s["federation.listen"])
    local_api = parse_listen("local_api.listen", s["local_api.listen"])
    cert, key = s["federation.tls_cert"], s["federation.tls_key"]
    if bool(cert) != bool(key):
        raise ConfigError("tls_cert and tls_key must be set together",
                          key="federation.tls_key" if cert else "federation.tls_cert")
    allow_plain = s["federation.allow_plain_http"]
    if not cert and not federation.is_loopback and not allow_plain:
        raise ConfigError("plain HTTP on a non-loopback address is refused: set tls_cert and "
                          "tls_key, or allow_plain_http = true behind a TLS proxy",
                          key="federation.listen")
    if (not cert and not local_api.is_loopback and not allow_plain):
        raise ConfigError("the local API carries bearer tokens: on a non-loopback address it "
                          "needs tls_cert and tls_key (or allow_plain_http = true)",
                          key="local_api.listen")
    if not _PARTICIPANT.fullmatch(s["participant"]):
        raise ConfigError("must be 1-64 of a-z, 0-9, '.', '-', starting with a letter or "
                          "digit", key="participant")
    if not s["directory.authority_keys"]:
        raise ConfigError("at least one pinned authority key is required",
                          key="directory.authority_keys")
    return NodeConfig(
        home=home,
        participant=s["participant"],
        database=path("database"),
        keystore=path("keystore"),
        federation=federation,
        local_api=local_api,
        tls_cert=path("federation.tls_cert") if cert else None,
        tls_key=path("federation.tls_key") if key else None,
        allow_plain_http=allow_plain,
        directory=path("directory.path"),
        authority_keys=tuple(s["directory.authority_keys"]),
        log_format=s["log_format"],
        delivery=DeliverySettings(s["delivery.backoff_base"], s["delivery.backoff_multiplier"],
                                  s["delivery.backoff_cap"], s["delivery.envelope_lifetime"],
                                  s["delivery.request_timeout"]),
        ingress=IngressSettings(s["ingress.max_concurrency"], s["ingress.sender_rate"],
                                s["ingress.sender_burst"], s["ingress.address_rate"],
                                s["ingress.address_burst"], s["ingress.body_timeout"]),
    )
