"""What to flash into a device for the ``hmac-sha256`` token scheme (``otapub provision``).

The device gets its own key, never the fleet secret: a device whose flash is read out exposes
only itself. The key goes into NVS (namespace ``otapub``, blob ``device_key``); the device
computes its token from it (examples/secure/otapub_hmac_token.c).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from otapub.config import Config
from otapub.errors import OtapubError
from otapub.fleet import load_fleet
from otapub.mac import mac12 as to_mac12
from otapub.mac import normalize_mac
from otapub.tokens import device_key, hmac_token_from_key, scheme_of

SCHEME = "hmac-sha256"
NVS_NAMESPACE = "otapub"
NVS_KEY = "device_key"


@dataclass(frozen=True)
class Provisioning:
    mac: str
    mac12: str
    scheme: str
    device_key: str  # 64 hex digits: the device's secret
    token: str  # what the device sends in X-Device-Auth
    fleet_scheme: str | None  # the device's scheme in the fleet now; None when it is not declared

    def nvs_csv(self) -> str:
        """An ESP-IDF nvs_partition_gen.py CSV (also readable with Arduino's Preferences.getBytes)."""
        return (f"key,type,encoding,value\n{NVS_NAMESPACE},namespace,,\n"
                f"{NVS_KEY},data,hex2bin,{self.device_key}\n")

    def to_dict(self) -> dict:
        return {**asdict(self), "nvs_namespace": NVS_NAMESPACE, "nvs_key": NVS_KEY}

    def next_step(self) -> str:
        if self.fleet_scheme == SCHEME:
            return f"{self.mac} already uses {SCHEME} in the fleet: flash the key and it can check in."
        if self.fleet_scheme is None:
            return f"{self.mac} is not in the fleet yet: add it with `token_scheme: {SCHEME}`."
        return (f"{self.mac} uses {self.fleet_scheme} in the fleet: once the key is flashed and its firmware sends "
                f"the new token, set `token_scheme: {SCHEME}` on it (its answer moves to the new token's path).")


def provision(config: Config, mac: str) -> Provisioning:
    try:
        digits = to_mac12(mac)
    except ValueError as exc:
        raise OtapubError(str(exc)) from None
    secret = config.secret("device keys derive from it", public_if_placeholder=True)
    fleet_scheme = None
    if config.path("fleet_dir").is_dir():
        device = load_fleet(config.path("fleet_dir"), config.root).devices.get(normalize_mac(mac))
        if device is not None:
            fleet_scheme = scheme_of(device, config.token_scheme)
    key = device_key(digits, secret)
    return Provisioning(normalize_mac(mac), digits, SCHEME, key.hex(), hmac_token_from_key(key, digits),
                        fleet_scheme)
