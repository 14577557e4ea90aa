"""Which release each device should run. Data in, data out: no I/O."""

from __future__ import annotations

from datetime import datetime

from otapub.model import Fleet, Release


def resolve_targets(fleet: Fleet, now: datetime) -> dict[str, Release | None]:
    """Target release per device MAC: a per-device pin, else nothing."""
    releases = fleet.releases
    return {mac: releases.get(device.release) if device.release else None for mac, device in fleet.devices.items()}
