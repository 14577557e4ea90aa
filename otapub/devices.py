"""Questions about single devices: their tokens."""

from __future__ import annotations

from otapub.config import Config
from otapub.errors import OtapubError
from otapub.fleet import load_fleet
from otapub.identity import mac12, normalize_mac
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
