"""The check-in log: one JSON line per device request, appended, never rewritten.

Runtime state does not belong in git (design.md §3): the shim appends here; the check-in
store (otapub.checkinstore) folds it for ``otapub status``, ``health``, the dashboard and the
admin API. Each line is written with a single ``write`` on an
``O_APPEND`` descriptor, so several worker processes can share one file without locks and
without interleaving lines.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
    """Appends check-ins to a file; opened lazily once per process.

    The log can be moved away at any time (logrotate's ``create``, or the shim's own rotation
    below): at most once a second each process compares the file it writes with the one at
    ``path`` and reopens when they differ, and a SIGHUP to ``otapub serve`` respawns the
    workers, which open it anew. Lines written to the moved file meanwhile are not lost: the
    check-in store follows a moved log by its inode (otapub.checkinstore).

    With ``max_bytes`` or ``daily`` the shim rotates by itself: the process whose line would
    cross the size (or the first to write on a new UTC day) renames the log to
    ``<log>.<UTC time>`` under an exclusive lock on it, so several workers rotate it once.
    """

    CHECK_SECONDS = 1.0

    def __init__(self, path: Path | None, max_bytes: int = 0, daily: bool = False):
        self.path = path
        self.max_bytes = max_bytes
        self.daily = daily
        self._fd: int | None = None
        self._pid: int | None = None
        self._ino: int | None = None
        self._size = 0
        self._day = 0  # UTC day number the open file was started on
        self._next_check = 0.0

    def append(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        try:
            now = time.monotonic()
            if self._fd is None or self._pid != os.getpid() or now >= self._next_check:
                self._follow()
                self._next_check = now + self.CHECK_SECONDS
            if (self.max_bytes and self._size + len(line) > self.max_bytes and self._size) or (
                    self.daily and self._size and _today() != self._day):
                try:
                    self._rotate()
                except OSError as exc:  # the line still goes to the current file
                    log.error("cannot rotate check-in log %s: %s", self.path, exc.strerror)
            os.write(self._fd, line)
            self._size += len(line)
        except OSError as exc:  # never fail a device request because the log is unwritable
            log.error("cannot append to check-in log %s: %s", self.path, exc.strerror)

    def reopen(self) -> None:
        """Write to the file at ``path`` from the next line on (after it was moved away)."""
        self._next_check = 0.0

    def _follow(self) -> None:
        """(Re)open the file at ``path`` when this process has none or another one."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._fd is not None and self._pid == os.getpid() and st is not None and st.st_ino == self._ino:
            self._size = st.st_size  # other workers write too
            return
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None  # a forked worker opens its own (its inherited descriptor stays the parent's)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._pid = os.getpid()
        opened = os.fstat(self._fd)
        self._ino, self._size = opened.st_ino, opened.st_size
        self._day = int(opened.st_mtime // 86400) if opened.st_size else _today()

    def _rotate(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # the lock is on the file: one worker moves it
        try:
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == self._ino:
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                os.rename(self.path, f"{self.path}.{stamp}")
                log.info("check-in log moved to %s.%s", self.path, stamp)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._follow()


def _today() -> int:
    return int(time.time() // 86400)


@dataclass
class Seen:
    """What the check-ins tell about one MAC (a row of the store's ``devices`` table)."""

    mac: str
    first_seen: str | None = None
    last_check: str | None = None
    last_version: str | None = None
    last_target: str | None = None
    last_decision: str | None = None
    last_update: str | None = None  # when its reported version last went up
    device_id: str | None = None
    hardware: str | None = None
    last_ip: str | None = None
    last_client: str | None = None  # which protocol asked (seed, httpupdate, ...), when logged
    checks: int = 0
    auth_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ip_and_client(entry: dict[str, Any]) -> tuple[str | None, str | None]:
    """The requester's address and the protocol that asked.

    The shim logged the address as ``client`` before check-ins recorded the protocol; a
    ``client`` that parses as an IP address is read as the address, anything else as the
    protocol (an explicit ``ip`` wins).
    """
    ip, client = entry.get("ip"), entry.get("client")
    if isinstance(client, str) and ip is None and _is_ip(client):
        ip, client = client, entry.get("protocol")
    return (ip if isinstance(ip, str) else None), (client if isinstance(client, str) else None)


def _is_ip(text: str) -> bool:
    # Cheap on purpose (runs per logged line): protocol names are words, addresses are not.
    return text[:1].isdigit() or ":" in text
