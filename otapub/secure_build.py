"""What a build adds for security: the anti-rollback check, signed answers and keys.json.

Runs inside ``build_site`` between rendering and publishing (data still flows one way: the
rendered answers come in, signed answers go out). Its state lives beside the build state in
``state_dir/security.json`` (never published: it names answer paths):

- ``targets``: per device the last published release with a ``secure_version``, and that
  version: the device's anti-rollback floor;
- ``manifest_version``: the last version issued, so it never decreases;
- ``answers``: per answer path the content hash, version, expiry, key id and signature, so an
  unchanged answer keeps its exact bytes (no rewrite) until less than half its lifetime remains.

When that file is lost, all of it is recovered from the published site (answers and build.json).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otapub.config import Config
from otapub.errors import OtapubError, Problem, ValidationError
from otapub.fleet import load_fleet
from otapub.fsutil import atomic_write, content_digest, is_temp
from otapub.git import tree_at
from otapub.inspection import answer_fields
from otapub.layout import answer_path, is_answer_path
from otapub.model import Device, Fleet
from otapub.record import RECORD, read_record
from otapub.signing import (
    KEYS_FILE,
    SIGNATURE_MEMBER,
    SIGNED_FIELDS,
    SigningError,
    SigningKey,
    assemble,
    canonical_json,
    format_time,
    key_id,
    keys_document,
    load_signing_key,
    parse_public_keys,
    parse_time,
    verify_answer,
)
from otapub.targets import Target
from otapub.tokens import DeviceTokens

if TYPE_CHECKING:  # the renderer's and the checks' output come in; neither module is needed to run
    from otapub.check import Checked
    from otapub.render import Plan

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"[0-9a-f]{7,64}")
STATE_FILE = "security.json"
STATE_FORMAT = 1


@dataclass
class _Signed:
    content: str  # hash of the unsigned answer
    version: int
    expires: str
    keyid: str
    sig: str



class SecureBuild:
    """One build's signing and anti-rollback step. Construct early: it loads and checks the key."""

    def __init__(self, config: Config, now: datetime, check_only: bool = False):
        """``check_only``: anti-rollback only, for `otapub check` and `plan`, which run without the
        private key (pull requests get no secrets); nothing is signed or saved."""
        self.now = now.astimezone(timezone.utc)
        self.check_only = check_only
        self.key: SigningKey | None = None if check_only else load_signing_key(config)
        self.previous = parse_public_keys(config.previous_public_keys, "previous_public_keys")
        self.lifetime = timedelta(days=config.answer_lifetime_days)
        self.key_expires: datetime | None = None
        if config.signing_key_expires:
            try:
                self.key_expires = parse_time(config.signing_key_expires)
            except ValueError:
                raise SigningError(f"signing_key_expires: expected a UTC date such as 2027-01-31, found "
                                   f"{config.signing_key_expires!r}") from None
        if self.key is not None:
            if config.answer_lifetime_days < 1:
                raise SigningError("answer_lifetime_days must be at least 1 (and at least twice the interval "
                                   "of the scheduled rebuild)")
            if self.key_expires is not None and self.key_expires <= self.now:
                raise SigningError(f"the signing key {self.key.keyid} expired at {format_time(self.key_expires)} "
                                   "(signing_key_expires): rotate it (docs/security.md, \"Key rotation\")")
        self.manifest_version = 0
        self.key_id: str | None = None
        self.resign_at: datetime | None = None
        self.answers: dict[str, _Signed] = {}
        self.targets: dict[str, list] = {}
        self.previous_site_url: str | None = config.previous_site_url
        self.config = config
        self._path: Path | None = None
        self._stateless = False

    # -- state ---------------------------------------------------------------------------------
    def load_state(self, state_dir: Path, site: Path) -> None:
        self._path = state_dir / STATE_FILE
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("format") == STATE_FORMAT:
            self.manifest_version = int(data.get("manifest_version") or 0)
            self.key_id = data.get("key_id")
            self.resign_at = _time(data.get("resign_at"))
            self.answers = {path: _Signed(*entry) for path, entry in data.get("answers", {}).items()}
            self.targets = data.get("targets", {})
        else:
            self._stateless = True
            self._recover(_local_answers(site), remote=False)
        # build.json survives a lost or restored state: never issue a version below it.
        try:
            record = read_record(site) or {}
            self.manifest_version = max(self.manifest_version, int(record.get("manifest_version") or 0))
        except (ValueError, TypeError):
            pass

    def _trusted(self) -> dict[str, bytes]:
        keys = {key_id(raw): raw for raw in self.previous}
        if self.key is not None:
            keys[self.key.keyid] = self.key.public_raw
        return keys

    def _recover(self, items: Iterable[tuple[str, bytes]], remote: bool) -> int:
        """Rebuild the state from published answers (the state dir was lost, or CI starts afresh).

        A signature is checked before its answer's version or signature is reused; from a remote
        site, only verified answers count while signing is on (a host must not lower the floor).
        """
        trusted, found = self._trusted(), 0
        for path, data in items:
            try:
                answer = json.loads(data)
            except ValueError:
                continue
            if not isinstance(answer, dict) or not isinstance(answer.get("mac"), str):
                continue
            verified = None
            if SIGNATURE_MEMBER in data and not self.check_only:  # a check needs the floors only
                try:
                    verified = verify_answer(data, trusted, datetime.min.replace(tzinfo=timezone.utc))
                except OtapubError as exc:
                    log.warning("%s: published answer not reused: %s", path, exc)
            if remote and self.key is not None and verified is None:
                raise _unrecoverable(self.previous_site_url, [answer["mac"]], "its published answer does not "
                                     "verify with the signing key or previous_public_keys")
            found += 1
            if answer.get("release") is not None:
                self.targets[answer["mac"]] = [answer.get("release"), answer.get("secure_version")]
            if verified is None:
                continue
            self.manifest_version = max(self.manifest_version, verified.manifest_version)
            content = {k: v for k, v in verified.content.items() if k not in SIGNED_FIELDS}
            signature = answer["signature"]
            self.answers[path] = _Signed(content_digest(canonical_json(content)), verified.manifest_version,
                                         format_time(verified.expires), signature["keyid"], signature["sig"])
        return found

    def _previous_answers(self, fleet: Fleet) -> list[tuple[str, bytes]]:
        """The live site's answers of the devices it already served (a fresh CI runner has no state).

        Fails closed: a device of the live site's build whose answer cannot be read stops the build
        (else its anti-rollback floor would silently vanish). Which devices that build had comes
        from the commit its record names; without one, every device of the fleet must be there.
        """
        base = self.previous_site_url
        assert base is not None
        record = _previous_record(base)
        if record is None:
            log.warning("previous site %s has no build record (build.json): taken as never published", base)
            return []
        config = self.config
        token = DeviceTokens(config.secret("the answers' paths derive from it"), config.token_scheme).canonical
        devices = fleet.devices
        commit = record.get("source_commit")
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            commit = None  # a host's text never reaches git's command line unless it is a commit id
        if commit is not None:
            previous = _fleet_at(self.config, commit, base)
            devices = {mac: previous[mac] for mac in devices if mac in previous}
        wanted = {answer_path(token(device), device.mac12): mac for mac, device in devices.items()}
        found = {path: data for path, data in _fetch(base, wanted).items() if data is not None}
        missing = [mac for path, mac in wanted.items() if path not in found]
        if missing:
            why = (f"absent from the live site, which was built from commit {commit} that had it" if commit else
                   "absent from the live site, whose build.json names no source commit to tell a new device "
                   "from a lost answer")
            raise _unrecoverable(base, missing, why)
        foreign = [mac for path, mac in wanted.items() if (_json_object(found[path]) or {}).get("mac") != mac]
        if foreign:  # e.g. a host that answers every path with a page of its own
            raise _unrecoverable(base, foreign, "what the live site gives at its answer's path is not its answer")
        return list(found.items())

    def save(self) -> None:
        if self._path is None or self.check_only:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"format": STATE_FORMAT, "manifest_version": self.manifest_version, "key_id": self.key_id,
                "resign_at": format_time(self.resign_at) if self.resign_at else None,
                "answers": {p: [s.content, s.version, s.expires, s.keyid, s.sig] for p, s in self.answers.items()},
                "targets": self.targets}
        # Not sorted: sorting 100,000 devices' floors by MAC cost a build 0.14 s, and the order is
        # the fleet's own, the same from build to build.
        atomic_write(self._path, json.dumps(data, separators=(",", ":")).encode(), mode=0o600)

    @property
    def signing(self) -> bool:
        """Are this build's answers signed?"""
        return self.key is not None

    def due(self) -> bool:
        """Must the build run although no input changed? (key changed, or answers need re-signing)"""
        if self.key is None:
            return self.key_id is not None  # signing was switched off: unsigned answers replace signed ones
        if self.key_id != self.key.keyid:
            return True
        return self.resign_at is not None and self.now >= self.resign_at

    # -- the build step ------------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Check anti-rollback, then sign the plan's answers and add keys.json (in place)."""
        self.check(plan.checked)
        # The answers d/<TOKEN>/<MAC12>.json; not the clients' manifests below d/<TOKEN>/<MAC12>/, whose
        # formats are the clients' own (otapub.clients).
        paths = [path for path in plan.answers if is_answer_path(path)]
        if self.key is not None:
            self._sign(plan, paths)
            plan.answers[KEYS_FILE] = keys_document(self.key, self.previous, self.key_expires)
            plan.manifest_version = self.manifest_version
        else:
            self.answers = {}
            self.resign_at = None
        self.key_id = self.key.keyid if self.key is not None else None

    def check(self, checked: Checked, extra_floors: Mapping[str, list] | None = None) -> None:
        """The anti-rollback check: every device's target against its floor (ValidationError).

        A build without state first recovers the floors from the live site (previous_site_url);
        `otapub check` and `plan` can only when the shared secret (the answers' paths) is there.
        ``extra_floors`` (MAC -> [release, secure_version]) count where no floor is known (`plan`:
        the base's targets, all a pull request without state or secrets can know).
        """
        if self._stateless and self.previous_site_url and not self.targets and not self.answers:
            if self.config.shared_secret_key:
                found = self._recover(self._previous_answers(checked.fleet), remote=True)
                log.info("previous site %s: %d answer(s) recovered", self.previous_site_url, found)
            else:
                log.warning("previous_site_url is set but shared_secret_key is not: the live site's answers "
                            "(anti-rollback floors) cannot be read here; the build will")
        for mac, floor in (extra_floors or {}).items():
            self.targets.setdefault(mac, floor)
        self._check_rollback(checked.fleet, checked.targets, secure_versions(checked))

    def _check_rollback(self, fleet: Fleet, targets: Mapping[str, Target], secure_versions: Mapping[str, int | None]
                        ) -> None:
        """Refuse a target below a device's floor; remember the new floors.

        Only targets with a secure_version are floors (kept in ``self.targets``): a device whose
        last target had none may move anywhere.
        """
        floors = {mac: entry for mac, entry in self.targets.items() if entry[1] is not None}
        if not floors and all(secure is None for secure in secure_versions.values()):
            self.targets = {}  # nothing to check, nothing to remember (the common case without anti-rollback)
            return
        problems: list[Problem] = []
        new_floors = dict(floors)
        for mac, target in targets.items():
            release = target.release
            if release is None:
                continue  # no target: the device keeps what it runs; its last target still counts
            secure = secure_versions[release.name]
            if secure is None:
                new_floors.pop(mac, None)
            else:
                new_floors[mac] = [release.name, secure]
            before = floors.get(mac)
            if before is None or (secure is not None and secure >= before[1]):
                continue
            device = fleet.devices.get(mac)
            if release.allow_secure_version_rollback or getattr(device, "allow_secure_version_rollback", False):
                log.warning("%s: secure_version rollback %s -> %s allowed explicitly", mac, before[1], secure)
                continue
            has = "has no known secure_version" if secure is None else f"has secure_version {secure}"
            where = device.where("release") if device is not None else release.pos
            problems.append(where.problem(
                f"devices.{mac}",
                f"anti-rollback: the device's previous target {before[0]!r} has secure_version {before[1]}, "
                f"its new target {release.name!r} {has}; a device with anti-rollback refuses it (and may be "
                "left without updates). Publish a release with secure_version >= "
                f"{before[1]}, or set `allow_secure_version_rollback: true` on the release or the device"))
        if problems:
            raise ValidationError(problems)
        self.targets = new_floors

    def _resign_at(self, expires: datetime) -> datetime:
        """When an answer expiring at ``expires`` is re-signed: once less than half its lifetime remains,
        but not before the key's own expiry when the answer already reaches it (it cannot be extended)."""
        due = expires - self.lifetime / 2
        if self.key_expires is not None and expires >= self.key_expires:
            due = max(due, self.key_expires)
        return due

    def _sign(self, plan: Plan, paths: list[str]) -> None:
        assert self.key is not None
        key, now = self.key, self.now
        latest = (now + self.lifetime).replace(microsecond=0)
        if self.key_expires is not None:
            latest = min(latest, self.key_expires)
        # Kept answers may expire a little after a fresh one would (a clock behind, a shorter lifetime),
        # never after the key does.
        ceiling = now + self.lifetime * 1.5
        if self.key_expires is not None:
            ceiling = min(ceiling, self.key_expires)
        version: int | None = None
        kept: dict[str, _Signed] = {}
        resign_at: datetime | None = None
        for path in paths:
            encoder, device_id, hardware, mac = plan.signable[path]
            digest = content_digest(plan.answers[path])
            old = self.answers.get(path)
            expires = _time(old.expires) if old is not None else None
            if old is not None and expires is not None and old.content == digest and old.keyid == key.keyid \
                    and expires <= ceiling and now < self._resign_at(expires):
                # Unchanged and fresh: the same bytes again (no rewrite, no new version).
                signed = encoder.signed(device_id, hardware, mac, old.expires, old.version)
                plan.answers[path] = assemble(signed, old.keyid, old.sig)
                entry = old
            else:
                if version is None:
                    # Unix time at least: still increasing when every state is lost (a fresh CI runner).
                    version = max(self.manifest_version + 1, int(now.timestamp()))
                expires = latest
                signed = encoder.signed(device_id, hardware, mac, format_time(expires), version)
                sig = key.sign(signed).hex()
                plan.answers[path] = assemble(signed, key.keyid, sig)
                entry = _Signed(digest, version, format_time(expires), key.keyid, sig)
            kept[path] = entry
            due = self._resign_at(expires)
            resign_at = due if resign_at is None or due < resign_at else resign_at
        if version is not None:
            self.manifest_version = version
            log.info("signed %d answer(s) as manifest_version %d with key %s",
                     sum(1 for s in kept.values() if s.version == version), version, key.keyid)
        self.answers = kept
        self.resign_at = resign_at


def _fleet_at(config: Config, commit: str, base: str) -> dict[str, Device]:
    """The devices of the fleet at a commit (the one the live site was built from)."""
    try:
        with tree_at(config.root, commit) as (root, _commit):
            return load_fleet(config.with_root(root).path("fleet_dir"), root).devices
    except OtapubError as exc:
        raise OtapubError(f"previous_site_url {base}: the live site was built from commit {commit}, whose fleet "
                          f"cannot be read here ({str(exc).splitlines()[0]}); a shallow clone lacks it: check "
                          "out with full history (fetch-depth: 0). Without it the devices whose anti-rollback "
                          "floor must be recovered are unknown, so nothing was built") from None


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def _local_answers(site: Path) -> Iterator[tuple[str, bytes]]:
    for dirpath, _dirs, names in os.walk(site / "d"):
        for name in names:
            if is_temp(name) or not name.endswith(".json"):
                continue
            path = os.path.relpath(os.path.join(dirpath, name), site)
            try:
                yield path, (site / path).read_bytes()
            except OSError:
                continue


def secure_versions(checked: Checked) -> dict[str, int | None]:
    """The secure_version each targeted release's answer carries (otapub.inspection.answer_fields)."""
    versions: dict[str, int | None] = {}
    for target in checked.targets.values():
        release = target.release
        if release is not None and release.name not in versions:
            versions[release.name] = answer_fields(release, checked.images.get(release.name)).get("secure_version")
    return versions


def check_rollback(config: Config, checked: Checked, extra_floors: Mapping[str, list] | None = None) -> None:
    """The build's anti-rollback check, read-only: against the floors the next build would use
    (its state, else the site on disk, else previous_site_url), then ``extra_floors``."""
    secure = SecureBuild(config, datetime.now(timezone.utc), check_only=True)
    secure.load_state(config.path("state_dir"), config.path("site_dir"))
    secure.check(checked, extra_floors)


def floors_of(checked: Checked) -> dict[str, list]:
    """The anti-rollback floors a build of ``checked`` would leave: MAC -> [release, secure_version]."""
    versions = secure_versions(checked)
    return {mac: [t.release.name, versions[t.release.name]] for mac, t in checked.targets.items()
            if t.release is not None and versions[t.release.name] is not None}


def _unrecoverable(base: str | None, macs: list[str], why: str) -> OtapubError:
    listed = ", ".join(macs[:5]) + (f" and {len(macs) - 5} more" if len(macs) > 5 else "")
    return OtapubError(f"previous_site_url {base}: device {listed}: {why}; its anti-rollback floor cannot be "
                       "recovered, so nothing was built. Restore the build state (state_dir) or the site, "
                       "fix the live site, or unset previous_site_url for one build if you accept the risk")


def _get(base: str, path: str, token: str | None = None) -> bytes | None:
    """One file of the previously published site; None when the host says it has none (401, 403, 404)."""
    import urllib.error  # here, not at the top: every build imports this module, few fetch (13 ms)
    import urllib.request

    url = f"{base.rstrip('/')}/{path}"  # base is an http(s) URL (config kind "url")
    request = urllib.request.Request(url, headers={"X-Device-Auth": token} if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            return None
        raise OtapubError(f"previous_site_url: {exc.code} for {path}: cannot recover the previous "
                          "targets (anti-rollback) and manifest_version; retry, or unset it") from None
    except (OSError, ValueError) as exc:
        raise OtapubError(f"previous_site_url {base}: {exc}: cannot recover the previous targets "
                          "(anti-rollback) and manifest_version; retry, or unset it") from None


def _previous_record(base: str) -> dict[str, Any] | None:
    """The live site's build record: build.json on a static host, or the shim's /status (whose
    ``site`` is null before the first build). None when the host has neither: never published.

    Fails closed: a host that answers with something else (an HTML page for every path) may
    hold answers whose floors must not be dropped.
    """
    path, data = RECORD, _get(base, RECORD)
    if data is None:
        path, data = "status", _get(base, "status")
        if data is None:
            return None
    record: Any = _json_object(data)
    if path == "status":  # the shim's: {"status": "ok", "site": <build.json or null>, ...}
        record = record.get("site", ...) if record is not None else ...
        if record is None:
            return None
    if not isinstance(record, dict):
        raise OtapubError(f"previous_site_url {base}: /{path} is not otapub's build record: cannot tell which "
                          "devices the live site serves, so their anti-rollback floors cannot be recovered and "
                          "nothing was built. Point previous_site_url at the live site, or unset it for one "
                          "build if you accept the risk")
    return record


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _fetch(base: str, wanted: Mapping[str, str]) -> dict[str, bytes | None]:
    """The previously published answers at these paths (path -> MAC); None where the host has none."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        found = pool.map(lambda path: _get(base, path, path.split("/")[1]), wanted)
        return dict(zip(wanted, found, strict=True))
