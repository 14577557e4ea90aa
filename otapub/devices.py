"""Questions about single devices: their tokens, and which rule gives them their target."""

from __future__ import annotations

from datetime import datetime, timezone

from otapub.config import Config
from otapub.errors import OtapubError
from otapub.fleet import load_fleet
from otapub.identity import mac12, normalize_mac
from otapub.inspection import ImageCache, inspect_releases, release_chips
from otapub.targets import Explanation, explain
from otapub.tokens import get_scheme


def token_for(config: Config, mac: str, scheme: str | None = None, canonical: bool = False) -> str:
    """The token of one device: the wire form it sends, or the canonical path key."""
    try:
        digits = mac12(mac)
        if scheme is None:
            scheme = config.token_scheme
            if config.path("fleet_dir").is_dir():
                device = load_fleet(config.path("fleet_dir"), config.root).devices.get(normalize_mac(mac))
                if device is not None and device.token_scheme:
                    scheme = device.token_scheme
        chosen = get_scheme(scheme)
    except ValueError as exc:
        raise OtapubError(str(exc)) from None
    if not config.shared_secret_key:
        raise OtapubError("shared_secret_key is not set (OTA_SERVER_SHARED_SECRET_KEY)")
    return (chosen.compute if canonical else chosen.wire)(digits, config.shared_secret_key)


def client_urls_for(config: Config, mac: str) -> list[str]:
    """`otapub token --urls`: where each of the device's clients is pointed (otapub.clients)."""
    from otapub.clients import DEFAULT_CLIENTS, client_urls

    try:
        key = normalize_mac(mac)
    except ValueError as exc:
        raise OtapubError(str(exc)) from None
    device = load_fleet(config.path("fleet_dir"), config.root).devices.get(key) \
        if config.path("fleet_dir").is_dir() else None
    clients = device.clients if device is not None else DEFAULT_CLIENTS
    base = config.base_url or "<base_url>"
    return client_urls(base, mac12(mac), token_for(config, mac, canonical=True), token_for(config, mac), clients)


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
