"""Fleet status from the check-in log: what each device last said, against what it should run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otapub import checkins
from otapub.checkinstore import folded
from otapub.config import Config
from otapub.fleet import load_fleet
from otapub.targets import resolve_targets

STATES = {
    checkins.UP_TO_DATE: "up to date",
    checkins.UPDATE_OFFERED: "update offered",
    checkins.HARDWARE_MISMATCH: "hardware mismatch",
    checkins.NO_TARGET: "no target",
    checkins.AUTH_FAILED: "failing auth",
    checkins.BAD_REQUEST: "bad requests",
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


def fleet_status(config: Config, extra_logs: tuple[Path, ...] = (), now: datetime | None = None) -> list[DeviceStatus]:
    """One row per fleet device, then devices that checked in but are not in the fleet.

    The shim's log and ``extra_logs`` (e.g. the Worker's, converted) are folded into the
    check-in store first; only lines added since the last fold are read.
    """
    fleet = load_fleet(config.path("fleet_dir"), config.root)
    targets = resolve_targets(fleet, now or datetime.now(timezone.utc))
    with folded(config, extra_logs) as store:
        seen = store.devices()
    rows = []
    for mac, device in sorted(fleet.devices.items()):
        release = targets.get(mac)
        rows.append(_row(mac, device.device_id, True, release.version if release else None, seen.pop(mac, None)))
    for mac, item in sorted(seen.items()):
        rows.append(_row(mac, item.device_id, False, None, item))
    return rows


def _row(mac: str, device_id: str | None, in_fleet: bool, target: str | None,
         item: checkins.Seen | None) -> DeviceStatus:
    if item is None:
        return DeviceStatus(mac, device_id, in_fleet, target, "never seen", None, None, None, 0)
    state = STATES.get(item.last_decision or "", item.last_decision or "unknown")
    if not in_fleet:
        state = f"not in fleet ({state})"
    return DeviceStatus(mac, device_id or item.device_id, in_fleet, target, state, item.last_check,
                        item.last_version, item.last_update, item.checks)
