"""The device read model: what is known about each device, for the CLI and the admin API.

The fleet's declaration (otapub.fleet), each device's target and why (otapub.targets), its
token (otapub.tokens) and what it last said (the check-in log, otapub.checkins), joined.
Read-only: ``otapub device list/get``, ``token``, ``explain``, ``status`` and the admin API's
reads. The check-in log holds runtime state (last check, reported version), which never goes
into git.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otapub import __version__
from otapub import checkins as checkin_log
from otapub.checkins import Seen
from otapub.checkinstore import Store, folded
from otapub.config import Config
from otapub.errors import OtapubError
from otapub.firmware import Digests, firmware_url
from otapub.fleet import load_fleet
from otapub.inspection import ImageCache, inspect_releases, release_chips
from otapub.mac import mac12, normalize_mac
from otapub.model import Device, Fleet, Release
from otapub.parsecache import RACY_NS
from otapub.rollout import validity
from otapub.targets import Explanation, explain, resolve_targets
from otapub.tokens import DeviceTokens, get_scheme, scheme_of
from otapub.yamlsource import fleet_files, stat_fingerprint


# -- the fleet's devices, their targets and check-ins -----------------------------------------
def load(config: Config) -> Fleet:
    fleet_dir = config.path("fleet_dir")
    return load_fleet(fleet_dir, config.root) if fleet_dir.is_dir() else Fleet({}, {}, [])


def checkins(config: Config) -> dict[str, Seen]:
    """Last check-in per MAC (normalised), from the check-in store with the log folded in."""
    with folded(config) as store:
        return store.devices()


class Views:
    """Renders device views for one fleet, hashing each firmware file at most once."""

    def __init__(self, config: Config, fleet: Fleet, digests: dict[str, Digests] | None = None,
                 seen: dict[str, Seen] | None = None, now: datetime | None = None):
        self.config = config
        self.fleet = fleet
        self.digests = dict(digests or {})
        self.seen = checkins(config) if seen is None else seen
        self.targets = resolve_targets(fleet, now or datetime.now(timezone.utc))
        from otapub.edit import digest_cache  # imports the build's checks: not for `status`

        self._cache = digest_cache(config)

    def _digests(self, release: Release) -> Digests | None:
        if release.name not in self.digests:
            found = None
            if release.file is not None:
                try:
                    found = self._cache.get(release.file)
                except OtapubError:
                    found = None
            elif release.md5 and release.sha256 and release.size:
                found = Digests(release.md5, release.sha256, release.size)
            self.digests[release.name] = found
        return self.digests[release.name]

    def view(self, device: Device) -> dict[str, Any]:
        """Everything known about a device, in the seed's field names plus otapub's."""
        release = self.targets.get(device.mac)
        d = self._digests(release) if release is not None else None
        url = firmware_url(self.config.base_url, release, d) if release is not None else None
        seen = self.seen.get(device.mac)
        return {
            "mac_address": device.mac,
            "device_id": device.device_id,
            "hardware": device.hardware,
            "hardware_version": device.hardware,  # the seed's name for it
            "release": release.name if release is not None else None,
            "target_version": release.version if release is not None else None,
            "firmware_url": url,
            "checksum": d.md5 if d is not None else (release.md5 if release is not None else None),
            "sha256": d.sha256 if d is not None else None,
            "size": d.size if d is not None else None,
            "pinned_by": "target_version" if device.target_version is not None else
                         ("release" if device.release is not None else None),
            "token_scheme": scheme_of(device, self.config.token_scheme),
            "clients": list(device.clients),  # the update clients it speaks (docs/clients.md)
            "declared_in": f"{device.pos.file}:{device.pos.line}",
            "last_check": seen.last_check if seen else None,
            "last_update": seen.last_update if seen else None,
            "last_version": seen.last_version if seen else None,
            "last_decision": seen.last_decision if seen else None,
            "checks": seen.checks if seen else 0,
            "first_seen": seen.first_seen if seen else None,
            "last_ip": seen.last_ip if seen else None,
            "last_client": seen.last_client if seen else None,
        }

    def all(self) -> dict[str, dict[str, Any]]:
        return {mac: self.view(self.fleet.devices[mac]) for mac in sorted(self.fleet.devices)}


def checkin_history(config: Config, mac: str, days: int = 14) -> dict[str, Any]:
    """When the device first reported each version, and its checks on each of its last ``days`` days."""
    with folded(config) as store:
        per_day = store.checks_per_day(mac)
        return {"versions_first_reported": store.first_reported(mac),
                "checks_per_day": dict(list(per_day.items())[-days:])}


def device_token(config: Config, device: Device) -> str:
    """The X-Device-Auth value the device sends (wire form of its scheme)."""
    return DeviceTokens(config.secret("device tokens derive from it"), config.token_scheme).wire(device)


# -- single devices: token, explanation --------------------------------------------------------
def token_for(config: Config, mac: str, scheme: str | None = None, canonical: bool = False) -> str:
    """The token of one device: the wire form it sends, or the canonical path key.

    ``scheme``: this one, else the device's in the fleet, else the config's default.
    """
    tokens, digits, scheme, _ = _tokens_of(config, mac, scheme, need_device=False)
    return tokens.for_mac(digits, scheme, canonical)


def client_urls_for(config: Config, mac: str, scheme: str | None = None) -> list[str]:
    """`otapub token --urls`: where each of the device's clients is pointed (otapub.clients)."""
    from otapub.clients import DEFAULT_CLIENTS, client_urls

    tokens, digits, scheme, device = _tokens_of(config, mac, scheme, need_device=True)
    return client_urls(config.base_url or "<base_url>", digits, tokens.for_mac(digits, scheme),
                       tokens.for_mac(digits, scheme, canonical=False),
                       device.clients if device is not None else DEFAULT_CLIENTS)


def _tokens_of(config: Config, mac: str, scheme: str | None, need_device: bool
               ) -> tuple[DeviceTokens, str, str | None, Device | None]:
    """The fleet's token deriver, the MAC's 12 digits, the scheme (``scheme``, else the device's,
    else None: the config's default) and the device (read from the fleet when needed or ``scheme`` is None)."""
    try:
        key = normalize_mac(mac)
        device = load(config).devices.get(key) if need_device or scheme is None else None
        if scheme is None and device is not None:
            scheme = device.token_scheme
        get_scheme(scheme or config.token_scheme)  # an unknown scheme is reported before a missing secret
    except ValueError as exc:
        raise OtapubError(str(exc)) from None
    return DeviceTokens(config.secret("device tokens derive from it"), config.token_scheme), mac12(key), scheme, device


def explain_device(config: Config, mac: str, now: datetime | None = None) -> Explanation:
    """Which rule gives device ``mac`` its target at ``now``, and why the others do not.

    Images are inspected only to learn the chip of releases that do not declare one; whether
    the firmware passes its checks is `otapub check`'s business.
    """
    try:
        key = normalize_mac(mac)
    except ValueError as exc:
        raise OtapubError(str(exc)) from None
    fleet = load_fleet(config.path("fleet_dir"), config.root)
    if key not in fleet.devices:
        raise OtapubError(f"{key} is not a device of the fleet (fleet_dir {config.path('fleet_dir')})")
    facts, _problems = inspect_releases(fleet, ImageCache())
    return explain(fleet, key, now or datetime.now(timezone.utc), release_chips(fleet, facts))


# -- fleet status: what each device last said, against what it should run ------------------------
STATES = {
    checkin_log.UP_TO_DATE: "up to date",
    checkin_log.UPDATE_OFFERED: "update offered",
    checkin_log.HARDWARE_MISMATCH: "hardware mismatch",
    checkin_log.NO_TARGET: "no target",
    checkin_log.AUTH_FAILED: "failing auth",
    checkin_log.BAD_REQUEST: "bad requests",
}


@dataclass
class DeviceStatus:
    mac: str
    device_id: str | None
    in_fleet: bool
    target: str | None
    state: str
    last_check: str | None
    last_version: str | None
    last_update: str | None
    checks: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fleet_status(config: Config, extra_logs: tuple[Path, ...] = (), now: datetime | None = None,
                 fleet: Fleet | None = None, seen: dict[str, Seen] | None = None) -> list[DeviceStatus]:
    """One row per fleet device, then devices that checked in but are not in the fleet.

    The shim's log and ``extra_logs`` (e.g. the Worker's, converted) are folded into the
    check-in store first; only lines added since the last fold are read. ``fleet`` and
    ``seen`` (the store's devices, read by the caller) save loading them again.
    """
    now = now or datetime.now(timezone.utc)
    if fleet is None and seen is None:  # the common case (`otapub status`): one join in the store
        with folded(config, extra_logs) as store:
            _cache_targets(config, store, now)
            members, strangers = store.status(STATES)
        return [DeviceStatus(mac, device_id, True, *rest) for mac, device_id, *rest in members] + \
            [DeviceStatus(mac, device_id, False, *rest) for mac, device_id, *rest in strangers]
    fleet = fleet or load_fleet(config.path("fleet_dir"), config.root)
    targets = resolve_targets(fleet, now)
    if seen is None:
        with folded(config, extra_logs) as store:
            seen = store.devices()
    seen = dict(seen)  # rows take their entries out
    rows = []
    for mac, device in sorted(fleet.devices.items()):
        release = targets.get(mac)
        rows.append(_row(mac, device.device_id, True, release.version if release else None, seen.pop(mac, None)))
    for mac, item in sorted(seen.items()):
        rows.append(_row(mac, item.device_id, False, None, item))
    return rows


def _cache_targets(config: Config, store: Store, now: datetime) -> None:
    """Make the store's cached targets those of the fleet at ``now``; loads the fleet only when a
    fleet file changed (path, size, mtime) or a rollout stage opened or closed since."""
    fleet_dir = config.path("fleet_dir")
    files = fleet_files(fleet_dir) if fleet_dir.is_dir() else []
    key, newest = stat_fingerprint([__version__, "targets", str(fleet_dir), fleet_dir.is_dir()], files)
    if store.targets_for(key, now):
        return
    fleet = load_fleet(fleet_dir, config.root)
    targets = resolve_targets(fleet, now)
    rows = [(mac, device.device_id, release.version if (release := targets.get(mac)) is not None else None)
            for mac, device in fleet.devices.items()]
    # A file changed within the file system's timestamp granularity may change again unseen.
    settled = time.time_ns() - newest >= RACY_NS
    store.save_targets(key if settled else None, validity(fleet.rollouts.values(), now), rows)


def _row(mac: str, device_id: str | None, in_fleet: bool, target: str | None,
         item: checkin_log.Seen | None) -> DeviceStatus:
    if item is None:
        return DeviceStatus(mac, device_id, in_fleet, target, "never seen", None, None, None, 0)
    state = STATES.get(item.last_decision or "", item.last_decision or "unknown")
    if not in_fleet:
        state = f"not in fleet ({state})"
    return DeviceStatus(mac, device_id or item.device_id, in_fleet, target, state, item.last_check,
                        item.last_version, item.last_update, item.checks)
