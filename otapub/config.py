"""Configuration: config.json plus OTA_SERVER_<KEY> environment overrides (seed-compatible).

The schema is declared once, as data. Every key can be overridden from the environment,
with the type conversion the seed did; unlike the seed, keys without a default (such as
``admin_api_key``) can be overridden too.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otapub.errors import OtapubError
from otapub.tokens import DEFAULT_SCHEME, SCHEMES

log = logging.getLogger(__name__)

ENV_PREFIX = "OTA_SERVER_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The seed's shipped placeholders: anyone who read its README knows them.
PLACEHOLDER_SECRETS = frozenset(
    {"change-admin-api-key-in-production", "your-device-secret-key", "change-this-key-in-production"}
)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # str, int, bool, path, url, level, scheme
    default: Any
    help: str
    secret: bool = False


_INT_MAX = {
    "checkin_retention_days": 100_000,  # days back from today stay a date (0 keeps all anyway)
    "checkin_fold_seconds": 86_400,  # a day: a longer pause is no background folding (0 turns it off)
}

FIELDS: tuple[Field, ...] = (
    Field("shared_secret_key", "str", None, "fleet secret the device tokens derive from", secret=True),
    Field("server_port", "int", 5000, "port of the shim (otapub serve)"),
    Field("server_host", "str", "0.0.0.0", "address the shim listens on"),  # noqa: S104 (seed default)
    Field("debug_mode", "bool", False, "allow placeholder secrets; verbose errors"),
    Field("log_level", "level", "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    Field("devices_file", "path", None, "seed only: its devices.json (use `otapub import-seed`)"),
    Field("firmware_directory", "path", "firmware", "where firmware files live"),
    Field("admin_api_key", "str", None, "enables the admin API (X-Admin-API-Key)", secret=True),
    Field("fleet_dir", "path", "fleet", "folder of fleet YAML files"),
    Field("site_dir", "path", "site", "where the static site is rendered"),
    Field("state_dir", "path", ".otapub", "build state and caches (not published, not in git)"),
    Field("base_url", "url", None, "absolute URL the site is served from"),
    Field("token_scheme", "scheme", DEFAULT_SCHEME, "default device token scheme"),
    Field("checkin_log", "path", "state/checkins.jsonl", "append-only check-in log of the shim"),
    Field("checkin_log_max_bytes", "int", 0, "the shim moves its check-in log to <log>.<time> when it reaches "
          "this size (0: never)"),
    Field("checkin_log_daily", "bool", False, "the shim moves its check-in log to <log>.<time> at the first "
          "check-in of each UTC day"),
    Field("checkin_db", "path", "state/checkins.sqlite", "the check-in store (SQLite) the log is folded into"),
    Field("checkin_retention_days", "int", 400, "check-in history kept in the store (0: forever)"),
    Field("checkin_fold_seconds", "int", 5, "`otapub serve` folds the check-in log into the store this often "
          "(0: only readers such as `otapub status` fold)"),
    Field("default_device_file", "path", "fleet/devices.yaml", "where `otapub device add` puts new devices"),
    Field("admin_git_commit", "bool", False, "commit each admin API change to git"),
    Field("firmware_grace_seconds", "int", 3600, "keep unreferenced firmware this long (and one build)"),
    # Signed answers (docs/security.md). The private key never lives in the repository or the site.
    Field("signing_key", "str", None, "Ed25519 answer-signing key, base64 of its 32-byte seed (or PEM); "
          "set OTA_SERVER_SIGNING_KEY", secret=True),
    Field("signing_key_file", "path", None, "file holding the Ed25519 signing key (outside the repository)"),
    Field("signing_key_expires", "str", None, "UTC date after which the signing key must be replaced"),
    Field("previous_public_keys", "str", None, "public keys still trusted during a rotation "
          "(hex or base64, comma-separated); published in keys.json"),
    Field("answer_lifetime_days", "int", 7, "signed answers expire after this many days (re-signed at half)"),
    Field("previous_site_url", "url", None, "where the live site is, for a build without state (fresh CI): "
          "previous targets (anti-rollback) and manifest_version are read from its answers"),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(OtapubError):
    exit_code = 2


class Config:
    """Resolved settings. Relative paths resolve against the config file's folder."""

    def __init__(self, values: Mapping[str, Any], root: Path, source: Path | None):
        self._values = dict(values)
        self.root = root
        self.source = source

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def path(self, name: str) -> Path:
        """A path-valued setting, absolute."""
        value = self._values[name]
        return (self.root / value).resolve() if value is not None else None

    def replace(self, **changes: Any) -> Config:
        values = dict(self._values)
        values.update(changes)
        return Config(values, self.root, self.source)

    def with_root(self, root: Path) -> Config:
        """The same settings, resolved against another folder (e.g. a git checkout of the base)."""
        return Config(self._values, root, None)

    def public(self) -> dict[str, Any]:
        """The settings with secrets masked: safe to print or log."""
        return {
            k: ("***" if FIELDS_BY_NAME[k].secret and v else v) for k, v in self._values.items()
        }

    def placeholder_secrets(self) -> list[str]:
        """Names of secret settings still holding one of the seed's placeholder values."""
        return [f.name for f in FIELDS if f.secret and self._values.get(f.name) in PLACEHOLDER_SECRETS]

    def refuse_placeholders(self, names: Iterable[str] | None = None, doing: str = "") -> None:
        """Refuse the seed's published placeholder secrets (every secret setting, or ``names``) outside
        debug_mode. ``doing`` starts the message (e.g. "refusing to start: ")."""
        found = [name for name in self.placeholder_secrets() if names is None or name in names]
        if found and not self.debug_mode:
            raise OtapubError(f"{doing}{', '.join(found)} still holds the seed's published placeholder value: "
                              "set a real secret (or debug_mode for local experiments)")

    def secret(self, purpose: str, public_if_placeholder: bool = False) -> str:
        """shared_secret_key, refused when it is not set and when it is the seed's placeholder (outside
        debug_mode; always with ``public_if_placeholder``: what derives from it would be public).
        ``purpose`` says what needs it, e.g. "device tokens derive from it"."""
        secret = self._values.get("shared_secret_key")
        if not secret:
            raise OtapubError(f"shared_secret_key is not set ({purpose}): put it in OTA_SERVER_SHARED_SECRET_KEY "
                              "(or config.json, outside git)")
        if public_if_placeholder and secret in PLACEHOLDER_SECRETS:
            raise OtapubError(f"shared_secret_key still holds the seed's published placeholder value ({purpose}): "
                              "what derives from it would be public; set a real secret")
        self.refuse_placeholders(["shared_secret_key"])
        return str(secret)


def _convert(field: Field, value: Any) -> Any:
    """Convert one raw value; raise ValueError with what was expected."""
    if value is None:
        return None
    kind = field.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"expected an integer, found {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer, found {value!r}") from None
        if field.name == "server_port" and not 0 < number < 65536:
            raise ValueError(f"expected a port number 1-65535, found {number}")
        if number < 0:
            raise ValueError(f"expected a non-negative integer, found {number}")
        if number > _INT_MAX.get(field.name, number):
            raise ValueError(f"expected at most {_INT_MAX[field.name]}, found {number}")
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, found {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a string, found {value!r}")
    if kind == "level":
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, found {value!r}")
        return value.upper()
    if kind == "url":
        if not value:
            return None
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"expected an absolute http(s):// URL, found {value!r}")
        return value.rstrip("/")
    if kind == "scheme":
        if value not in SCHEMES:
            raise ValueError(f"expected one of {', '.join(sorted(SCHEMES))}, found {value!r}")
    if kind == "path" and not value:
        raise ValueError("expected a path, found an empty string")
    return value


def _line_of_key(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if f'"{key}"' in line:
            return number
    return None


def load_config(
    path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read config.json (``path``, or ./config.json when present) and the environment.

    All problems are collected and raised together as one ConfigError.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}
    source: Path | None = None
    if path is not None:
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"{source}: config file not found")
    elif Path("config.json").is_file():
        source = Path("config.json")
    text = ""
    if source is not None:
        source = source.resolve()
        try:
            text = source.read_text(encoding="utf-8")
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}:1: expected a JSON object of settings")
    root = source.parent if source is not None else Path.cwd().resolve()
    values = {f.name: f.default for f in FIELDS}

    def apply(where: str, key: str, value: Any) -> None:
        field = FIELDS_BY_NAME.get(key)
        if field is None:
            problems.append(f"{where}: unknown setting (known: {', '.join(FIELDS_BY_NAME)})")
            return
        try:
            values[key] = _convert(field, value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")

    for key, value in raw.items():
        apply(f"{source}:{_line_of_key(text, key) or 1}: {key}", key, value)
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            apply(f"environment {name}", name[len(ENV_PREFIX) :].lower(), value)
    if problems:
        raise ConfigError("\n".join(problems))
    if values["devices_file"] is not None:
        log.warning("devices_file is a seed setting and is ignored; convert it with `otapub import-seed`")
    return Config(values, root, source)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s")
