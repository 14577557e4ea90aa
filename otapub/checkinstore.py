"""The check-in store: the append-only check-in log folded into SQLite, incrementally.

The shim only appends lines (``otapub.checkins.CheckinLog``); nothing on the request path
touches this database. Readers (`otapub status`, `health`, `dashboard`) call :meth:`Store.fold`
first, which reads the log from where the previous fold stopped, so a call costs time in
proportion to the new lines, not to the history.

Where a fold stopped is remembered per log (``sources``): the file's device and inode, the byte
offset after the last complete line, and a hash of its first bytes. So:

- a partial last line (a writer mid-``write``) is left for the next fold;
- a log moved away by a rotation (the shim's own or logrotate's ``create`` + SIGHUP) is found
  beside the log by its inode and read to its end before the new file is read from the start;
- a truncated or replaced file (its head no longer matches) is read from the start again, and
  lines not newer than the last one folded are skipped, so an export that is regenerated with
  overlapping content (the Worker's logs) is not counted twice.

Tables: ``checkins`` (the history, indexed by MAC and time, kept ``checkin_retention_days``),
``devices`` (one row per MAC: first/last seen, last version, decision, address, client...),
``versions`` (when each MAC first reported each version), ``offers`` (when each MAC was first
offered each target, and what it ran then), ``days`` (the days there is history of) and
``fleet_days`` (devices per version per day, counted from the history when read, for the days
that got check-ins since).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from otapub import checkins
from otapub.checkins import Seen, ip_and_client
from otapub.errors import OtapubError
from otapub.mac import normalize_mac
from otapub.versions import parse_version

try:  # four times as fast as the json module: parsing is most of a fold
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    from json import loads as _loads

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: `devices` keyed by MAC alone (one seek per MAC in a join, not two); no `daily`
HEAD_BYTES = 512  # hashed to recognise a file that was truncated or replaced
BUSY_SECONDS = 60  # how long a call waits for another process's fold (or migration) to end
CHUNK = 32 << 20  # bytes read per step of a fold (a first fold of a large log stays bounded in memory)
UNAUTHENTICATED = frozenset({checkins.AUTH_FAILED, checkins.BAD_REQUEST})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, offset INTEGER NOT NULL,
    head TEXT, head_len INTEGER NOT NULL DEFAULT 0, last_time TEXT, folded_ns INTEGER
);
CREATE TABLE IF NOT EXISTS checkins (
    day TEXT, time TEXT, mac TEXT, version TEXT, target TEXT, decision TEXT, status INTEGER, ip TEXT, client TEXT
);
CREATE INDEX IF NOT EXISTS checkins_day_mac ON checkins (day, mac);
CREATE TABLE IF NOT EXISTS days (day TEXT PRIMARY KEY, stale INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    mac TEXT PRIMARY KEY, first_seen TEXT, last_check TEXT, last_version TEXT, last_target TEXT,
    last_decision TEXT, last_update TEXT, device_id TEXT, hardware TEXT, last_ip TEXT,
    last_client TEXT, checks INTEGER NOT NULL, auth_failures INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    mac TEXT, version TEXT, first_seen TEXT, PRIMARY KEY (mac, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offers (
    mac TEXT, target TEXT, first_offered TEXT, from_version TEXT, PRIMARY KEY (mac, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offers_target ON offers (target);
CREATE TABLE IF NOT EXISTS fleet_days (
    day TEXT, version TEXT, devices INTEGER NOT NULL, PRIMARY KEY (day, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

# The history is indexed by (day, MAC), not (MAC, time): a fold's rows then land at the end of the
# index instead of on a random page each (100,000 random pages rewritten per fold, at 10 M rows).
# A MAC's history is read with one index seek per day there is history of.
_DAYS = "SELECT day FROM days"
# A history row of an authenticated check-in (what an unauthenticated request claims is not news).
_AUTH = f"coalesce(decision, '') NOT IN ({', '.join(repr(d) for d in sorted(UNAUTHENTICATED))})"
_DEVICES_TABLE = re.search(r"CREATE TABLE IF NOT EXISTS devices \(.*?\) WITHOUT ROWID", _SCHEMA, re.S)[0]
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))
_DEVICE_COLUMNS = tuple(f.name for f in fields(Seen))  # the table's columns, in the dataclass's order


# The fleet's devices and their targets as of the last `status` (otapub.devices keeps it): `status`
# is then one join, without loading the fleet YAML. Valid for the fleet files' fingerprint and, as
# rollout stages open at set times, for a span of time (both in `meta`, key 'targets').
_TARGETS_SCHEMA = "CREATE TABLE IF NOT EXISTS targets (mac TEXT PRIMARY KEY, device_id TEXT, target TEXT) WITHOUT ROWID"
# The status of the cached fleet's devices, then of the other MACs that checked in (`otapub.fleetstatus`):
# {columns} of `t` (the device's row in `targets`; none for a stranger) and `d` (its row in `devices`),
# where {state} is the state's SQL (the caller names them).
_STATUS = "SELECT {columns} FROM targets AS t LEFT JOIN devices AS d ON d.mac = t.mac ORDER BY t.mac"
# (A stranger's `t` is a row of NULLs: the same columns serve both.)
_STRANGERS = """
SELECT {columns} FROM devices AS d LEFT JOIN (SELECT NULL AS device_id, NULL AS target) AS t
WHERE d.mac NOT IN (SELECT mac FROM targets) ORDER BY d.mac
"""
# DeviceStatus's fields, in its order.
_STATUS_COLUMNS = {
    "mac": "d.mac",
    "device_id": "CASE WHEN d.mac IS NULL THEN t.device_id ELSE coalesce(nullif(t.device_id, ''), d.device_id) END",
    "in_fleet": None,  # per query
    "target": "t.target",
    "state": "CASE WHEN d.mac IS NULL THEN 'never seen' ELSE {state} END",
    "last_check": "d.last_check",
    "last_version": "d.last_version",
    "last_update": "d.last_update",
    "checks": "coalesce(d.checks, 0)",
}

# A fold's batch (a chunk of the log) in SQL: `seq` keeps the log's order; `auth` is whether the
# check-in was authenticated (what an unauthenticated request claims is not news); `device_id`,
# `hardware` are None when empty. `per_mac` is the batch summarised per MAC.
_TEMP_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS batch (
    seq INTEGER PRIMARY KEY, day, time, mac, version, target, decision, status, ip, client, device_id,
    hardware, auth
);
CREATE TEMP TABLE IF NOT EXISTS per_mac (
    mac PRIMARY KEY, first_seen, last_check, last_version, last_target, last_decision, last_update, device_id,
    hardware, last_ip, last_client, checks, auth_failures, first_version, first_version_time, authenticated
);
"""


def _merged(old: str, new: str) -> str:
    """SET clauses merging ``new`` (a MAC's later check-ins) into ``old`` (what was known of it)."""
    return f"""last_check = coalesce({new}.last_check, {old}.last_check),
        last_version = coalesce({new}.last_version, {old}.last_version),
        last_target = CASE WHEN {new}.authenticated THEN {new}.last_target ELSE {old}.last_target END,
        last_decision = {new}.last_decision,
        device_id = coalesce({new}.device_id, {old}.device_id),
        hardware = coalesce({new}.hardware, {old}.hardware),
        last_ip = {new}.last_ip,
        last_client = coalesce({new}.last_client, {old}.last_client),
        checks = {old}.checks + {new}.checks,
        auth_failures = {old}.auth_failures + {new}.auth_failures"""


_TEXT_VERSION = "auth AND typeof(version) = 'text'"
# Merged into the MACs' rows; on the right of SET, `devices.` is the row before the update.
# {few}: for a batch of few MACs, look their rows up instead of scanning `devices`.
_UPDATE_DEVICES = f"""
    UPDATE devices SET
        first_seen = coalesce(devices.first_seen, b.first_seen),
        last_update = coalesce(b.last_update,
                               CASE WHEN b.first_version IS NOT NULL AND devices.last_version IS NOT NULL
                                         AND devices.last_version != b.first_version
                                         AND otapub_newer(b.first_version, devices.last_version)
                                    THEN coalesce(b.first_version_time, devices.last_update)
                                    ELSE devices.last_update END),
        {_merged("devices", "b")}
    FROM temp.per_mac AS b WHERE devices.mac = b.mac {{few}}
"""
# The MACs the update did not find (skipped when it found them all).
_NEW_DEVICES = f"INSERT OR IGNORE INTO devices SELECT {', '.join(_DEVICE_COLUMNS)} FROM temp.per_mac"
_FOLD = (
    # The batch per MAC (the columns of `devices`, then: the first authenticated version and its
    # time, whether any check-in was authenticated): each check-in, in log order, merged into its
    # MAC's row (an upsert per row: no sort). On the right of SET, `per_mac.` is the row so far.
    f"""
    INSERT INTO temp.per_mac
    SELECT mac, time, time, CASE WHEN {_TEXT_VERSION} THEN version END, CASE WHEN auth THEN target END, decision,
           NULL, CASE WHEN auth THEN device_id END, CASE WHEN auth THEN hardware END, ip, nullif(client, ''), 1,
           decision IS '{checkins.AUTH_FAILED}', CASE WHEN {_TEXT_VERSION} THEN version END,
           CASE WHEN {_TEXT_VERSION} THEN time END, auth
    FROM temp.batch WHERE 1 ORDER BY seq
    ON CONFLICT (mac) DO UPDATE SET
        last_update = CASE WHEN excluded.last_version IS NOT NULL AND per_mac.last_version IS NOT NULL
                                AND excluded.last_version != per_mac.last_version
                                AND otapub_newer(excluded.last_version, per_mac.last_version)
                           THEN coalesce(excluded.last_check, per_mac.last_update) ELSE per_mac.last_update END,
        first_seen = coalesce(per_mac.first_seen, excluded.first_seen),
        {_merged("per_mac", "excluded")},
        first_version_time = CASE WHEN per_mac.first_version IS NULL THEN excluded.first_version_time
                                  ELSE per_mac.first_version_time END,
        first_version = coalesce(per_mac.first_version, excluded.first_version),
        authenticated = max(per_mac.authenticated, excluded.authenticated)
    """,
    _UPDATE_DEVICES,
    _NEW_DEVICES,
    "INSERT INTO checkins SELECT coalesce(day, ''), time, mac, version, target, decision, status, ip, client "
    "FROM temp.batch ORDER BY seq",
    # The days the batch has check-ins of: their `fleet_days` are counted again when next read.
    "INSERT INTO days SELECT DISTINCT coalesce(day, ''), 1 FROM temp.batch WHERE 1 "
    "ON CONFLICT (day) DO UPDATE SET stale = 1",
    # The first time each MAC reported each version (in log order: the first row wins).
    f"INSERT OR IGNORE INTO versions SELECT mac, version, time FROM temp.batch "
    f"WHERE {_TEXT_VERSION} AND typeof(time) = 'text' ORDER BY seq",
    # The first offer of each target to each MAC, and what the MAC ran then: the earliest (in the log's
    # order when times tie), in a batch as across batches (lines of several writers interleave).
    f"""
    INSERT INTO offers
    SELECT mac, target, time, CASE WHEN typeof(version) = 'text' THEN version END FROM (
        SELECT mac, target, time, version, row_number() OVER (PARTITION BY mac, target ORDER BY time, seq) AS n
        FROM temp.batch
        WHERE auth AND decision = '{checkins.UPDATE_OFFERED}' AND typeof(target) = 'text'
              AND typeof(time) = 'text')
    WHERE n = 1
    ON CONFLICT (mac, target) DO UPDATE SET first_offered = excluded.first_offered,
        from_version = excluded.from_version WHERE excluded.first_offered < first_offered
    """,
)


@functools.lru_cache(maxsize=4096)  # a fleet reports few versions: a fold compares the same pairs again and again
def _newer(a: str, b: str) -> bool:
    try:
        return parse_version(a) > parse_version(b)
    except ValueError:
        return False


class StoreError(OtapubError):
    pass


@dataclass
class FoldResult:
    lines: int = 0  # check-ins added
    skipped: int = 0  # lines that were not check-ins, or already folded
    bytes: int = 0
    seconds: float = 0.0  # set by fold_logs: the whole call, opening the store included


@dataclass
class Offer:
    mac: str
    first_offered: str
    from_version: str | None


def _day(when: str | None) -> str | None:
    return when[:10] if isinstance(when, str) and len(when) >= 10 and when[4] == when[7] == "-" else None


def _mac(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if len(value) == 17 and value[2::3] == ":::::" and value.isupper():  # the shim's own spelling: no work per line
        return value
    try:
        return normalize_mac(value)
    except ValueError:
        return value  # kept as sent: auth failures by MAC show what was tried


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _row(entry: dict[str, Any], when: Any) -> tuple[Any, ...] | None:
    """One check-in as a row of ``temp.batch`` (None without a MAC). A field of another type than
    the shim writes (a hand-made or foreign log) is read as missing."""
    mac = _mac(entry.get("mac"))
    if mac is None:
        return None
    when, decision, status = _text(when), _text(entry.get("decision")), entry.get("status")
    ip, client = ip_and_client(entry)
    status = status if type(status) is int and 0 <= status < 1000 else None
    return (_day(when), when, mac, _text(entry.get("version")), _text(entry.get("target")), decision, status,
            ip, client, _text(entry.get("device_id")) or None, _text(entry.get("hardware")) or None,
            decision not in UNAUTHENTICATED)


class Store:
    """One SQLite database (WAL: readers never wait for a fold)."""

    def __init__(self, path: Path, retention_days: int | None = None):
        self.path = path
        self.retention_days = retention_days
        if path.is_dir():  # SQLite would say only "unable to open database file"
            raise StoreError(f"{path}: a directory, not a check-in store (checkin_db names a file)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable check-in store ({exc})") from None
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}") from None
        try:
            self._open()
        except BaseException:
            self.db.close()
            raise

    def _open(self) -> None:
        path = self.path
        try:
            with self.db:  # one read transaction: a store another process is creating is seen whole or not at all
                self.db.execute("BEGIN")
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not 0 <= version <= SCHEMA_VERSION:
                raise StoreError(f"{path}: check-in store of schema {version}, this otapub reads up to "
                                 f"{SCHEMA_VERSION}; move it away and fold the logs again")
            self._refuse_foreign(version, tables)  # before anything is written to it
            self._use_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA cache_size=-262144")  # 256 MiB: a fold touches index pages all over
            self.db.execute("PRAGMA mmap_size=1073741824")
            self.db.create_function("otapub_newer", 2, _newer, deterministic=True)
            if version == 0:
                # all or none; IMMEDIATE: the first openers of a new store queue here instead of deadlocking
                self.db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            elif version < SCHEMA_VERSION:
                self._migrate()
            self.db.execute(_TARGETS_SCHEMA)  # not in _SCHEMA: stores of schema 1 get it too
            self.db.execute("PRAGMA temp_store=MEMORY")
            self.db.executescript(_TEMP_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable check-in store ({exc})") from None
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}") from None

    def _use_wal(self) -> None:
        """Put the database in WAL mode (it stays so). Switching takes the database to itself, and
        SQLite answers "locked" at once, without its busy timeout, while another connection has it
        open (the first openers of a new store race here): retried for as long as that timeout."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self) -> None:
        """Bring a store of an older schema to this one, in one transaction (another process may be
        doing the same: the second finds it done)."""
        with self._transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version < 2:
                # `devices` keyed by MAC alone; devices per version per day counted from the history
                # when read, not kept per MAC and day by every fold (`daily` and its triggers).
                log.info("%s: check-in store schema %d -> 2", self.path, version)
                self.db.execute(_DEVICES_TABLE.replace("devices", "devices_v2", 1))
                self.db.execute("INSERT INTO devices_v2 SELECT * FROM devices")
                self.db.execute("DROP TABLE devices")
                self.db.execute("ALTER TABLE devices_v2 RENAME TO devices")
                self.db.execute("DROP TABLE daily")  # its triggers go with it
                self.db.execute("ALTER TABLE days ADD COLUMN stale INTEGER NOT NULL DEFAULT 0")
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _refuse_foreign(self, version: int, tables: set[str]) -> None:
        """Refuse an SQLite database of something else (a mistyped ``checkin_db``): not a store of ours
        yet holding tables, or one that says it is but lacks the store's tables."""
        missing = _TABLES - tables
        if tables and (version == 0 or missing):
            found = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{self.path}: an SQLite database that is not a check-in store (its tables: {found}); "
                             "set checkin_db to a file of its own")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- folding ----------------------------------------------------------------------------

    def fold(self, log_path: Path, name: str | None = None) -> FoldResult:
        """Add the lines of ``log_path`` not folded yet (see the module doc)."""
        name = name or str(log_path)
        result = FoldResult()
        with self._transaction():  # two folds at once: the second waits, then has nothing to do
            try:
                self._fold_locked(log_path, name, result)
            except OSError as exc:  # a log (or a rotated one beside it) that cannot be read: nothing folded
                raise StoreError(f"{exc.filename or log_path}: {exc.strerror}") from None
            self._apply_retention()
        return result

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction, taken at once (writers queue for it); a database error as StoreError."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def _fold_locked(self, log_path: Path, name: str, result: FoldResult) -> None:
        row = self.db.execute("SELECT dev, ino, offset, head, head_len, last_time, folded_ns FROM sources "
                              "WHERE name = ?", (name,)).fetchone()
        started = time.time_ns()
        try:
            handle = open(log_path, "rb")
        except FileNotFoundError:
            handle = None
        except OSError as exc:
            raise StoreError(f"{log_path}: {exc.strerror}") from None
        st = os.fstat(handle.fileno()) if handle is not None else None
        if row is not None and (st is None or (row[0], row[1]) != (st.st_dev, st.st_ino)):
            # Moved away (rotated): follow the old file by its inode until it is gone.
            self.db.execute("INSERT OR IGNORE INTO sources SELECT ? || '@' || dev || ':' || ino, dev, ino, offset, "
                            "head, head_len, last_time, folded_ns FROM sources WHERE name = ?", (name, name))
            self.db.execute("DELETE FROM sources WHERE name = ?", (name,))
        moved_found = self._follow_moved(log_path, name, st, row[6] if row is not None else 0, result)
        if handle is None:
            return
        with handle:
            offset, after = 0, None
            if row is not None:
                dev, ino, old_offset, head, head_len, last_time, _ = row
                if (dev, ino) == (st.st_dev, st.st_ino):
                    if st.st_size >= old_offset and _head(handle, head_len) == head:
                        offset = old_offset
                    else:
                        log.info("%s was truncated or rewritten: reading it again, skipping check-ins up to %s",
                                 log_path, last_time)
                        after = last_time
                elif not moved_found:
                    log.warning("%s is another file than at the last fold and the previous one is not beside it "
                                "(what it got after byte %d is not folded): reading the new one, skipping "
                                "check-ins up to %s", log_path, old_offset, last_time)
                    after = last_time
            end, last_time = self._read(handle, offset, after, result)
            head_len = min(end, HEAD_BYTES)
            self.db.execute(
                "INSERT INTO sources (name, dev, ino, offset, head, head_len, last_time, folded_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET dev = excluded.dev, ino = excluded.ino, offset = excluded.offset, "
                "head = excluded.head, head_len = excluded.head_len, folded_ns = excluded.folded_ns, "
                "last_time = coalesce(max(excluded.last_time, sources.last_time), sources.last_time, "
                "excluded.last_time)",
                (name, st.st_dev, st.st_ino, end, _head(handle, head_len), head_len, last_time, started))

    def _follow_moved(self, log_path: Path, name: str, current: os.stat_result | None, since_ns: int,
                      result: FoldResult) -> bool:
        """Read what the moved-away files of ``log_path`` got since the last fold.

        Those it followed (by inode), and files beside it that it never saw but that were
        written since the last fold (several rotations between two folds; at the first fold,
        every rotated log beside it). True when the file the last fold read was found.
        """
        moved = self.db.execute("SELECT name, dev, ino, offset, head, head_len FROM sources "
                                "WHERE name > ? AND name < ?", (name + "@", name + "@\uffff")).fetchall()
        siblings: dict[tuple[int, int], tuple[Path, os.stat_result]] = {}
        try:
            for path in log_path.parent.iterdir():
                if path.name.startswith(log_path.name + ".") and not path.name.endswith(".gz"):
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):  # not a directory of old logs, a FIFO...
                        siblings[(st.st_dev, st.st_ino)] = (path, st)
        except OSError:
            pass
        if current is not None:
            siblings.pop((current.st_dev, current.st_ino), None)
        found = False
        known = set()
        for key, dev, ino, offset, head, head_len in moved:
            known.add((dev, ino))
            path, _ = siblings.get((dev, ino), (None, None))
            if path is None:  # compressed or deleted: nothing more can arrive there
                self.db.execute("DELETE FROM sources WHERE name = ?", (key,))
                continue
            with open(path, "rb") as old:
                if _head(old, head_len) != head or os.fstat(old.fileno()).st_size < offset:
                    self.db.execute("DELETE FROM sources WHERE name = ?", (key,))
                    continue
                end, _ = self._read(old, offset, None, result)
            self.db.execute("UPDATE sources SET offset = ? WHERE name = ?", (end, key))
            found = True
        unseen = [(st.st_mtime_ns, path, st) for ident, (path, st) in siblings.items()
                  if ident not in known and st.st_mtime_ns >= since_ns]
        for _, path, st in sorted(unseen):
            with open(path, "rb") as old:
                end, last = self._read(old, 0, None, result)
                head_len = min(end, HEAD_BYTES)
                self.db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                (f"{name}@{st.st_dev}:{st.st_ino}", st.st_dev, st.st_ino, end,
                                 _head(old, head_len), head_len, last, since_ns))
            log.info("%s: read %s, rotated since the last fold", log_path, path)
        return found

    def _read(self, handle: Any, offset: int, after: str | None, result: FoldResult) -> tuple[int, str | None]:
        """Fold complete lines from ``offset``; returns the offset after the last one and its time."""
        handle.seek(offset)
        last_time = None
        carry = b""
        while True:
            data = handle.read(CHUNK)
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                rows: list[tuple[Any, ...]] = []
                for raw in data[:cut].splitlines():
                    try:
                        entry = _loads(raw)
                    except ValueError:
                        entry = None
                    if type(entry) is not dict:
                        result.skipped += 1
                        continue
                    when = entry.get("time")
                    if isinstance(when, str):
                        if after is not None and when <= after:
                            result.skipped += 1
                            continue
                        if last_time is None or when > last_time:
                            last_time = when
                    result.lines += 1
                    row = _row(entry, when)
                    if row is not None:
                        rows.append(row)
                self._add_rows(rows)
                offset += cut
                result.bytes += cut
        return offset, last_time  # a partial last line (``carry``) waits for the next fold

    def add(self, entries: list[dict[str, Any]]) -> None:
        """Record check-ins (oldest first) in the current transaction."""
        self._add_rows([row for row in (_row(e, e.get("time")) for e in entries) if row is not None])

    def _add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Merge a batch of check-ins (``_row``'s tuples, oldest first) into the tables.

        The batch goes into a temporary table in one ``executemany``; the rest is set-based
        SQL (one statement per table), so the per-line work in Python is parsing and one tuple.
        Only when a MAC's reported version changes does SQLite call back into Python to
        compare versions.
        """
        if not rows:
            return
        db = self.db
        db.execute("DELETE FROM temp.batch")
        db.execute("DELETE FROM temp.per_mac")
        db.executemany("INSERT INTO temp.batch VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        # Looking a MAC's row up costs about as much as scanning 25 rows of `devices`.
        few = len(rows) * 25 < db.execute("SELECT count(*) FROM devices").fetchone()[0]
        updated = -1
        for statement in _FOLD:
            if statement is _NEW_DEVICES and updated == db.execute("SELECT count(*) FROM temp.per_mac").fetchone()[0]:
                continue  # the update found every MAC: none is new (saves a lookup per MAC)
            cursor = db.execute(statement.replace("{few}", "AND devices.mac IN (SELECT mac FROM temp.per_mac)"
                                                  if few else ""))
            if statement is _UPDATE_DEVICES:
                updated = cursor.rowcount

    def _apply_retention(self) -> None:
        if not self.retention_days:
            return
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        done = self.db.execute("SELECT value FROM meta WHERE key = 'retention_day'").fetchone()
        if done is not None and done[0] == today:
            return  # once a day is enough
        cutoff = (datetime.now(timezone.utc) - timedelta(days=self.retention_days)).strftime("%Y-%m-%d")
        self.db.execute("DELETE FROM checkins WHERE day < ?", (cutoff,))
        self.db.execute("DELETE FROM days WHERE day < ?", (cutoff,))
        self.db.execute("DELETE FROM fleet_days WHERE day < ?", (cutoff,))
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('retention_day', ?)", (today,))

    # -- reading ----------------------------------------------------------------------------

    def devices(self) -> dict[str, Seen]:
        """The latest state of every MAC that ever checked in."""
        query = f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices"
        return {row[0]: Seen(*row) for row in self.db.execute(query)}

    def history(self, mac: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest check-ins of one MAC, newest first (one index seek per day of history)."""
        cursor = self.db.execute(
            "SELECT c.time, c.version, c.target, c.decision, c.status, c.ip, c.client "
            f"FROM ({_DAYS}) AS d JOIN checkins AS c ON c.day = d.day AND c.mac = ? "
            "ORDER BY c.day DESC, c.time DESC LIMIT ?", (mac, limit))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def checks_per_day(self, mac: str) -> dict[str, int]:
        """Authenticated check-ins of one MAC per day, oldest first (one index seek per day of history)."""
        return dict(self.db.execute(f"SELECT d.day, count(*) FROM ({_DAYS}) AS d JOIN checkins AS c "
                                    f"ON c.day = d.day AND c.mac = ? WHERE d.day != '' AND {_AUTH} "
                                    "GROUP BY d.day ORDER BY d.day", (mac,)))

    def first_reported(self, mac: str) -> dict[str, str]:
        """When the MAC first reported each version."""
        return dict(self.db.execute("SELECT version, first_seen FROM versions WHERE mac = ? ORDER BY first_seen",
                                    (mac,)))

    def version_days(self, since: str | None = None) -> list[tuple[str, str, int]]:
        """(day, version, devices that reported it that day), oldest first. A device counts for the
        version it reported last that day (in the order check-ins were folded)."""
        self._count_stale_days(since or "")
        return list(self.db.execute("SELECT day, version, devices FROM fleet_days WHERE devices > 0 AND day >= ? "
                                    "AND version != '' ORDER BY day, version", (since or "",)))

    def _count_stale_days(self, since: str) -> None:
        """Count `fleet_days` again for the days since ``since`` that got check-ins since they were
        last counted (a fold only marks them: counting a day reads its check-ins, which the dashboard
        needs now and then, and a fold every few seconds should not)."""
        query = "SELECT day FROM days WHERE stale AND day >= ? AND day != ''"
        if self.db.execute(query, (since,)).fetchone() is None:
            return
        with self._transaction():
            for (day,) in self.db.execute(query, (since,)).fetchall():
                self.db.execute("DELETE FROM fleet_days WHERE day = ?", (day,))
                self.db.execute(
                    "INSERT INTO fleet_days SELECT ?1, version, count(*) FROM ("
                    f"  SELECT mac, version, max(rowid) FROM checkins WHERE day = ?1 AND {_AUTH} "
                    "   AND typeof(version) = 'text' GROUP BY mac) GROUP BY version", (day,))
                self.db.execute("UPDATE days SET stale = 0 WHERE day = ?", (day,))

    def offers(self, target: str) -> Iterator[Offer]:
        """Devices first offered ``target`` (as the answers spell it), with what they ran then."""
        for mac, when, old in self.db.execute("SELECT mac, first_offered, from_version FROM offers WHERE target = ?",
                                              (target,)):
            yield Offer(mac, when, old)

    # -- the fleet's targets, cached ----------------------------------------------------------

    def targets_for(self, key: str, now: datetime) -> bool:
        """Does ``targets`` hold the fleet of fingerprint ``key`` as it is at ``now``?"""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'targets'").fetchone()
        if row is None:
            return False
        try:
            saved = json.loads(row[0])
            start, until = (datetime.fromisoformat(t) if t else None for t in (saved["from"], saved["until"]))
        except (ValueError, KeyError, TypeError):
            return False
        return saved["key"] == key and (start is None or start <= now) and (until is None or now < until)

    def save_targets(self, key: str | None, span: tuple[datetime | None, datetime | None],
                     rows: Iterable[tuple[str, str | None, str | None]]) -> None:
        """Replace the cached targets: (mac, device_id, target version) valid for ``key`` over ``span``
        ([from, until), None for unbounded). ``key`` None: kept for no later call."""
        value = json.dumps({"key": key, "from": span[0] and span[0].isoformat(),
                            "until": span[1] and span[1].isoformat()})
        with self._transaction():
            self.db.execute("DELETE FROM targets")
            self.db.executemany("INSERT INTO targets VALUES (?, ?, ?)", rows)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('targets', ?)", (value,))

    def status(self, states: dict[str, str], select: Callable[[dict[str, str]], str] | None = None
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The devices of the cached fleet (MAC order), and the other MACs that checked in: MAC,
        device ID, target, state, last check, last version, last update, checks. The state: the
        last decision named by ``states`` (else as it is, else 'unknown'), or 'never seen'.

        ``select`` makes the select list instead, of the SQL of each of DeviceStatus's fields (name ->
        expression; ``in_fleet`` included): what the caller wants SQLite to compute per row (JSON, a
        line of a table) or over them (an aggregate)."""
        members, strangers = self._status_queries(states, select or (lambda columns: ", ".join(
            expression for name, expression in columns.items() if name != "in_fleet")))
        return self.db.execute(*members).fetchall(), self.db.execute(*strangers).fetchall()

    def _status_queries(self, states: dict[str, str],
                        select: Callable[[dict[str, str]], str]) -> list[tuple[str, list[str]]]:
        """The members' and the strangers' query, ``select`` making their select list of the columns."""
        names = " ".join("WHEN ? THEN ?" for _ in states)
        state = f"coalesce(CASE d.last_decision {names} END, nullif(d.last_decision, ''), 'unknown')" if states \
            else "coalesce(nullif(d.last_decision, ''), 'unknown')"
        params = [value for pair in states.items() for value in pair]
        queries = []
        stranger = f"'not in fleet (' || {state} || ')'"
        for sql, in_fleet, mac, shown in ((_STATUS, "json('true')", "t.mac", state),
                                          (_STRANGERS, "json('false')", "d.mac", stranger)):
            columns = {**_STATUS_COLUMNS, "mac": mac, "in_fleet": in_fleet,
                       "state": _STATUS_COLUMNS["state"].format(state=shown)}
            queries.append((sql.format(columns=select(columns)), params))
        return queries

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM checkins").fetchone()[0]


def _head(handle: Any, length: int) -> str:
    position = handle.tell()
    handle.seek(0)
    data = handle.read(length)
    handle.seek(position)
    return hashlib.sha256(data).hexdigest()


def open_store(config: Any) -> Store:
    """The configured store (``checkin_db``, ``checkin_retention_days``)."""
    return Store(config.path("checkin_db"), config.checkin_retention_days)


def folded(config: Any, extra_logs: tuple[Path, ...] = ()) -> Store:
    """The configured store, with the shim's log and ``extra_logs`` (exports) folded in."""
    store = open_store(config)
    try:
        _fold_configured(store, config, extra_logs)
    except BaseException:
        store.close()
        raise
    return store


def _fold_configured(store: Store, config: Any, extra_logs: tuple[Path, ...]) -> FoldResult:
    """Fold the shim's log, then ``extra_logs``, into ``store``: what they added, together."""
    for path in extra_logs:
        if not path.is_file():
            raise StoreError(f"{path}: no such check-in log")
    logs = [(config.path("checkin_log"), "checkin_log")] if config.checkin_log else []
    total = FoldResult()
    for path, name in logs + [(path, None) for path in extra_logs]:
        result = store.fold(path, name)
        total.lines += result.lines
        total.skipped += result.skipped
        total.bytes += result.bytes
    return total


def fold_logs(config: Any, extra_logs: tuple[Path, ...] = ()) -> FoldResult:
    """Fold the shim's log and ``extra_logs`` into the configured store, and close it (`otapub fold`)."""
    started = time.monotonic()
    with open_store(config) as store:
        result = _fold_configured(store, config, extra_logs)
    result.seconds = time.monotonic() - started
    return result
