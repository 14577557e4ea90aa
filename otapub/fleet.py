"""Load and validate the fleet YAML into the model; every problem is collected and reported.

All ``*.yaml``/``*.yml`` files under the fleet folder are merged: a large fleet can be split
over many files, but a release name or a MAC may be declared only once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from otapub.errors import Problem, ValidationError
from otapub.identity import mac12 as to_mac12
from otapub.model import Device, Fleet, Release
from otapub.tokens import SCHEMES
from otapub.versions import parse_version
from otapub.yamlsource import Map, Pos, YAMLProblem, fleet_files, load_yaml

TOP_LEVEL = ("releases", "devices")
RESERVED = ("groups", "channels", "rollouts")
RELEASE_KEYS = ("version", "file", "url", "md5", "sha256", "size", "hardware")
DEVICE_KEYS = ("device_id", "hardware", "release", "target_version", "token_scheme")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_URL = re.compile(r"https?://[^\s/]+/\S*")


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, pos: Pos, field: str, message: str) -> None:
        self.problems.append(pos.problem(field, message))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _text(value: Any, pos: Pos, field: str, out: _Collector, pattern: re.Pattern | None = None,
          expected: str = "a string") -> str | None:
    if not isinstance(value, str) or not value.strip():
        hint = " (YAML read it as a number: quote it)" if isinstance(value, (int, float)) else ""
        out.add(pos, field, f"expected {expected}, found {value!r}{hint}")
        return None
    if pattern is not None and not pattern.fullmatch(value):
        out.add(pos, field, f"expected {expected}, found {value!r}")
        return None
    return value


def _version(value: Any, pos: Pos, field: str, out: _Collector) -> str | None:
    if isinstance(value, float):
        out.add(pos, field, f"{value!r} is a number in YAML (1.10 would read as 1.1): quote it, e.g. \"{value}\"")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        out.add(pos, field, f"expected a version of dotted numbers (e.g. \"1.3.8\"), found {value!r}")
        return None
    try:
        parse_version(value)
    except ValueError as exc:
        out.add(pos, field, str(exc))
        return None
    return value.strip()


def _check_keys(entry: Map, allowed: Iterable[str], what: str, out: _Collector) -> None:
    for key in entry:
        if key not in allowed:
            out.add(entry.key_pos[key], str(key), f"unknown key in {what} (allowed: {', '.join(allowed)})")


def _parse_release(name: str, entry: Any, pos: Pos, root: Path, out: _Collector) -> Release | None:
    if not isinstance(entry, Map):
        out.add(pos, f"releases.{name}", "expected a mapping of release fields")
        return None
    field = f"releases.{name}"
    _check_keys(entry, RELEASE_KEYS, f"release {name!r}", out)
    release = Release(name=name, version="", pos=pos, field_pos=dict(entry.value_pos))
    if "version" not in entry:
        out.add(entry.pos, f"{field}.version", "missing required field")
    else:
        release.version = _version(entry["version"], entry.where("version"), f"{field}.version", out) or ""
    has_file, has_url = "file" in entry, "url" in entry
    if has_file == has_url:
        out.add(entry.pos, field, "needs exactly one of `file:` (in the repository) or `url:`")
    if has_file:
        text = _text(entry["file"], entry.where("file"), f"{field}.file", out, expected="a file path")
        if text is not None:
            release.file_text = text
            release.file = _inside(root, text, entry.where("file"), f"{field}.file", out)
    if has_url:
        release.url = _text(entry["url"], entry.where("url"), f"{field}.url", out, _URL,
                            "an absolute http(s):// URL")
        for required in ("md5", "sha256", "size"):
            if required not in entry:
                out.add(entry.pos, f"{field}.{required}",
                        "required for a `url:` release (the file cannot be checked at build time, and "
                        "devices verify the MD5)")
    if "md5" in entry:
        md5 = _text(entry["md5"], entry.where("md5"), f"{field}.md5", out, _MD5, "32 hex digits (MD5)")
        release.md5 = md5.lower() if md5 else None
    if "sha256" in entry:
        sha = _text(entry["sha256"], entry.where("sha256"), f"{field}.sha256", out, _SHA256,
                    "64 hex digits (SHA-256)")
        release.sha256 = sha.lower() if sha else None
    if "size" in entry:
        size = entry["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            out.add(entry.where("size"), f"{field}.size", f"expected a positive number of bytes, found {size!r}")
        else:
            release.size = size
    if "hardware" in entry:
        release.hardware = _hardware_list(entry["hardware"], entry.where("hardware"), f"{field}.hardware", out)
    return release


def _hardware_list(value: Any, pos: Pos, field: str, out: _Collector) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        out.add(pos, field, f"expected a list of board names, found {value!r}")
        return None
    return tuple(value)


def _inside(root: Path, text: str, pos: Pos, field: str, out: _Collector) -> Path | None:
    """Resolve a repository-relative path; refuse anything that leaves the repository."""
    candidate = Path(text)
    if candidate.is_absolute():
        out.add(pos, field, f"{text!r} is absolute: give a path relative to the repository ({root})")
        return None
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        out.add(pos, field, f"{text!r} leads outside the repository ({root}) (`..` or a symlink)")
        return None
    return resolved


def _parse_device(key: Any, entry: Any, pos: Pos, out: _Collector) -> Device | None:
    try:
        digits = to_mac12(key if isinstance(key, str) else str(key))
    except ValueError as exc:
        out.add(pos, "devices", str(exc))
        return None
    mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    field = f"devices.{mac}"
    if entry is None:
        entry = Map()
        entry.pos, entry.key_pos, entry.value_pos = pos, {}, {}
    if not isinstance(entry, Map):
        out.add(pos, field, "expected a mapping of device fields")
        return None
    _check_keys(entry, DEVICE_KEYS, f"device {mac}", out)
    device = Device(mac=mac, mac12=digits, pos=pos, field_pos=dict(entry.value_pos))
    for name in ("device_id", "hardware"):
        if name in entry:
            setattr(device, name, _text(entry[name], entry.where(name), f"{field}.{name}", out))
    if "release" in entry:
        device.release = _text(entry["release"], entry.where("release"), f"{field}.release", out,
                               expected="a release name")
    if "target_version" in entry:
        device.target_version = _version(entry["target_version"], entry.where("target_version"),
                                         f"{field}.target_version", out)
        if "release" in entry:
            out.add(entry.where("target_version"), f"{field}.target_version",
                    "give either `release:` or `target_version:`, not both")
    if "token_scheme" in entry:
        scheme = entry["token_scheme"]
        if scheme not in SCHEMES:
            out.add(entry.where("token_scheme"), f"{field}.token_scheme",
                    f"unknown token scheme {scheme!r} (known: {', '.join(sorted(SCHEMES))})")
        else:
            device.token_scheme = scheme
    return device


def _section(doc: Map, key: str, out: _Collector) -> Map | None:
    value = doc[key]
    if value is None:
        return None
    if not isinstance(value, Map):
        out.add(doc.where(key), key, f"expected a mapping, found {type(value).__name__}")
        return None
    return value


def parse_documents(docs: Iterable[tuple[Path, Any]], root: Path, out: _Collector) -> Fleet:
    """Merge parsed YAML documents into a Fleet, collecting problems into ``out``."""
    releases: dict[str, Release] = {}
    devices: dict[str, Device] = {}
    files: list[Path] = []
    for path, doc in docs:
        files.append(path)
        if doc is None:
            continue
        if not isinstance(doc, Map):
            out.add(Pos(_rel(path, root), 1, 1), "", "expected a mapping with `releases:` and/or `devices:`")
            continue
        for key in doc:
            if key in RESERVED:
                out.add(doc.key_pos[key], str(key), "not supported by this version of otapub")
            elif key not in TOP_LEVEL:
                out.add(doc.key_pos[key], str(key),
                        f"unknown top-level key (allowed: {', '.join(TOP_LEVEL)})")
        section = _section(doc, "releases", out) if "releases" in doc else None
        for name, entry in (section or {}).items():
            pos = section.key_pos[name]
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                out.add(pos, "releases", f"release name {name!r}: use letters, digits, '.', '_', '+', '-'")
                continue
            if name in releases:
                first = releases[name].pos
                out.add(pos, f"releases.{name}",
                        f"duplicate release name (first declared at {first.file}:{first.line})")
                continue
            release = _parse_release(name, entry, pos, root, out)
            if release is not None:
                releases[name] = release
        section = _section(doc, "devices", out) if "devices" in doc else None
        for key, entry in (section or {}).items():
            device = _parse_device(key, entry, section.key_pos[key], out)
            if device is None:
                continue
            if device.mac in devices:
                first = devices[device.mac].pos
                out.add(device.pos, f"devices.{device.mac}",
                        f"duplicate device (same MAC as {first.file}:{first.line}:{first.column})")
                continue
            devices[device.mac] = device
    fleet = Fleet(releases=releases, devices=devices, files=files)
    _resolve_pins(fleet, out)
    return fleet


def _resolve_pins(fleet: Fleet, out: _Collector) -> None:
    by_version: dict[tuple[int, ...], list[Release]] = {}
    for release in fleet.releases.values():
        if release.version:
            by_version.setdefault(parse_version(release.version), []).append(release)
    for device in fleet.devices.values():
        field = f"devices.{device.mac}"
        if device.release is not None:
            release = fleet.releases.get(device.release)
            if release is None:
                out.add(device.where("release"), f"{field}.release", f"unknown release {device.release!r}"
                        + _suggest(device.release, fleet.releases))
            elif not release.fits_hardware(device.hardware):
                out.add(device.where("release"), f"{field}.release",
                        f"release {release.name!r} is for {list(release.hardware)}, "
                        f"not for this device's hardware {device.hardware!r}")
        elif device.target_version is not None:
            candidates = by_version.get(parse_version(device.target_version), [])
            fitting = [r for r in candidates if r.fits_hardware(device.hardware)]
            if len(fitting) == 1:
                device.release = fitting[0].name
            elif not fitting:
                why = (f" ({len(candidates)} with that version, none for hardware {device.hardware!r})"
                       if candidates else "")
                out.add(device.where("target_version"), f"{field}.target_version",
                        f"no release has version {device.target_version}{why}")
            else:
                names = ", ".join(sorted(r.name for r in fitting))
                out.add(device.where("target_version"), f"{field}.target_version",
                        f"ambiguous: releases {names} all have version {device.target_version} "
                        "and fit this device; name one with `release:`")


def _suggest(name: str, known: dict[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_fleet(fleet_dir: Path, root: Path,
               read: Callable[[Path], Any] | None = None) -> Fleet:
    """Read every YAML file under fleet_dir; raise ValidationError listing all problems."""
    out = _Collector()
    if not fleet_dir.is_dir():
        raise ValidationError([Problem(str(fleet_dir), None, None, "fleet_dir", "fleet folder not found")])
    docs: list[tuple[Path, Any]] = []
    for path in fleet_files(fleet_dir):
        try:
            docs.append((path, (read or _read)(path, _rel(path, root))))
        except YAMLProblem as exc:
            out.problems.append(exc.problem)
    fleet = parse_documents(docs, root, out)
    if out.problems:
        raise ValidationError(out.problems)
    return fleet


def _read(path: Path, name: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise YAMLProblem(Problem(name, None, None, "", f"cannot read: {exc.strerror}")) from None
    return load_yaml(data, name)

