"""The device read model: what is known about each device, for the CLI and the admin API.

The fleet's declaration (otapub.fleet), each device's target and why (otapub.targets), its
token (otapub.tokens) and what it last said (the check-in log, otapub.checkins), joined.
Read-only: ``otapub device list/get``, ``token``, ``explain`` and the admin API's reads
(``status``, answered from the check-in store alone, is otapub.fleetstatus). The check-in log
holds runtime state (last check, reported version), which never goes into git.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from otapub.checkins import Seen
from otapub.checkinstore import folded
from otapub.config import Config
from otapub.errors import OtapubError
from otapub.firmware import Digests, firmware_url
from otapub.fleet import load_fleet
from otapub.inspection import ImageCache, inspect_releases, release_chips
from otapub.mac import mac12, normalize_mac
from otapub.model import Device, Fleet, Release
from otapub.targets import Explanation, explain, resolve_targets
from otapub.tokens import DeviceTokens, get_scheme, scheme_of


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
