"""Convert a seed OTA server's data (devices.json, config.json, firmware/) into the fleet YAML.

Devices become fleet entries; each distinct (firmware_url, checksum, target_version) becomes a
release, from the file the seed served (``firmware_directory/<name of the URL>``), verified
against the seed's MD5 before anything is written. ``last_check``/``last_update`` are runtime
state: they are reported, never put in git. Non-secret config keys go into otapub's
config.json; secrets are never written. Everything goes through otapub.edit, so the result is
validated like ``otapub check`` and a second run over the same input changes nothing.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from otapub.config import FIELDS_BY_NAME, PLACEHOLDER_SECRETS, Config, ConfigError, load_config
from otapub.edit import KEEP, EditResult, FleetEdit, NoRelease, Target, edit_fleet, parse_mac
from otapub.errors import OtapubError
from otapub.firmware import digest_file
from otapub.fsutil import atomic_write

SEED_DEVICE_FIELDS = ("device_id", "hardware_version", "target_version", "firmware_url", "checksum",
                      "last_check", "last_update")
# Seed settings that mean the same in otapub and carry over into its config.json.
CARRIED_SETTINGS = ("server_port", "server_host", "debug_mode", "log_level")
SEED_TOKEN_SCHEME = "djb2-0"  # noqa: S105 (a scheme name): what the seed's server and firmware computed


@dataclass
class SeedImport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # imported without a release (--skip-missing)
    result: EditResult | None = None
    config_file: Path | None = None
    config_changes: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, dict[str, Any]] = field(default_factory=dict)  # MAC -> last_check/last_update
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool((self.result and self.result.changed) or self.config_changes)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OtapubError(f"{path}: cannot read {what}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OtapubError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise OtapubError(f"{path}:1: expected a JSON object ({what})")
    return data


def _line_of(text: str, key: str) -> int | None:
    """The line where ``key`` is first written as an object key (a seed's MACs are unique)."""
    found = re.search(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:", text)
    return text.count("\n", 0, found.start()) + 1 if found else None


def import_seed(config: Config, devices_json: Path, seed_config: Path | None = None,
                firmware_dir: Path | None = None, *, skip_missing: bool = False,
                token_scheme: str = SEED_TOKEN_SCHEME) -> SeedImport:
    """Merge a seed server's devices (and settings) into the fleet; all or nothing."""
    report = SeedImport()
    devices = _read_json(devices_json, "the seed's devices")
    devices_text = devices_json.read_text(encoding="utf-8")  # read fine just above: for line numbers
    settings = _read_json(seed_config, "the seed's configuration") if seed_config is not None else {}
    if firmware_dir is None:
        seed_fw = settings.get("firmware_directory")
        base = seed_config.parent if seed_config is not None else devices_json.parent
        firmware_dir = base / (seed_fw if isinstance(seed_fw, str) and seed_fw else "firmware")
    firmware_dir = firmware_dir.resolve()
    new_config = _plan_settings(config, settings, seed_config, report)
    problems: list[str] = []
    where = str(devices_json)
    seen: dict[str, str] = {}
    with edit_fleet(config) as edit:
        scheme = None if token_scheme == config.token_scheme else token_scheme
        for key, entry in devices.items():
            try:
                mac = parse_mac(key)
                if mac in seen:
                    raise OtapubError(f"the same device as {seen[mac]!r}")
                seen[mac] = key
                if not isinstance(entry, dict):
                    raise OtapubError("expected an object of device fields")
                ignored = sorted(set(entry) - set(SEED_DEVICE_FIELDS))
                if ignored:
                    report.notes.append(f"{mac}: ignored unknown field(s) {', '.join(ignored)}")
                runtime = {k: entry[k] for k in ("last_check", "last_update") if entry.get(k)}
                if runtime:
                    report.runtime[mac] = runtime
                device_id, hardware = _text(entry, "device_id"), _text(entry, "hardware_version")
                target = _target(entry, firmware_dir)
                try:
                    _merge(edit, mac, device_id, hardware, target, scheme, report)
                except NoRelease as exc:
                    if not skip_missing:
                        raise
                    _merge(edit, mac, device_id, hardware, None, scheme, report)
                    report.skipped.append(mac)
                    report.notes.append(f"{mac}: imported without a release: {exc}")
            except OtapubError as exc:
                line = _line_of(devices_text, key)
                problems.append(f"{where}{f':{line}' if line else ''}: {key}: {exc}")
        if problems:
            count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
            raise OtapubError("\n".join([*problems, f"{count} in the seed data; nothing was written"]))
        report.result = edit.commit()
    if new_config is not None:
        atomic_write(report.config_file, (json.dumps(new_config, indent=2) + "\n").encode())
    return report


def _text(entry: dict[str, Any], name: str) -> str | None:
    value = entry.get(name)
    if value is not None and not isinstance(value, str):
        raise OtapubError(f"{name}: expected a string, found {value!r}")
    return value or None


def _target(entry: dict[str, Any], firmware_dir: Path) -> Target | None:
    """The seed's (firmware_url, checksum, target_version), verified against the file the seed served."""
    version, url = _text(entry, "target_version"), _text(entry, "firmware_url")
    checksum = (_text(entry, "checksum") or "").lower() or None
    if url is None:
        return Target(version=version, checksum=checksum) if version else None
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    local = firmware_dir / name if name else None
    if local is not None and local.is_file():
        md5 = digest_file(local).md5
        if checksum is not None and md5 != checksum:
            raise OtapubError(f"checksum {checksum} is not the MD5 of {local} ({md5}): devices would reject "
                              "that file")
        return Target(firmware_file=local, version=version)
    # Not in the seed's folder: the fleet may already have a release for it (by URL or file name).
    return Target(firmware_url=url, version=version, checksum=checksum)


def _merge(edit: FleetEdit, mac: str, device_id: str | None, hardware: str | None, target: Target | None,
           scheme: str | None, report: SeedImport) -> None:
    if not edit.exists(mac):
        edit.add(mac, device_id=device_id, hardware=hardware, target=target, token_scheme=scheme)
        report.added.append(mac)
        return
    edit.update(mac, device_id=device_id if device_id is not None else KEEP,
                hardware=hardware if hardware is not None else KEEP, target=target)
    (report.updated if edit.changes(mac) else report.unchanged).append(mac)


def _plan_settings(config: Config, settings: dict[str, Any], seed_config: Path | None,
                   report: SeedImport) -> dict[str, Any] | None:
    """otapub's config.json with the seed's carried-over settings; None when nothing changes."""
    if seed_config is None:
        return None
    for name in ("shared_secret_key", "admin_api_key"):
        value = settings.get(name)
        if not value:
            continue
        if value in PLACEHOLDER_SECRETS:
            report.notes.append(f"{name} is the seed's published placeholder: otapub refuses it outside debug_mode"
                                + (" (devices' tokens derive from it: changing it means re-flashing them)"
                                   if name == "shared_secret_key" else ""))
        report.notes.append(f"{name} not written (secrets stay out of git): set OTA_SERVER_{name.upper()}")
    for name in ("devices_file", "firmware_directory"):
        if name in settings:
            report.notes.append(f"{name} describes the seed's layout: not carried over")
    unknown = sorted(set(settings) - set(FIELDS_BY_NAME))
    if unknown:
        report.notes.append(f"unknown seed setting(s) ignored: {', '.join(unknown)}")
    target = config.source or (config.root / "config.json")
    current = _read_json(target, "otapub's configuration") if target.exists() else {}
    changes = {name: settings[name] for name in CARRIED_SETTINGS
               if name in settings and current.get(name, FIELDS_BY_NAME[name].default) != settings[name]}
    report.config_file = target
    report.config_changes = changes
    if not changes:
        return None
    merged = {**current, **changes}
    with tempfile.TemporaryDirectory() as folder:  # validate exactly as otapub will read it
        trial = Path(folder) / "config.json"
        trial.write_text(json.dumps(merged))
        try:
            load_config(trial, environ={})
        except ConfigError as exc:
            raise OtapubError(f"{seed_config}: {exc}".replace(str(trial), str(seed_config))) from None
    return merged
