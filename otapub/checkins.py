"""The check-in log: one JSON line per device request, appended, never rewritten.

Runtime state does not belong in git (design.md §3): the shim appends here and ``otapub
status`` / the admin API read it. Each line is written with a single ``write`` on an
``O_APPEND`` descriptor, so several worker processes can share one file without locks and
without interleaving lines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otapub.versions import parse_version

log = logging.getLogger(__name__)

# Decisions recorded per check-in.
UP_TO_DATE = "up_to_date"
UPDATE_OFFERED = "update_offered"
HARDWARE_MISMATCH = "hardware_mismatch"
NO_TARGET = "no_target"
AUTH_FAILED = "auth_failed"
BAD_REQUEST = "bad_request"
# Decisions of the other clients (otapub.clients).
NO_SPACE = "no_space"  # HTTPUpdate: the image is larger than the free space the device reports
CLIENT_NOT_DECLARED = "client_not_declared"  # the device's `client:` does not list the protocol it used
ANSWER_SERVED = "answer_served"  # client idf read its answer (it compares versions itself)
MANIFEST_SERVED = "manifest_served"  # esp32fota / esphome fetched their static manifest


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CheckinLog:
    """Appends check-ins to a file; opened lazily once per process."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fd: int | None = None
        self._pid: int | None = None

    def append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        try:
            if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                self._pid = os.getpid()
            os.write(self._fd, line)
        except OSError as exc:  # never fail a device request because the log is unwritable
            log.error("cannot append to check-in log %s: %s", self.path, exc.strerror)


def iter_checkins(path: Path) -> Iterator[dict[str, Any]]:
    """Entries of a check-in log, oldest first; unreadable lines are skipped with a warning."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                entry = json.loads(raw)
            except ValueError:
                log.warning("%s:%d: skipping a line that is not JSON", path, number)
                continue
            if isinstance(entry, dict):
                yield entry


@dataclass
class Seen:
    """What the log tells about one MAC."""

    mac: str
    last_check: str | None = None
    last_version: str | None = None
    last_target: str | None = None
    last_decision: str | None = None
    last_update: str | None = None  # when its reported version last went up
    device_id: str | None = None
    hardware: str | None = None
    checks: int = 0
    auth_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(entries: Iterator[dict[str, Any]]) -> dict[str, Seen]:
    """Fold check-ins into the latest state per MAC."""
    seen: dict[str, Seen] = {}
    for entry in entries:
        mac = entry.get("mac")
        if not isinstance(mac, str):
            continue
        item = seen.get(mac) or seen.setdefault(mac, Seen(mac))
        item.checks += 1
        item.last_check = entry.get("time")
        decision = entry.get("decision")
        if decision in (AUTH_FAILED, BAD_REQUEST):  # what an unauthenticated request claims is not news
            item.auth_failures += decision == AUTH_FAILED
            item.last_decision = decision
            continue
        version = entry.get("version")
        if isinstance(version, str):
            if item.last_version is not None and _newer(version, item.last_version):
                item.last_update = entry.get("time")
            item.last_version = version
        item.last_target = entry.get("target")
        item.last_decision = entry.get("decision")
        item.device_id = entry.get("device_id") or item.device_id
        item.hardware = entry.get("hardware") or item.hardware
    return seen


def _newer(a: str, b: str) -> bool:
    try:
        return parse_version(a) > parse_version(b)
    except ValueError:
        return False


def read_checkins(path: Path | None) -> dict[str, Seen]:
    """Latest state per MAC from a check-in log (empty when there is none)."""
    return summarize(iter_checkins(path)) if path is not None else {}
