"""What is known about devices: the fleet's declaration joined with the check-in log.

Read-only; used by ``otapub device list/get`` and the admin API. The check-in log holds
runtime state (last check, reported version), which never goes into git.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from otapub.checkins import Seen
from otapub.checkinstore import folded
from otapub.config import Config
from otapub.edit import digest_cache
from otapub.errors import OtapubError
from otapub.firmware import Digests, firmware_url
from otapub.fleet import load_fleet
from otapub.model import Device, Fleet, Release
from otapub.targets import resolve_targets
from otapub.tokens import get_scheme


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
            "token_scheme": device.token_scheme or self.config.token_scheme,
            "declared_in": f"{device.pos.file}:{device.pos.line}",
            "last_check": seen.last_check if seen else None,
            "last_update": seen.last_update if seen else None,
            "last_version": seen.last_version if seen else None,
            "last_decision": seen.last_decision if seen else None,
            "checks": seen.checks if seen else 0,
        }

    def all(self) -> dict[str, dict[str, Any]]:
        return {mac: self.view(self.fleet.devices[mac]) for mac in sorted(self.fleet.devices)}


def device_token(config: Config, device: Device) -> str:
    """The X-Device-Auth value the device sends (wire form of its scheme)."""
    if not config.shared_secret_key:
        raise OtapubError("shared_secret_key is not set (OTA_SERVER_SHARED_SECRET_KEY): cannot compute tokens")
    scheme = get_scheme(device.token_scheme or config.token_scheme)
    return scheme.wire(device.mac12, config.shared_secret_key)

