"""Fleet administration: add, update and delete devices by editing the fleet YAML.

In a GitOps tool every change is a change to the YAML (reviewable, revertible, in git),
never a hidden database. An edit is planned against the validated fleet, spliced into the
text of the files it touches (otapub.yamledit: untouched entries stay byte-identical),
validated in memory exactly like ``otapub check``, and only then written: atomically, and
under a lock, so that concurrent editors (CLI, admin API workers) lose nothing. A failing
edit changes no file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from otapub.check import check_site
from otapub.chips import known_chip
from otapub.config import Config
from otapub.errors import OtapubError
from otapub.firmware import DigestCache, Digests, digest_file
from otapub.fleet import load_fleet, load_fleet_texts
from otapub.fsutil import TMP_MARK, atomic_write, exclusive_lock
from otapub.mac import mac12, normalize_mac
from otapub.model import Device, Fleet
from otapub.tokens import SCHEMES
from otapub.versions import parse_version
from otapub.yamledit import REMOVE, Document, EditError, Entry, Quoted, scalar

KEEP: Any = type("Keep", (), {"__repr__": lambda self: "KEEP"})()  # "leave this field as it is"
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
# The device fields an edit writes, in the order a new entry lists them.
DEVICE_FIELDS = ("device_id", "hardware", "release", "target_version", "token_scheme", "channel", "chip")
# A release pin is one of these two fields; writing one removes the other, in its place.
_SWAP = {"release": "target_version", "target_version": "release"}
LOCK_NAME = "edit.lock"
DIGESTS_NAME = "edit-digests.json"

__all__ = ["KEEP", "DeviceExists", "DeviceNotFound", "EditError", "NoRelease", "EditResult", "FleetEdit", "Target",
           "add_device", "delete_device", "edit_fleet", "parse_mac", "update_device"]


class DeviceNotFound(OtapubError):
    pass


class DeviceExists(OtapubError):
    pass


class NoRelease(OtapubError):
    """No release matches a firmware URL (and no file of that name is in the firmware directory)."""


def parse_mac(text: Any) -> str:
    """AA:BB:CC:DD:EE:FF from any common spelling; OtapubError otherwise."""
    try:
        return normalize_mac(text)
    except ValueError as exc:
        raise OtapubError(str(exc)) from None


@dataclass
class Target:
    """Which firmware a device should run, in any of the ways the seed or an operator says it.

    ``release`` names one; ``firmware_file`` finds or creates the release for a file (copied
    into the firmware directory when outside it); ``firmware_url`` finds the release served
    at that URL (or whose file has that name); ``version`` alone pins like ``target_version``.
    A given ``checksum`` must be the MD5 of the release it resolves to.
    """

    release: str | None = None
    version: str | None = None
    firmware_file: Path | None = None
    firmware_url: str | None = None
    checksum: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.release, self.version, self.firmware_file, self.firmware_url,
                                           self.checksum))


@dataclass
class EditResult:
    fleet: Fleet  # the validated fleet after the edit
    digests: dict[str, Digests]
    written: list[Path] = field(default_factory=list)  # fleet files rewritten
    firmware: list[Path] = field(default_factory=list)  # firmware copied into the repository
    releases: list[str] = field(default_factory=list)  # releases created
    macs: list[str] = field(default_factory=list)  # devices added, updated or deleted

    @property
    def changed(self) -> bool:
        return bool(self.written or self.firmware)


@dataclass
class _Rel:
    """A release as far as matching goes: existing (from the model) or about to be created."""

    name: str
    version: str
    file: Path | None
    url: str | None


class FleetEdit:
    """One transaction of fleet edits; use through :func:`edit_fleet`, which holds the lock."""

    def __init__(self, config: Config):
        self.config = config
        self.root = config.root
        self.fleet_dir = config.path("fleet_dir")
        self.fleet = load_fleet(self.fleet_dir, self.root) if self.fleet_dir.is_dir() else Fleet({}, {}, [])
        self.cache = digest_cache(config)
        self._docs: dict[Path, Document] = {}
        self._updates: dict[str, dict[str, Any]] = {}  # existing device -> field changes
        self._deletes: set[str] = set()
        self._added: dict[str, dict[str, Any]] = {}  # new device -> fields
        self._new_releases: dict[str, dict[str, Any]] = {}
        self._copies: dict[Path, Path] = {}  # destination -> source
        self._checksums: dict[str, tuple[str, str]] = {}  # mac -> (md5, what was asked)
        self._expected: dict[str, dict[str, Any] | None] = {}

    # -- queries -------------------------------------------------------------------------
    def device(self, mac: str) -> Device | None:
        return self.fleet.devices.get(parse_mac(mac))

    def exists(self, mac: str) -> bool:
        mac = parse_mac(mac)
        return mac not in self._deletes and (mac in self.fleet.devices or mac in self._added)

    def _written_fields(self, mac: str) -> dict[str, Any]:
        """A device's fields as the YAML holds them now (plus changes queued in this edit)."""
        if mac in self._added:
            return dict(self._added[mac])
        fields = _device_fields(self.fleet.devices[mac])
        for name, value in self._updates.get(mac, {}).items():
            fields[name] = None if value is REMOVE else value
        return {k: v for k, v in fields.items() if v is not None}

    # -- device edits --------------------------------------------------------------------
    def add(self, mac: str, *, device_id: str | None = None, hardware: str | None = None,
            target: Target | None = None, token_scheme: str | None = None, channel: str | None = None,
            chip: str | None = None) -> str:
        mac = parse_mac(mac)
        if self.exists(mac):
            raise DeviceExists(f"device {mac} already exists{self._where(mac)}")
        if mac in self.fleet.devices:  # deleted earlier in this edit: its entry is still in the text
            raise OtapubError(f"device {mac} was deleted in this edit: update it instead of adding it again")
        fields = {"device_id": _text(device_id, "device_id"), "hardware": _text(hardware, "hardware"),
                  "token_scheme": _scheme(token_scheme), "channel": _text(channel, "channel"), "chip": _chip(chip)}
        fields.update(self._target_fields(mac, target))
        self._added[mac] = {k: v for k, v in fields.items() if v is not None}
        self._expected[mac] = dict(self._added[mac])
        return mac

    def update(self, mac: str, *, device_id: str | None = KEEP, hardware: str | None = KEEP,
               target: Target | None = None, unpin: bool = False, token_scheme: str | None = KEEP,
               channel: str | None = KEEP, chip: str | None = KEEP) -> str:
        """Change fields of a device; KEEP leaves a field alone, None removes it.

        ``unpin`` removes the device's release pin (it then gets no update).
        """
        mac = parse_mac(mac)
        if not self.exists(mac):
            raise DeviceNotFound(f"no device {mac} in the fleet")
        wanted: dict[str, Any] = {}
        if device_id is not KEEP:
            wanted["device_id"] = _text(device_id, "device_id")
        if hardware is not KEEP:
            wanted["hardware"] = _text(hardware, "hardware")
        if token_scheme is not KEEP:
            wanted["token_scheme"] = _scheme(token_scheme)
        if channel is not KEEP:
            wanted["channel"] = _text(channel, "channel")
        if chip is not KEEP:
            wanted["chip"] = _chip(chip)
        if unpin:
            wanted.update(release=None, target_version=None)
        if target:
            wanted.update(self._target_fields(mac, target))
        current = self._written_fields(mac)
        if mac in self._added:
            merged = {**current, **wanted}
            self._added[mac] = {k: v for k, v in merged.items() if v is not None}
        else:
            changes = self._updates.setdefault(mac, {})
            for name, value in wanted.items():
                if current.get(name) != value:
                    changes[name] = REMOVE if value is None else value
        self._expected[mac] = {k: v for k, v in {**current, **wanted}.items() if v is not None}
        return mac

    def delete(self, mac: str) -> str:
        mac = parse_mac(mac)
        if not self.exists(mac):
            raise DeviceNotFound(f"no device {mac} in the fleet")
        if mac in self._added:
            del self._added[mac]
        else:
            self._updates.pop(mac, None)
            self._deletes.add(mac)
        self._checksums.pop(mac, None)
        self._expected[mac] = None
        return mac

    def changes(self, mac: str) -> dict[str, Any]:
        """Field changes queued for an existing device (empty: nothing to write)."""
        return dict(self._updates.get(parse_mac(mac), {}))

    def _where(self, mac: str) -> str:
        device = self.fleet.devices.get(mac)
        return f" ({device.pos.file}:{device.pos.line})" if device is not None else ""

    # -- resolving a target to a release -------------------------------------------------
    def _target_fields(self, mac: str, target: Target | None) -> dict[str, Any]:
        if not target:
            return {}
        version = target.version
        if version is not None:
            version = _text(version, "version")
            try:
                parse_version(version)
            except ValueError as exc:
                raise OtapubError(f"version: {exc}") from None
        if target.checksum is not None:
            if not isinstance(target.checksum, str) or not _MD5.fullmatch(target.checksum):
                raise OtapubError(f"checksum: expected 32 hex digits (the MD5), found {target.checksum!r}")
        name = None
        if target.release is not None:
            name = _text(target.release, "release")
            release = self._releases().get(name)
            if release is None:
                raise OtapubError(f"release: unknown release {name!r}")
            if version is not None and parse_version(release.version) != parse_version(version):
                raise OtapubError(f"release {name!r} has version {release.version}, not {version}")
        if target.firmware_url is not None:
            found = self._release_for_url(_text(target.firmware_url, "firmware_url"), version)
            if name is not None and found != name:
                raise OtapubError(f"firmware_url {target.firmware_url!r} is release {found!r}, not {name!r}")
            name = found
        if target.firmware_file is not None:
            found = self.file_release(Path(target.firmware_file), version)
            if name is not None and found != name:
                raise OtapubError(f"{target.firmware_file} is release {found!r}, not {name!r}")
            name = found
        if target.checksum is not None:  # compared with the release's MD5 once the edit validates
            self._checksums[mac] = (target.checksum.lower(), "checksum")
        if name is not None:
            return {"release": name, "target_version": None}
        if version is not None:
            return {"target_version": Quoted(version), "release": None}
        return {}

    def _releases(self) -> dict[str, _Rel]:
        found = {r.name: _Rel(r.name, r.version, r.file, r.url) for r in self.fleet.releases.values()}
        for name, fields in self._new_releases.items():
            found[name] = _Rel(name, fields["version"], (self.root / fields["file"]).resolve(), None)
        return found

    def _release_for_url(self, url: str, version: str | None) -> str:
        def fits(r: _Rel) -> bool:
            return version is None or parse_version(r.version) == parse_version(version)

        releases = [r for r in self._releases().values() if fits(r)]
        by_url = [r.name for r in releases if r.url == url]
        base = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        by_name = [r.name for r in releases if r.file is not None and r.file.name == base]
        for names in (by_url, by_name):
            if len(names) == 1:
                return names[0]
            if names:
                raise OtapubError(f"firmware_url {url!r} matches releases {', '.join(sorted(names))}: "
                                  "name one with `release`")
        local = self.config.path("firmware_directory") / base if base else None
        if local is not None and local.is_file():
            return self.file_release(local, version)
        raise NoRelease(f"no release serves firmware_url {url!r}"
                          + (f" and {base!r} is not in the firmware directory" if base else "")
                          + (f" (version {version})" if version else ""))

    def file_release(self, path: Path, version: str | None) -> str:
        """The release for a firmware file and version: an existing one, or a new one.

        A file outside the firmware directory is copied into it (never over a different file).
        """
        source = path.expanduser().resolve()
        if not source.is_file():
            raise OtapubError(f"{path}: firmware file not found")
        if source.stat().st_size == 0:
            raise OtapubError(f"{path}: firmware file is empty")
        firmware_dir = self.config.path("firmware_directory")
        if not firmware_dir.is_relative_to(self.root):
            raise OtapubError(f"firmware_directory {firmware_dir} is outside the repository ({self.root}): "
                              "release files must be in the repository")
        if source.is_relative_to(firmware_dir):
            dest = source
        else:
            dest = firmware_dir / source.name
            if dest.exists() or dest in self._copies:
                other = self._copies.get(dest, dest)
                if not other.is_file() or digest_file(other).sha256 != digest_file(source).sha256:
                    inside = repo_path(firmware_dir, self.root)
                    raise OtapubError(f"{repo_path(dest, self.root)} already exists with different content: "
                                      f"rename {source.name} or give a file inside {inside}")
            else:
                self._copies[dest] = source
        same_file = [r for r in self._releases().values() if r.file == dest]
        if version is None:
            if len(same_file) == 1:
                return same_file[0].name
            if same_file:
                names = ", ".join(sorted(r.name for r in same_file))
                raise OtapubError(f"{path}: releases {names} use this file: give --version (or --release)")
            version = _image_version(source)
            if version is None:
                raise OtapubError(f"{path}: no release uses this file yet and its image names no version: "
                                  "give --version to create one")
        for release in sorted(same_file, key=lambda r: r.name):
            if parse_version(release.version) == parse_version(version):
                return release.name
        digests = digest_file(source)
        name = self._release_name(dest, version)
        self._new_releases[name] = {"version": Quoted(version), "file": repo_path(dest, self.root),
                                    "md5": Quoted(digests.md5), "sha256": Quoted(digests.sha256)}
        return name

    def _release_name(self, dest: Path, version: str) -> str:
        stem = _NAME_CHARS.sub("-", dest.stem).strip("-._+") or "firmware"
        taken = self._releases()
        for name in (stem, f"{stem}-{version}"):
            if name not in taken:
                return name
        raise OtapubError(f"releases {stem!r} and {stem}-{version!r} already exist: name the release yourself "
                          "in the YAML, then use --release")

    # -- planning the text ---------------------------------------------------------------
    def _doc(self, path: Path) -> Document:
        if path not in self._docs:
            try:
                data = path.read_bytes() if path.exists() else b""
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise OtapubError(f"{repo_path(path, self.root)}: cannot read: {exc}") from None
            self._docs[path] = Document(text, repo_path(path, self.root))
        return self._docs[path]

    def _file_of(self, mac: str) -> Path:
        pos_file = Path(self.fleet.devices[mac].pos.file)
        return pos_file if pos_file.is_absolute() else (self.root / pos_file).resolve()

    def _entry(self, doc: Document, mac: str) -> Entry:
        digits = mac12(mac)
        for entry in doc.entries("devices"):
            try:
                if mac12(str(entry.name)) == digits:
                    return entry
            except ValueError:
                continue
        raise OtapubError(f"{doc.name}: device {mac} not found where the fleet says it is")  # changed meanwhile

    def _default_file(self) -> Path:
        path = self.config.path("default_device_file")
        if not path.is_relative_to(self.fleet_dir) or path.suffix not in (".yaml", ".yml"):
            raise OtapubError(f"default_device_file {path} must be a .yaml file inside fleet_dir ({self.fleet_dir})")
        return path

    def _release_file(self) -> Path:
        counts: dict[str, int] = {}
        for release in self.fleet.releases.values():
            counts[release.pos.file] = counts.get(release.pos.file, 0) + 1
        if not counts:
            return self._default_file()
        most = max(sorted(counts), key=lambda f: counts[f])
        return (self.root / most).resolve() if not Path(most).is_absolute() else Path(most)

    def plan(self) -> dict[Path, str]:
        """The new text of every fleet file this edit changes."""
        for mac, changes in self._updates.items():
            if changes:
                doc = self._doc(self._file_of(mac))
                doc.update_entry(self._entry(doc, mac), changes, _SWAP)
        for mac in sorted(self._deletes):
            doc = self._doc(self._file_of(mac))
            doc.delete_entry(self._entry(doc, mac))
        if self._added:
            doc = self._doc(self._default_file())
            doc.append_entries("devices", [(json.dumps(mac), _ordered(f)) for mac, f in self._added.items()])
        if self._new_releases:  # after the devices: both may be appended at the end of one file
            doc = self._doc(self._release_file())
            doc.append_entries("releases", [(scalar(n), f) for n, f in self._new_releases.items()])
        texts = {}
        for path, doc in self._docs.items():
            text = doc.result()
            if text != doc.text:
                texts[path] = text
        return texts

    # -- commit --------------------------------------------------------------------------
    def commit(self, now: datetime | None = None) -> EditResult:
        """Validate the edited fleet like `otapub check`; write it only when it is valid."""
        texts = self.plan()
        copied: list[Path] = []
        written: dict[Path, bytes | None] = {}
        try:
            for dest, source in self._copies.items():
                _copy(source, dest)
                copied.append(dest)
            fleet = load_fleet_texts(self.fleet_dir, self.root, texts) if texts or copied else self.fleet
            # Exactly what `otapub check` does, on the edited fleet.
            digests = check_site(self.config, now, self.cache, fleet=fleet).digests
            self._check_result(fleet, digests)
            # Releases before the devices that use them: a reader never sees a dangling pin.
            release_file = self._release_file() if self._new_releases else None
            for path in sorted(texts, key=lambda p: p != release_file):
                written[path] = path.read_bytes() if path.exists() else None
                _write(path, texts[path].encode("utf-8"))
        except BaseException:
            for path, old in written.items():  # best effort: a write failed half-way
                with contextlib.suppress(OSError):
                    if old is None:
                        path.unlink()
                    else:
                        _write(path, old)
            for dest in copied:
                with contextlib.suppress(OSError):
                    dest.unlink()
            raise
        self._save_cache()
        return EditResult(fleet=fleet, digests=digests, written=list(written), firmware=copied,
                          releases=list(self._new_releases), macs=sorted(self._expected))

    def _check_result(self, fleet: Fleet, digests: dict[str, Digests]) -> None:
        for mac, expected in self._expected.items():
            device = fleet.devices.get(mac)
            if expected is None:
                if device is not None:
                    raise OtapubError(f"internal error: device {mac} still in the fleet after deleting it")
                continue
            if device is None:
                raise OtapubError(f"internal error: device {mac} missing after the edit")
            got = _device_fields(device)
            if {k: v for k, v in got.items() if v is not None} != expected:
                raise OtapubError(f"internal error: device {mac} reads back as {got}, expected {expected}")
        for mac, (md5, what) in self._checksums.items():
            device = fleet.devices.get(mac)
            release = fleet.releases.get(device.release) if device and device.release else None
            if release is None:
                raise OtapubError(f"{what}: device {mac} has no release to compare the checksum with")
            actual = digests[release.name].md5 if release.name in digests else release.md5
            if actual != md5:
                raise OtapubError(f"{what}: {md5} is not the MD5 of release {release.name!r} ({actual})")

    def _save_cache(self) -> None:
        state = self.config.path("state_dir")
        with contextlib.suppress(OSError):
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            entries = {k: v for k, v in self.cache.entries.items() if Path(k).exists()}
            atomic_write(state / DIGESTS_NAME, json.dumps(entries, separators=(",", ":")).encode(), mode=0o600)


@contextlib.contextmanager
def edit_fleet(config: Config) -> Iterator[FleetEdit]:
    """Hold the edit lock and yield a FleetEdit over the fleet as it is now.

    Commit inside the block: the lock must cover read, validate and write together.
    """
    with exclusive_lock(config.path("state_dir") / LOCK_NAME):
        yield FleetEdit(config)


def _apply(config: Config, change: Callable[[FleetEdit], str],
           after: Callable[[EditResult], None] | None) -> EditResult:
    with edit_fleet(config) as edit:
        change(edit)
        result = edit.commit()
        if after is not None and result.changed:
            after(result)  # still under the lock: e.g. one git commit per change
        return result


def add_device(config: Config, mac: str, *, device_id: str | None = None, hardware: str | None = None,
               target: Target | None = None, token_scheme: str | None = None, channel: str | None = None,
               chip: str | None = None, after: Callable[[EditResult], None] | None = None) -> EditResult:
    """Add a device to the default device file."""
    return _apply(config, lambda e: e.add(mac, device_id=device_id, hardware=hardware, target=target,
                                          token_scheme=token_scheme, channel=channel, chip=chip), after)


def update_device(config: Config, mac: str, *, device_id: str | None = KEEP, hardware: str | None = KEEP,
                  target: Target | None = None, unpin: bool = False, token_scheme: str | None = KEEP,
                  channel: str | None = KEEP, chip: str | None = KEEP,
                  after: Callable[[EditResult], None] | None = None) -> EditResult:
    """Change a device where it is declared; KEEP leaves a field alone, None removes it."""
    return _apply(config, lambda e: e.update(mac, device_id=device_id, hardware=hardware, target=target,
                                             unpin=unpin, token_scheme=token_scheme, channel=channel, chip=chip),
                  after)


def delete_device(config: Config, mac: str, *,
                  after: Callable[[EditResult], None] | None = None) -> EditResult:
    """Remove a device's entry from its file."""
    return _apply(config, lambda e: e.delete(mac), after)


# -- helpers -------------------------------------------------------------------------------
def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise OtapubError(f"{name}: expected a non-empty string without surrounding spaces, found {value!r}")
    if any(ord(c) < 32 for c in value) or len(value) > 256:
        raise OtapubError(f"{name}: expected one line of at most 256 characters, found {value[:40]!r}")
    return value


def _scheme(name: str | None) -> str | None:
    if name is not None and name not in SCHEMES:
        raise OtapubError(f"token_scheme: unknown scheme {name!r} (known: {', '.join(sorted(SCHEMES))})")
    return name


def _chip(text: str | None) -> str | None:
    """esptool's name of a chip given in any spelling (ESP32-C6, esp32_c6 ...)."""
    if text is None:
        return None
    try:
        return known_chip(_text(text, "chip"))
    except ValueError as exc:
        raise OtapubError(f"chip: {exc}") from None


def _device_fields(device: Device) -> dict[str, Any]:
    """A device's edit fields as the validated fleet holds them (a pin is one of two fields)."""
    fields = {name: getattr(device, name) for name in DEVICE_FIELDS}
    if device.target_version is not None:
        fields["release"] = None  # resolved from target_version, not written
    return fields


def _ordered(fields: dict[str, Any]) -> dict[str, Any]:
    def rank(name: str) -> int:
        return DEVICE_FIELDS.index(name) if name in DEVICE_FIELDS else len(DEVICE_FIELDS)

    return {k: fields[k] for k in sorted(fields, key=rank)}


def repo_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write(path: Path, data: bytes) -> None:
    """Atomic write that keeps an existing file's permissions."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode=mode)


def _copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def digest_cache(config: Config) -> DigestCache:
    """Firmware digests remembered by earlier edits (a file is hashed again only when it changed)."""
    return DigestCache(_load_json(config.path("state_dir") / DIGESTS_NAME))


def _image_version(path: Path) -> str | None:
    """The version an ESP32 app image's descriptor names, when it is dotted numbers."""
    from otapub.image import inspect_file

    try:
        version = inspect_file(path).version
        if version is not None:
            parse_version(version)
        return version
    except (OtapubError, ValueError, OSError):
        return None


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
