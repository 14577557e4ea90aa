"""The fleet's security posture (``otapub audit``): one list of findings, for humans and for CI.

Each check yields a finding: ``error`` (the command exits non-zero), ``warning`` (non-zero with
``--strict``), or ``ok``. Nothing here prints a secret: findings name settings, never values.
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from otapub.check import Checked, check_fleet
from otapub.config import Config
from otapub.errors import OtapubError
from otapub.firmware import firmware_url
from otapub.inspection import answer_fields
from otapub.layout import is_answer_path
from otapub.signing import (
    KEYS_FILE,
    SIGNATURE_MEMBER,
    SigningError,
    format_time,
    load_signing_key,
    parse_time,
    signing_key_path,
)
from otapub.tokens import FORGEABLE_SCHEMES, scheme_of

ERROR, WARNING, OK = "error", "warning", "ok"
SHORT_SECRET = 16  # characters: below this, an error
GOOD_SECRET = 32  # below this, a warning
KEY_EXPIRY_WARNING = timedelta(days=30)


@dataclass
class Finding:
    severity: str
    check: str
    message: str
    count: int | None = None


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, check: str, message: str, count: int | None = None) -> None:
        self.findings.append(Finding(severity, check, message, count))

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)

    def failed(self, strict: bool = False) -> bool:
        return self.errors > 0 or (strict and self.warnings > 0)

    def to_json(self) -> str:
        data = {"errors": self.errors, "warnings": self.warnings, "facts": self.facts,
                "findings": [asdict(f) for f in self.findings]}
        return json.dumps(data, indent=2) + "\n"

    def to_text(self) -> str:
        order = {ERROR: 0, WARNING: 1, OK: 2}
        width = max((len(f.check) for f in self.findings), default=0)
        lines = [f"{f.severity.upper():8} {f.check:{width}}  {f.message}"
                 for f in sorted(self.findings, key=lambda f: order[f.severity])]
        lines.append(f"{self.errors} error(s), {self.warnings} warning(s)")
        return "\n".join(lines) + "\n"


def audit(config: Config, now: datetime | None = None) -> Report:
    now = now or datetime.now(timezone.utc)
    report = Report()
    _secrets(config, report)
    _base_url(config, report)
    checked = _checked(config, now, report)
    if checked is not None:
        _tokens(config, checked.fleet, report)
        _answers(config, checked, report)
    _signing(config, now, report)
    return report


def _secrets(config: Config, report: Report) -> None:
    secret = config.shared_secret_key
    placeholders = config.placeholder_secrets()
    for name in placeholders:
        report.add(ERROR, "placeholder-secret", f"{name} holds one of the seed's published placeholder values: "
                                                "anyone who read its README knows it")
    if not secret:
        report.add(WARNING, "secret", "shared_secret_key is not set here, so it cannot be audited "
                                      "(run the audit where the build runs)")
    elif "shared_secret_key" not in placeholders:
        if len(secret) < SHORT_SECRET:
            report.add(ERROR, "short-secret", f"shared_secret_key has {len(secret)} characters: a short secret can "
                                              "be guessed offline from one djb2 token; use 32+ random characters")
        elif len(secret) < GOOD_SECRET:
            report.add(WARNING, "short-secret", f"shared_secret_key has {len(secret)} characters; use 32+ random "
                                                "characters (every hmac-sha256 device key derives from it)")
        else:
            report.add(OK, "secret", f"shared_secret_key is set ({len(secret)} characters)")
    admin = config.admin_api_key
    if admin and "admin_api_key" not in placeholders and len(admin) < GOOD_SECRET:
        report.add(WARNING, "short-secret", f"admin_api_key has {len(admin)} characters; use 32+ random characters")


def _base_url(config: Config, report: Report) -> None:
    url = config.base_url
    if url is None:
        report.add(WARNING, "base-url", "base_url is not set: answers hold relative firmware URLs and the shim "
                                        "answers with the scheme the request came in on; set an https:// URL")
    elif not url.lower().startswith("https://"):
        report.add(ERROR, "base-url", f"base_url {url} is not HTTPS: tokens and answers travel in clear text and "
                                      "anyone on the path can replace the firmware")
    else:
        report.add(OK, "base-url", f"base_url is HTTPS ({url})")


def _checked(config: Config, now: datetime, report: Report) -> Checked | None:
    try:
        return check_fleet(config, now)
    except OtapubError as exc:
        first = str(exc).splitlines()[0]
        report.add(ERROR, "fleet", f"the fleet does not build, so device checks were skipped: {first}")
        return None


def _tokens(config: Config, fleet: Any, report: Report) -> None:
    schemes = Counter(scheme_of(d, config.token_scheme) for d in fleet.devices.values())
    report.facts["devices"] = len(fleet.devices)
    report.facts["token_schemes"] = dict(sorted(schemes.items()))
    forgeable = sum(n for name, n in schemes.items() if name in FORGEABLE_SCHEMES)
    if forgeable:
        detail = ", ".join(f"{name}: {n}" for name, n in sorted(schemes.items()) if name in FORGEABLE_SCHEMES)
        report.add(WARNING, "djb2-tokens",
                   f"{forgeable} of {len(fleet.devices)} device(s) still use djb2 tokens ({detail}): one captured "
                   f"(MAC, token) pair lets anyone compute the token of all {forgeable}, without the secret "
                   "(docs/security.md); migrate them to hmac-sha256", forgeable)
    elif fleet.devices:
        report.add(OK, "djb2-tokens", f"all {len(fleet.devices)} device(s) use per-device hmac-sha256 tokens")
    clients = Counter(client for d in fleet.devices.values() for client in d.clients)
    report.facts["clients"] = dict(sorted(clients.items()))
    if fleet.devices:
        report.add(OK, "clients", "devices per update client: " + ", ".join(f"{name} {n}" for name, n in
                                                                          sorted(clients.items())))
    if config.token_scheme in FORGEABLE_SCHEMES:
        report.add(WARNING, "default-scheme", f"token_scheme (the default for devices that name none) is "
                                              f"{config.token_scheme}; set it to hmac-sha256 for new fleets")


def _answers(config: Config, checked: Checked, report: Report) -> None:
    """What the devices' answers will say about their firmware (from the checks; nothing rendered)."""
    facts: dict[str, tuple[bool, bool, bool]] = {}  # release -> (no secure_version, no sha256, http URL)
    no_secure = no_sha = insecure_url = targeted = 0
    for target in checked.targets.values():
        release = target.release
        if release is None:
            continue
        if release.name not in facts:
            digests = checked.digests.get(release.name)
            url = firmware_url(config.base_url, release, digests) or ""
            facts[release.name] = (answer_fields(release, checked.images.get(release.name)).get("secure_version")
                                   is None, not (digests and digests.sha256), url.lower().startswith("http://"))
        secure, sha, http = facts[release.name]
        no_secure += secure
        no_sha += sha
        insecure_url += http
        targeted += 1
    if no_sha:
        report.add(ERROR, "firmware-sha256", f"{no_sha} answer(s) name firmware without a SHA-256: declare "
                                             "`sha256:` (and `size:`) for every `url:` release", no_sha)
    else:
        report.add(OK, "firmware-sha256", f"every targeted firmware has a SHA-256 ({targeted} answer(s))")
    if insecure_url:
        report.add(ERROR, "firmware-url", f"{insecure_url} answer(s) download firmware over plain http://",
                   insecure_url)
    if no_secure:
        report.add(WARNING, "secure-version", f"{no_secure} answer(s) have no secure_version (a `url:` release "
                                              "without `secure_version:`, or an image without app descriptor): "
                                              "anti-rollback cannot be checked for them", no_secure)
    elif targeted:
        report.add(OK, "secure-version", "every answer with a release carries its secure_version")


def _signing(config: Config, now: datetime, report: Report) -> None:
    try:
        key = load_signing_key(config)
    except SigningError as exc:
        report.add(ERROR, "signing", str(exc))
        return
    if key is None:
        report.add(WARNING, "signing", "signing is off: a compromised host or CDN can plant answers devices cannot "
                                       "tell from genuine ones; run `otapub keygen` (docs/security.md)")
        return
    report.facts["signing_key_id"] = key.keyid
    report.add(OK, "signing", f"answers are signed with key {key.keyid}; they expire after "
                              f"{config.answer_lifetime_days} day(s)")
    if config.signing_key_file:
        mode = os.stat(signing_key_path(config)).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            report.add(WARNING, "key-file", f"signing_key_file is readable by others (mode {stat.S_IMODE(mode):o}); "
                                            "chmod 600 it")
    if config.signing_key_expires:
        try:
            expires = parse_time(config.signing_key_expires)
        except ValueError:
            report.add(ERROR, "key-expiry", "signing_key_expires is not a date (e.g. 2027-01-31)")
        else:
            if expires <= now:
                report.add(ERROR, "key-expiry", f"the signing key expired at {format_time(expires)}: rotate it")
            elif expires - now < KEY_EXPIRY_WARNING:
                report.add(WARNING, "key-expiry", f"the signing key expires at {format_time(expires)}, in "
                                                  f"{(expires - now).days} day(s): rotate it (docs/security.md)")
            else:
                report.add(OK, "key-expiry", f"the signing key is valid until {format_time(expires)}")
    else:
        report.add(WARNING, "key-expiry", "signing_key_expires is not set: plan the key's rotation with a date")
    _published(config, now, key.keyid, report)


def _published(config: Config, now: datetime, keyid: str, report: Report) -> None:
    """What the published site holds: expiry of its answers, and its keys.json."""
    site = config.path("site_dir")
    if not (site / "d").is_dir():
        report.add(WARNING, "published", f"no site at {site} to check (run the audit after `otapub build`)")
        return
    unsigned = 0
    earliest: datetime | None = None
    for dirpath, _dirs, names in os.walk(site / "d"):
        for name in names:
            if not is_answer_path(os.path.relpath(os.path.join(dirpath, name), site)) or not name.endswith(".json"):
                continue  # a client's manifest (otapub.clients) is in the client's format, not signed
            try:
                data = Path(dirpath, name).read_bytes()
                expires = json.loads(data).get("expires") if SIGNATURE_MEMBER in data else None
                moment = parse_time(expires) if isinstance(expires, str) else None
            except (OSError, ValueError, AttributeError):
                moment = None
            if moment is None:
                unsigned += 1
            elif earliest is None or moment < earliest:
                earliest = moment
    if unsigned:
        report.add(WARNING, "published", f"{unsigned} published answer(s) are unsigned: rebuild the site", unsigned)
    if earliest is not None:
        quarter = timedelta(days=config.answer_lifetime_days) / 4
        if earliest <= now:
            report.add(ERROR, "answer-expiry", f"published answers expired at {format_time(earliest)}: devices "
                                               "reject them; the scheduled rebuild is not running")
        elif earliest - now < quarter:
            report.add(WARNING, "answer-expiry", f"published answers expire at {format_time(earliest)}: the "
                                                 "scheduled rebuild (re-signing) may not be running")
        else:
            report.add(OK, "answer-expiry", f"the earliest published answer expires at {format_time(earliest)}")
    try:
        keys = json.loads((site / KEYS_FILE).read_bytes())
        published = {k.get("keyid") for k in keys.get("keys", [])}
    except (OSError, ValueError, AttributeError):
        published = set()
    if keyid not in published:
        report.add(WARNING, "keys-json", f"the site's {KEYS_FILE} does not list the signing key {keyid}: rebuild")
