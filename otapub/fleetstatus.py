"""The fleet's status: what each device last said, against what it should run.

`otapub status` is the read a fleet owner runs most, on fleets of 100,000 devices, so it is
answered from the check-in store alone: the store keeps the fleet's devices and their targets
(``targets``, for the fleet files' fingerprint and the span of time until a rollout stage opens
or closes), and the status is one join of that with ``devices``. The fleet YAML (otapub.fleet,
otapub.targets) is loaded, and imported, only when a fleet file changed or a stage moved; the
JSON output is written by SQLite, one object per device, without a Python object per row.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otapub import __version__
from otapub import checkins as checkin_log
from otapub.checkins import Seen
from otapub.checkinstore import Store, folded
from otapub.config import Config
from otapub.fsutil import RACY_NS, fleet_files, stat_fingerprint

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
                 fleet: Any = None, seen: dict[str, Seen] | None = None) -> list[DeviceStatus]:
    """One row per fleet device (MAC order), then devices that checked in but are not in the fleet.

    The shim's log and ``extra_logs`` (e.g. the Worker's, converted) are folded into the
    check-in store first; only lines added since the last fold are read. ``fleet`` (an
    otapub.model.Fleet) and ``seen`` (the store's devices, read by the caller) save loading
    them again.
    """
    now = now or datetime.now(timezone.utc)
    if fleet is None and seen is None:  # the common case (`otapub status`): one join in the store
        with _current(config, extra_logs, now) as store:
            members, strangers = store.status(STATES)
        return [DeviceStatus(mac, device_id, True, *rest) for mac, device_id, *rest in members] + \
            [DeviceStatus(mac, device_id, False, *rest) for mac, device_id, *rest in strangers]
    from otapub.fleet import load_fleet
    from otapub.targets import resolve_targets

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


def fleet_status_json(config: Config, extra_logs: tuple[Path, ...] = (), now: datetime | None = None) -> bytes:
    """``fleet_status`` as a JSON array of DeviceStatus objects, one per line, encoded by SQLite (UTF-8:
    not decoded into Python strings only to be encoded again for output)."""
    def as_json(columns: dict[str, str]) -> str:
        pairs = ", ".join(f"'{name}', {sql}" for name, sql in columns.items())
        return f"CAST(json_object({pairs}) AS BLOB)"

    with _current(config, extra_logs, now) as store:
        objects = [text for rows in store.status(STATES, as_json) for (text,) in rows]
    return b"[\n" + b",\n".join(objects) + b"\n]" if objects else b"[]"


# `otapub status`'s table: heading and field of each column.
TABLE = (("MAC", "mac"), ("DEVICE ID", "device_id"), ("TARGET", "target"), ("REPORTED", "last_version"),
         ("STATE", "state"), ("LAST CHECK", "last_check"), ("LAST UPDATE", "last_update"))


def fleet_status_table(config: Config, extra_logs: tuple[Path, ...] = (), now: datetime | None = None) -> bytes:
    """``fleet_status`` as `otapub status` prints it: aligned columns, '-' for nothing (as
    otapub.cli.echo_table prints tables), laid out by SQLite: one pass for the columns' widths, one
    for the lines (UTF-8)."""
    def cells(columns: dict[str, str]) -> list[str]:
        return [f"coalesce({columns[field]}, '-')" for _, field in TABLE]

    with _current(config, extra_logs, now) as store:
        widths = [len(heading) for heading, _ in TABLE]
        def longest(columns: dict[str, str]) -> str:
            return ", ".join(f"max(length({cell}))" for cell in cells(columns))

        def line(columns: dict[str, str]) -> str:
            return f"CAST(rtrim(printf('{layout}', {', '.join(cells(columns))}), ' ') AS BLOB)"

        for rows in store.status(STATES, longest):
            widths = [max(width, found or 0) for width, found in zip(widths, rows[0], strict=True)]
        layout = "  ".join(f"%!-{width}s" for width in widths)  # '!': widths in characters, as str.ljust
        lines = store.status(STATES, line)
    heading = "  ".join(heading.ljust(width) for (heading, _), width in zip(TABLE, widths, strict=True)).rstrip()
    return b"\n".join([heading.encode(), *(line for rows in lines for (line,) in rows)])


@contextlib.contextmanager
def _current(config: Config, extra_logs: tuple[Path, ...], now: datetime | None) -> Iterator[Store]:
    """The store, the logs folded in and the fleet's targets at ``now`` (default: now) cached."""
    with folded(config, extra_logs) as store:
        _cache_targets(config, store, now or datetime.now(timezone.utc))
        yield store


def _cache_targets(config: Config, store: Store, now: datetime) -> None:
    """Make the store's cached targets those of the fleet at ``now``; loads the fleet only when a
    fleet file changed (path, size, mtime) or a rollout stage opened or closed since."""
    fleet_dir = config.path("fleet_dir")
    files = fleet_files(fleet_dir) if fleet_dir.is_dir() else []
    key, newest = stat_fingerprint([__version__, "targets", str(fleet_dir), fleet_dir.is_dir()], files)
    if store.targets_for(key, now):
        return
    from otapub.fleet import load_fleet
    from otapub.rollout import validity
    from otapub.targets import resolve_targets

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
