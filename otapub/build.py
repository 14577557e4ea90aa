"""Render the validated fleet into the static site, safely for readers of ``site/``.

Order of operations (design.md §4, style.md): validate everything first (a failed build writes
nothing); copy firmware before any answer names it; write each file atomically and only when
its bytes changed; prune answers of removed devices afterwards; prune firmware no answer
references only after a grace period of time and at least one further build.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otapub import __version__
from otapub.clients import DEFAULT_CLIENTS, ESP32FOTA, ESPHOME, MANIFESTS, ManifestTarget, esp32fota_manifest, \
    esphome_manifest, manifest_path, manifest_problems
from otapub.config import Config
from otapub.errors import OtapubError, Problem, ValidationError
from otapub.firmware import DigestCache, Digests, digest_file, firmware_site_path
from otapub.fleet import load_fleet
from otapub.fsutil import TMP_MARK, atomic_write, exclusive_lock, is_temp, write_new
from otapub.inspection import ImageCache, ImageFacts, answer_fields, inspect_releases, release_chips
from otapub.model import Fleet, Release
from otapub.parsecache import ParseCache
from otapub.rollout import validity
from otapub.secure_build import SecureBuild
from otapub.targets import Rules, Target, compatibility_problems, resolve
from otapub.tokens import device_token
from otapub.yamlsource import fleet_files

log = logging.getLogger(__name__)

RECORD = "build.json"
PARSED_DIR = "fleet-cache"  # in state_dir: parsed fleet files (otapub.parsecache)
ANSWERS_STAGING = f"d{TMP_MARK}"  # + pid: a fresh site's answers, renamed to d/ when complete
STATE_FORMAT = 3  # 2: image inspection cache and the time span a build is valid for; 3: outputs apart
OUTPUTS_FILE = "outputs.json"  # in state_dir, beside state.json


def answer_path(token: str, mac12: str) -> str:
    return f"d/{token}/{mac12}.json"


@dataclass
class BuildResult:
    devices: int = 0
    releases: int = 0
    written: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    hashed: int = 0
    inspected: int = 0  # firmware images parsed (not answered from the cache)
    noop: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        if self.noop:
            return f"site up to date ({self.devices} devices); nothing written [{self.seconds:.2f}s]"
        return (f"{self.devices} devices, {self.releases} releases: {len(self.written)} files written, "
                f"{len(self.pruned)} pruned, {self.hashed} firmware hashed [{self.seconds:.2f}s]")


@dataclass
class Plan:
    """Everything a build would publish, in memory."""

    fleet: Fleet
    answers: dict[str, bytes]  # site path -> JSON bytes
    firmware: dict[str, Path]  # site path -> source file
    digests: dict[str, Digests]  # release name -> digests
    releases: int  # releases some device is meant to get
    release_fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # release name -> its answer fields
    images: dict[str, ImageFacts] = field(default_factory=dict)  # release name -> inspected image
    targets: dict[str, Target] = field(default_factory=dict)  # MAC -> target and the rule that gave it
    # Time-based rollout stages make the site valid for [valid_from, valid_until) only (None: unbounded).
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    # Set when the answers are signed (otapub.secure_build): the highest version issued so far.
    manifest_version: int | None = None


# `otapub check` runs in pull requests, where no secret is available (fork PRs): answers are
# then rendered in memory under this stand-in, only to validate; nothing is written.
CHECK_ONLY_SECRET = "otapub-check-without-secret"  # noqa: S105 (not a secret)


def _secret(config: Config, required: bool = True) -> str:
    secret = config.shared_secret_key
    if not required:
        return secret or CHECK_ONLY_SECRET
    if not secret:
        raise OtapubError("shared_secret_key is not set: put it in OTA_SERVER_SHARED_SECRET_KEY "
                          "(or config.json, outside git)")
    if config.placeholder_secrets() and not config.debug_mode:
        names = ", ".join(config.placeholder_secrets())
        raise OtapubError(f"{names} still holds the seed's published placeholder value: set a real secret "
                          "(or debug_mode for local experiments)")
    return secret


def verify_firmware(fleet: Fleet, cache: DigestCache) -> dict[str, Digests]:
    """Check every release's firmware against its declared checksums; raise on any mismatch."""
    problems: list[Problem] = []
    digests: dict[str, Digests] = {}
    for release in fleet.releases.values():
        if release.url is not None:
            if release.md5 and release.sha256 and release.size:
                digests[release.name] = Digests(release.md5, release.sha256, release.size)
            continue
        if release.file is None:
            continue
        where = release.where("file")
        if not release.file.is_file():
            problems.append(where.problem(f"releases.{release.name}.file",
                                          f"firmware file {release.file_text!r} not found"))
            continue
        found = cache.get(release.file)
        if found.size == 0:
            problems.append(where.problem(f"releases.{release.name}.file", "firmware file is empty"))
        for name in ("md5", "sha256", "size"):
            declared = getattr(release, name)
            actual = getattr(found, name)
            if declared is not None and declared != actual:
                problems.append(release.where(name).problem(
                    f"releases.{release.name}.{name}",
                    f"checksum mismatch for {release.file_text}: declared {declared}, file has {actual}"))
        digests[release.name] = found
    if problems:
        raise ValidationError(problems)
    return digests


def render(config: Config, fleet: Fleet, digests: dict[str, Digests], targets: dict[str, Release | None],
           require_secret: bool = True, images: dict[str, ImageFacts] | None = None) -> Plan:
    secret = _secret(config, require_secret)
    base = config.base_url or ""
    default_scheme = config.token_scheme
    answers: dict[str, bytes] = {}
    firmware: dict[str, Path] = {}
    urls: dict[str, dict[str, Any]] = {}
    for release in {r.name: r for r in targets.values() if r is not None}.values():
        d = digests[release.name]
        if release.url is not None:
            url = release.url
        else:
            path = firmware_site_path(d.sha256, release.file.name)
            firmware[path] = release.file
            url = f"{base}/{path}"
        fields: dict[str, Any] = {
            "release": release.name, "firmware_version": release.version, "firmware_url": url,
            "checksum": d.md5, "md5": d.md5, "sha256": d.sha256, "size": d.size,
        }
        if release.hardware is not None:
            fields["release_hardware"] = list(release.hardware)
        fields.update(answer_fields(release, (images or {}).get(release.name)))
        urls[release.name] = fields
    problems: list[Problem] = []
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    encoders: dict[tuple[str | None, bool, tuple[str, ...]], Callable[[Any, Any, Any], bytes]] = {}
    for mac, device in fleet.devices.items():
        token = device_token(device.mac12, secret, device.token_scheme or default_scheme)
        path = answer_path(token, device.mac12)
        if path in answers:  # cannot happen with distinct MACs; refuse rather than overwrite
            problems.append(device.pos.problem(f"devices.{mac}", f"answer path collision at {path}"))
            continue
        release = targets.get(mac)
        # allow_downgrade: the shim then offers the release below the reported version too
        kind = (release.name if release is not None else None,
                 release is not None and (release.allow_downgrade or device.allow_downgrade), device.clients)
        encode = encoders.get(kind)
        if encode is None:
            fields = dict(urls[release.name]) if release is not None else {"release": None}
            if kind[1]:
                fields["allow_downgrade"] = True
            if device.clients != DEFAULT_CLIENTS:  # the shim answers only the protocols a device declares
                fields["clients"] = list(device.clients)
            encode = encoders[kind] = _answer_encoder(fields, dumps)
        answers[path] = encode(device.device_id, device.hardware, mac)
        if device.clients != DEFAULT_CLIENTS:
            problems += _client_manifests(device, token, release, urls, answers)
    if problems:
        raise ValidationError(problems)
    return Plan(fleet, answers, firmware, digests, len(urls), release_fields=urls)


def _client_manifests(device: Any, token: str, release: Release | None, urls: dict[str, dict[str, Any]],
                      answers: dict[str, bytes]) -> list[Problem]:
    """The static manifests of a device's clients (otapub.clients) into ``answers``; problems when
    a client cannot be given the device's target."""
    target = None
    if release is not None:
        fields = urls[release.name]
        target = ManifestTarget(release.name, release.version, fields["firmware_url"], fields["md5"], fields["sha256"],
                                fields["size"], fields.get("chip"), release.release_url)
    why = manifest_problems(device.clients, device.firmware_type, target, release is not None and release.file is not None)
    if why:
        where = device.where("client") if "client" in device.field_pos else device.pos
        return [where.problem(f"devices.{device.mac}.client", "; ".join(why)
                              + (f" (client from group {device.client_from!r})" if device.client_from else ""))]
    for client in device.clients:
        if client not in MANIFESTS:
            continue
        if client == ESP32FOTA:
            data = esp32fota_manifest(device.firmware_type or "", target)
        else:
            assert client == ESPHOME  # noqa: S101 (MANIFESTS has two clients)
            data = esphome_manifest(device.device_id or (release.name if release else device.mac12), target)
        answers[manifest_path(token, device.mac12, client)] = data
    return []


_DEVICE_FIELDS = ("device_id", "hardware", "mac")  # an answer's own fields, in key order


def _answer_encoder(fields: dict[str, Any], dumps: Callable[[Any], str]) -> Callable[[Any, Any, Any], bytes]:
    """``dumps({device_id, hardware, mac, **fields}).encode()`` as a function of the device's fields.

    ``dumps`` sorts keys and separates without spaces, so an answer is a fixed sequence of
    ``"key":value`` items: the release's are encoded once here, and each device costs three
    string encodings and a join instead of a JSON encoding of the whole answer.
    """
    pieces: list[str] = []  # the text before each device field's value, then the closing text
    text = "{"
    for index, key in enumerate(sorted([*fields, *_DEVICE_FIELDS])):
        text += "," if index else ""
        if key in _DEVICE_FIELDS:
            pieces.append(text + dumps(key) + ":")
            text = ""
        else:
            text += f"{dumps(key)}:{dumps(fields[key])}"
    first, second, third = pieces
    last = text + "}"
    string = json.encoder.encode_basestring  # what dumps does with a str (ensure_ascii=False), minus its checks

    def encode(device_id: Any, hardware: Any, mac: str) -> bytes:
        return "".join((first, string(device_id) if type(device_id) is str else dumps(device_id),
                        second, string(hardware) if type(hardware) is str else dumps(hardware),
                        third, string(mac), last)).encode("utf-8")

    return encode


class _State:
    """What the last build wrote (in state_dir, never published: it names token paths).

    The digest of every published file goes to a file of its own, read only when a build
    publishes: a no-op build need not parse 100,000 entries.
    """

    def __init__(self, path: Path):
        self.path = path
        self.outputs_path = path.with_name(OUTPUTS_FILE)
        data: dict[str, Any] = {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if data.get("format") != STATE_FORMAT:
            data = {}
        self.fingerprint: str | None = data.get("fingerprint")
        self.digests: dict[str, list] = data.get("digests", {})
        self.answers: int = data.get("answers", 0)  # answers (d/...) among the outputs
        self.firmware: dict[str, list | None] = data.get("firmware", {})
        self.sequence: int = data.get("sequence", 0)
        self.record: str | None = data.get("record")
        self.inputs: list[str] = data.get("inputs", [])
        self.images: dict[str, list] = data.get("images", {})
        self.valid_from: str | None = data.get("valid_from")
        self.valid_until: str | None = data.get("valid_until")
        self._outputs: dict[str, str] | None = None
        self._outputs_read = not data  # no state: no outputs either

    @property
    def outputs(self) -> dict[str, str] | None:
        """Site path -> digest of every file the last build published (None: not known)."""
        if not self._outputs_read:
            self._outputs_read = True
            try:
                data = json.loads(self.outputs_path.read_bytes())
            except (OSError, ValueError):
                data = None
            # Written just before state.json: from another build (a crash in between), it is not used.
            if isinstance(data, dict) and data.get("sequence") == self.sequence:
                self._outputs = data.get("outputs")
        return self._outputs

    @outputs.setter
    def outputs(self, value: dict[str, str]) -> None:
        self._outputs, self._outputs_read = value, True
        self.answers = sum(1 for path in value if path.startswith("d/"))

    def valid_at(self, now: datetime) -> bool:
        """Is ``now`` inside the span the last build's rollout stages hold for?"""
        try:
            start = datetime.fromisoformat(self.valid_from) if self.valid_from else None
            until = datetime.fromisoformat(self.valid_until) if self.valid_until else None
        except ValueError:
            return False
        return (start is None or start <= now) and (until is None or now < until)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.outputs_path, json.dumps({"sequence": self.sequence, "outputs": self.outputs},
                                                   separators=(",", ":")).encode(), mode=0o600)
        data = {"format": STATE_FORMAT, "fingerprint": self.fingerprint, "digests": self.digests,
                "answers": self.answers, "firmware": self.firmware, "sequence": self.sequence,
                "record": self.record, "inputs": self.inputs, "images": self.images,
                "valid_from": self.valid_from, "valid_until": self.valid_until}
        atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode(), mode=0o600)


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _fingerprint(config: Config, files: list[Path], inputs: list[str]) -> str:
    secret = (config.shared_secret_key or "").encode()
    parts: list[Any] = [__version__, config.public(), hashlib.sha256(b"otapub-fingerprint:" + secret).hexdigest()]
    for path in [*files, *map(Path, inputs)]:
        try:
            stat = path.stat()
            parts.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            parts.append([str(path), None])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _git_commit(root: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _scan(site: Path) -> tuple[dict[str, str], list[str]]:
    """Existing answers and firmware of a site we have no state for (state dir lost)."""
    answers: dict[str, str] = {}
    firmware: list[str] = []
    for top in ("d", "f"):
        for dirpath, _dirs, names in os.walk(site / top):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), site)
                if is_temp(name):
                    continue
                if top == "d":
                    answers[rel] = ""  # unknown digest: compared by content
                else:
                    firmware.append(rel)
    return answers, firmware


def plan_site(config: Config, now: datetime | None = None, cache: DigestCache | None = None,
              require_secret: bool = True, images: ImageCache | None = None, fleet: Fleet | None = None) -> Plan:
    """Load, validate, verify, inspect and render the fleet; write nothing.

    Without ``require_secret`` (``otapub check``) a missing secret does not stop validation.
    ``fleet``: validate this one instead of loading it (an edit checked before it is written).
    """
    now = now or datetime.now(timezone.utc)
    fleet = fleet if fleet is not None else load_fleet(config.path("fleet_dir"), config.root)
    problems: list[Problem] = []
    try:
        digests = verify_firmware(fleet, cache or DigestCache())
    except ValidationError as exc:
        digests, problems = {}, list(exc.problems)
    facts, image_problems = inspect_releases(fleet, images or ImageCache(), digests)
    rules = Rules(fleet, now, release_chips(fleet, facts))
    problems += image_problems + compatibility_problems(rules)
    if problems:
        raise ValidationError(problems)
    targets = resolve(rules)
    plan = render(config, fleet, digests, {mac: t.release for mac, t in targets.items()}, require_secret, facts)
    plan.images, plan.targets = facts, targets
    plan.valid_from, plan.valid_until = validity(fleet.rollouts.values(), now)
    return plan


def build_site(config: Config, now: datetime | None = None, force: bool = False) -> BuildResult:
    """Build the site; a no-op when no input changed since the last build."""
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    site = config.path("site_dir")
    state_dir = config.path("state_dir")
    if site.is_relative_to(config.path("fleet_dir")) or config.path("fleet_dir").is_relative_to(site):
        raise OtapubError(f"site_dir {site} and fleet_dir must not contain each other")
    _secret(config)
    secure = SecureBuild(config, now)  # loads the signing key: a bad key fails before anything else
    with exclusive_lock(state_dir / "build.lock"), _cycle_collector_paused():
        # The build's data dies when _build_locked returns, before the collector runs again:
        # its first collection then has next to nothing to walk (0.18 s less at 100,000 devices).
        result = _build_locked(config, site, state_dir, secure, now, force)
    result.seconds = time.monotonic() - started
    log.debug("build: %s", result.summary())
    return result


def _build_locked(config: Config, site: Path, state_dir: Path, secure: SecureBuild, now: datetime,
                  force: bool) -> BuildResult:
    """build_site's work, under the build lock: the no-op check, then load, plan, publish, save."""
    state = _State(state_dir / "state.json")
    secure.load_state(state_dir, site)
    files = fleet_files(config.path("fleet_dir")) if config.path("fleet_dir").is_dir() else []
    fingerprint = _fingerprint(config, files, state.inputs)
    record_path = site / RECORD
    # The site is as the last build left it: its record is, and so is d/ when it had answers
    # (a wiped d/ is written anew; `build --force` compares every file).
    record_ok = state.record is not None and record_path.is_file() and \
        _hash(record_path.read_bytes()) == state.record and \
        ((site / "d").is_dir() or not state.answers)
    if not force and record_ok and fingerprint == state.fingerprint and state.valid_at(now) \
            and not secure.due():
        return BuildResult(noop=True, devices=json.loads(record_path.read_bytes()).get("devices", 0))
    cache = DigestCache(state.digests)
    images = ImageCache(state.images)
    parsed = ParseCache(state_dir / PARSED_DIR)
    fleet = load_fleet(config.path("fleet_dir"), config.root, read=parsed.read)
    parsed.prune()
    plan = plan_site(config, now, cache, images=images, fleet=fleet)
    secure.apply(plan)  # anti-rollback check; signatures, expiry, manifest_version, keys.json
    result = _publish(config, site, plan, state, record_ok and not force)
    secure.save()
    result.hashed = len(cache.hashed)
    result.inspected = len(images.inspected)
    state.digests = {k: v for k, v in cache.entries.items() if Path(k).exists()}
    state.images = {k: v for k, v in images.entries.items() if k in state.digests}
    state.valid_from, state.valid_until = (t.isoformat() if t else None for t in (plan.valid_from,
                                                                                plan.valid_until))
    state.inputs = sorted({str(r.file) for r in plan.fleet.releases.values() if r.file is not None})
    state.fingerprint = _fingerprint(config, files, state.inputs)
    state.save()
    return result


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector during a build; reference counting frees memory as usual.

    A build holds a growing heap (1.2 million objects in the parsed documents of 100,000 devices)
    and every collection of the oldest generation walks all of it: the collector ran dozens of
    times, took close to a third of a full build and found next to nothing (a build leaves no
    cycles behind: PyYAML's loaders are disposed).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _publish(config: Config, site: Path, plan: Plan, state: _State, trust_state: bool) -> BuildResult:
    result = BuildResult(devices=len(plan.fleet.devices), releases=plan.releases)
    site.mkdir(parents=True, exist_ok=True)
    if trust_state and state.outputs is not None:
        previous = dict(state.outputs)
        known_firmware = dict(state.firmware)
    else:
        previous, found = _scan(site)
        known_firmware = {path: state.firmware.get(path) for path in found}
    # 1. Firmware first: no answer may name a file that is not there yet.
    for path, source in plan.firmware.items():
        target = site / path
        if not target.is_file():
            _copy_verified(source, target, path.split("/")[1])
            result.written.append(path)
        known_firmware[path] = None
    # 2. Answers, only when their bytes changed. String paths relative to the site folder and raw
    #    os calls: this loop runs once per device, and pathlib's joins, mkdir(parents=True) and
    #    the kernel's walk of the whole path each time cost more than the writes.
    #    A site without d/ (the first build, or d/ removed) gets its answers in a new tree that
    #    is renamed to d/ when complete: no reader can see it before, so each answer is written
    #    in place, without a temporary file and a rename of its own (100,000 renames fewer).
    outputs: dict[str, str] = {}
    made_dirs: set[str] = set()
    root = os.fspath(site)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _remove_staging(root)
        staging = None if os.path.lexists(f"{root}/d") else f"{ANSWERS_STAGING}{os.getpid()}"
        if staging is not None:
            os.mkdir(staging, dir_fd=root_fd)
            previous = {path: digest for path, digest in previous.items() if not path.startswith("d/")}
        for path, data in plan.answers.items():
            digest = _hash(data)
            outputs[path] = digest
            old = previous.get(path)
            if old == digest:
                continue
            if old == "" and _same_bytes(f"{root}/{path}", data):
                continue
            parent = path.rpartition("/")[0]  # "" for a top-level file (keys.json)
            if staging is not None and parent.startswith("d/"):
                if parent not in made_dirs:
                    os.mkdir(staging + parent[1:], dir_fd=root_fd)
                    made_dirs.add(parent)
                write_new(staging + path[1:], data, dir_fd=root_fd)
            else:
                if parent not in made_dirs:
                    _make_dir(root, parent, root_fd)
                    made_dirs.add(parent)
                atomic_write(path, data, dir_fd=root_fd)
            result.written.append(path)
        if staging is not None:
            os.rename(staging, "d", src_dir_fd=root_fd, dst_dir_fd=root_fd)
    finally:
        os.close(root_fd)
    # 3. Prune answers of devices that are gone (after the new ones are in place).
    for path in previous.keys() - outputs.keys():
        _remove(site, path)
        result.pruned.append(path)
    # 4. Firmware no answer references: keep for a grace period and at least one more build.
    state.sequence += 1
    now = time.time()
    grace = config.firmware_grace_seconds
    for path, since in list(known_firmware.items()):
        if path in plan.firmware:
            continue
        if since is None:
            known_firmware[path] = [state.sequence, now]
        elif state.sequence > since[0] and now - since[1] >= grace:
            _remove(site, path)
            result.pruned.append(path)
            del known_firmware[path]
    # 5. The build record last, and only when something changed.
    changed = bool(result.written or result.pruned) or not (site / RECORD).is_file()
    if changed:
        record = {"generator": f"otapub {__version__}", "source_commit": _git_commit(config.root),
                  "changed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "devices": result.devices, "releases": plan.releases,
                  "firmware_files": len(plan.firmware)}
        if plan.manifest_version is not None:
            record["manifest_version"] = plan.manifest_version
        data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(site / RECORD, data)
        result.written.append(RECORD)
        state.record = _hash(data)
    state.outputs = outputs
    state.firmware = known_firmware
    return result


def _remove_staging(root: str) -> None:
    """Remove answer trees a crashed build left unfinished (builds hold the lock: none is running)."""
    for name in os.listdir(root):
        if name.startswith(ANSWERS_STAGING):
            shutil.rmtree(f"{root}/{name}", ignore_errors=True)


def _same_bytes(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read() == data
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def _make_dir(root: str, path: str, root_fd: int) -> None:
    """Create an answer directory: one mkdir for the usual d/<TOKEN> whose parent d/ exists."""
    if not path:
        return  # the site folder itself
    try:
        os.mkdir(path, dir_fd=root_fd)
    except FileExistsError:
        pass
    except FileNotFoundError:  # d/ itself is missing (the first answer of a fresh site)
        os.makedirs(f"{root}/{path}", exist_ok=True)


def _copy_verified(source: Path, target: Path, sha256: str) -> None:
    """Copy firmware into the site, checking the copy is the bytes that were verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        if digest_file(tmp).sha256 != sha256:
            raise OtapubError(f"{source}: changed while the site was being built; build again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove(site: Path, path: str) -> None:
    target = site / path
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    parent = target.parent
    while parent != site:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
