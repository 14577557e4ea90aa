"""`otapub status` on a year-like history: 10 M check-ins in the store, 100k new lines in the log.

    python bench/bench_status.py [--devices 100000] [--days 100] [--new 100000] [--keep DIR]
                                 [--history FILE]

It works in a temporary folder on /dev/shm when there is one (else the system's temp folder).

1. A fleet from bench/fleetgen.py (``--devices``, one release pinned per device).
2. The history is written straight into the check-in store, in SQLite, not through the log:
   ``--days`` x ``--devices`` check-ins (one per device per day; by default 100 x 100,000 =
   10 M), each device moving from an older version to its release's on a day of its own. A
   recursive CTE produces the rows inside SQLite (no Python loop per row); the indexes and the
   per-version-per-day counts are built after the rows (as a bulk load should), then the
   per-device tables (devices, versions, offers) from the fleet.
3. The shim's log gets a few lines which a first `status` folds (the log is known to the store).
4. As deployed: `otapub serve` folds its log in the background (``checkin_fold_seconds``); here
   the same loop runs alone (`otapub fold --every 1`, what serve starts) while ``--new`` new
   check-ins (one per device, the next day, as the shim writes them) are appended in ten bursts.
   Once it has caught up, timed: `otapub status --json` (the CLI, folding what is left, reading
   100,000 device rows, printing them). This is the goal's measurement.
5. Without a folder (a Worker's exports, serve stopped for a day): ``--new`` more lines, and
   `status` folds them itself; then `status` with nothing new.
6. In-process: the fold alone of ``--new`` lines, against a floor that does only what no fold can
   avoid (parse each line, hand its fields to SQLite, append the history row, update the
   device's row; rolled back), both on the same store in one run: the ratio is the fold's overhead.

Goal (issue 13): status <= 1 s with 10 M historical check-ins and 100k new ones, in time
proportional to the new lines, not to the history.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python bench/bench_status.py` from a checkout
    sys.path.insert(0, str(ROOT))

from bench.fleetgen import SECRET, generate  # noqa: E402
from bench.machine import describe, wait_quiet  # noqa: E402
from otapub.checkins import CheckinLog  # noqa: E402
from otapub.checkinstore import Store  # noqa: E402

FIRST_DAY = "2026-01-01"


def history(store_path: Path, fleet, days: int) -> tuple[int, float]:
    """Write ``days`` x devices check-ins into a fresh store, in SQL; returns (rows, seconds)."""
    started = time.perf_counter()
    Store(store_path).close()  # the schema, as otapub creates it
    db = sqlite3.connect(store_path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    indexes = [row[0] for row in db.execute("SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
                                            "AND sql IS NOT NULL")]
    for kind, name in db.execute("SELECT type, name FROM sqlite_master WHERE type IN ('index', 'trigger') "
                                 "AND sql IS NOT NULL").fetchall():
        db.execute(f"DROP {kind} {name}")
    db.execute("BEGIN")
    versions = {r["name"]: r["version"] for r in fleet.releases}
    db.execute("CREATE TEMP TABLE fleet (mac TEXT PRIMARY KEY, version TEXT, old TEXT, switch INTEGER, at TEXT)")
    db.executemany("INSERT INTO fleet VALUES (?, ?, ?, ?, ?)",  # `at`: the device's time of day, fixed
                   ((d["mac"], versions[d["release"]], "0.9.0", i % days, f"T{i % 24:02d}:{i % 60:02d}:00.000000Z")
                    for i, d in ((i, fleet.device(i)) for i in range(fleet.devices))))
    # Days computed once each; devices in MAC order, so rows come in (day, MAC) order and the
    # (day, MAC) index and the per-day table are built from sorted input.
    db.execute(f"""
        INSERT INTO checkins
        WITH RECURSIVE days(n, day) AS (SELECT 0, date('{FIRST_DAY}') UNION ALL
                                        SELECT n + 1, date('{FIRST_DAY}', '+' || (n + 1) || ' days') FROM days
                                        WHERE n + 1 < {days})
        SELECT day, day || at, mac, CASE WHEN n < switch THEN old ELSE version END,
               version, CASE WHEN n < switch THEN 'update_offered' ELSE 'up_to_date' END, 200, '192.0.2.1', NULL
        FROM days CROSS JOIN fleet ORDER BY n, mac
    """)
    db.execute("INSERT INTO fleet_days SELECT day, version, count(*) FROM checkins GROUP BY day, version")
    db.execute("INSERT INTO days (day) SELECT DISTINCT day FROM fleet_days")
    db.execute(f"""
        INSERT INTO devices
        SELECT mac, date('{FIRST_DAY}') || 'T00:00:00.000000Z', date('{FIRST_DAY}', '+{days - 1} days') ||
               'T12:00:00.000000Z', version, version, 'up_to_date',
               CASE WHEN switch > 0 THEN date('{FIRST_DAY}', '+' || switch || ' days') || 'T12:00:00.000000Z' END,
               'PanicAlarm_' || substr(replace(mac, ':', ''), 9), 'FireBeetle 2 ESP32-C6', '192.0.2.1', NULL,
               {days}, 0
        FROM fleet
    """)
    db.execute(f"""
        INSERT INTO versions SELECT mac, old, date('{FIRST_DAY}') || 'T00:00:00.000000Z' FROM fleet WHERE switch > 0
        UNION ALL SELECT mac, version, date('{FIRST_DAY}', '+' || switch || ' days') || 'T12:00:00.000000Z' FROM fleet
    """)
    db.execute(f"""
        INSERT INTO offers SELECT mac, version, date('{FIRST_DAY}') || 'T00:00:00.000000Z', old FROM fleet
        WHERE switch > 0
    """)
    db.execute("COMMIT")
    for sql in indexes:
        db.execute(sql)
    rows = db.execute("SELECT count(*) FROM checkins").fetchone()[0]
    db.close()
    return rows, time.perf_counter() - started


def status_cli(root: Path) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTA_SERVER_SHARED_SECRET_KEY": SECRET}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "otapub", "--config", str(root / "config.json"), "status", "--json"],
                          capture_output=True, env=env, timeout=600, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"otapub status failed: {done.stderr.decode()[-2000:]}")
    return seconds, len(json.loads(done.stdout))


class Lines:
    """Check-ins as the shim writes them, one per device in turn, each a second after the last."""

    def __init__(self, fleet, log: CheckinLog):
        self.fleet, self.log, self.count = fleet, log, 0
        self.versions = {r["name"]: r["version"] for r in fleet.releases}

    def append(self, day: str, count: int) -> None:
        for _ in range(count):
            i = self.count
            d = self.fleet.device(i % self.fleet.devices)
            v = self.versions[d["release"]]
            when = f"{day}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z"
            self.log.append({"time": when,
                             "ip": "192.0.2.1", "client": "seed", "mac": d["mac"], "device_id": d["device_id"],
                             "hardware": "FireBeetle 2 ESP32-C6", "version": v, "target": v,
                             "decision": "up_to_date", "status": 200})
            self.count += 1


def start_folder(root: Path) -> subprocess.Popen:
    """The loop `otapub serve` runs beside its workers, alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTA_SERVER_SHARED_SECRET_KEY": SECRET}
    return subprocess.Popen([sys.executable, "-m", "otapub", "--config", str(root / "config.json"), "fold",
                             "--every", "1"], env=env, stdout=subprocess.DEVNULL)


def wait_folded(store_path: Path, log_path: Path, deadline: float) -> float:
    """Seconds until the store has folded the whole log (polled; at most ``deadline``)."""
    started = time.perf_counter()
    size = log_path.stat().st_size
    while time.perf_counter() - started < deadline:
        with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=60) as db:
            row = db.execute("SELECT offset FROM sources WHERE name = 'checkin_log'").fetchone()
        if row is not None and row[0] >= size:
            return time.perf_counter() - started
        time.sleep(0.2)
    raise SystemExit(f"the folder did not fold {log_path} within {deadline:.0f}s")


def fold_floor(store_path: Path, log_path: Path) -> float:
    """What no fold of the log's unfolded lines can avoid, timed and rolled back: parse each line, hand
    its fields to SQLite, append its history row, update its device's row."""
    import orjson

    db = sqlite3.connect(store_path, isolation_level=None)
    db.execute("PRAGMA cache_size=-262144")
    db.execute("PRAGMA temp_store=MEMORY")
    offset = db.execute("SELECT offset FROM sources WHERE name = 'checkin_log'").fetchone()[0]
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    started = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TEMP TABLE floor (day, time, mac, version, target, decision, status, ip, client)")
    fields = ("time", "mac", "version", "target", "decision", "status", "ip", "client")
    db.executemany("INSERT INTO temp.floor VALUES (substr(?1, 1, 10), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                   ([entry.get(name) for name in fields] for entry in map(orjson.loads, data.splitlines())))
    db.execute("INSERT INTO checkins SELECT * FROM temp.floor")
    db.execute("UPDATE devices SET last_check = f.time, checks = checks + 1 FROM temp.floor AS f "
               "WHERE devices.mac = f.mac")
    seconds = time.perf_counter() - started
    db.execute("ROLLBACK")
    db.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100, help="days of history (one check-in per device per day)")
    parser.add_argument("--new", type=int, default=100_000, help="new check-ins in the log")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument("--history", type=Path,
                        help="a store holding the generated history: copied when it exists (same --devices and "
                             "--days), else written there after generating it (saves ~2 minutes per run)")
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    root = args.keep or Path(tempfile.mkdtemp(prefix="otapub-bench-status-", dir=shm if shm.is_dir() else None))
    try:
        print(json.dumps(describe()))
        started = time.perf_counter()
        fleet = generate(root, devices=args.devices, per_file=1000, releases=2, size=4096)
        print(f"fleet: {args.devices} devices in {len(fleet.files)} files [{time.perf_counter() - started:.1f}s]")
        store_path = root / "state/checkins.sqlite"
        if args.history is not None and args.history.is_file():
            started = time.perf_counter()
            store_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.history, store_path)
            with sqlite3.connect(store_path) as db:
                rows = db.execute("SELECT count(*) FROM checkins").fetchone()[0]
            seconds = time.perf_counter() - started
            print(f"history: {rows:,} check-ins copied from {args.history} in {seconds:.1f}s")
        else:
            rows, seconds = history(store_path, fleet, args.days)
            size = store_path.stat().st_size
            print(f"history: {rows:,} check-ins written into the store in {seconds:.1f}s ({size / 1e9:.2f} GB)")
            if args.history is not None:
                args.history.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(store_path, args.history)

        log_path = root / "state/checkins.jsonl"
        log = CheckinLog(log_path)
        day = f"2026-{(args.days // 31) + 1:02d}-28"  # after the history (any later day would do)
        lines = Lines(fleet, log)
        lines.append(day, 10)
        cold, _ = status_cli(root)  # the store learns the log and the fleet's targets
        print(f"first status (folds 10 lines; loads the fleet YAML, keeps its targets in the store): {cold:.2f}s")

        # 4. As deployed: the log folded in the background while check-ins arrive.
        folder = start_folder(root)
        try:
            started = time.perf_counter()
            for _ in range(10):
                lines.append(day, args.new // 10)
            appended = time.perf_counter() - started
            caught_up = wait_folded(store_path, log_path, deadline=600)
            print(f"log: {args.new:,} new check-ins appended by CheckinLog in {appended:.1f}s "
                  f"({log_path.stat().st_size / 1e6:.1f} MB); the folder caught up {caught_up:.1f}s after the "
                  "last one")
            busy = wait_quiet(30)
            timings = [status_cli(root) for _ in range(3)]
        finally:
            folder.terminate()
            folder.wait(timeout=60)
        seconds, count = min(timings)
        print(f"otapub status --json with the folder running, {args.new:,} new check-ins: {seconds:.2f}s best of 3 "
              f"({', '.join(f'{t:.2f}' for t, _ in timings)}; {count:,} rows; machine {busy:.0%} busy before)")

        # 5. Without a folder: status folds the new lines itself.
        lines.append(day, args.new)
        busy = wait_quiet(30)
        itself, _ = status_cli(root)
        again, _ = status_cli(root)
        print(f"otapub status --json folding {args.new:,} new lines itself (no folder): {itself:.2f}s "
              f"(machine {busy:.0%} busy before)")
        print(f"otapub status --json, nothing new: {again:.2f}s")

        # 6. The fold alone, against the floor, on the same store.
        lines.append(day, args.new)
        floor = fold_floor(store_path, log_path)
        with Store(store_path) as store:
            started = time.perf_counter()
            result = store.fold(log_path, "checkin_log")
            fold = time.perf_counter() - started
            total = store.count()
        print(f"fold alone: {result.lines:,} lines in {fold * 1000:.0f} ms "
              f"({fold / max(result.lines, 1) * 1e6:.1f} us per line; store now {total:,} check-ins)")
        print(f"fold floor (parse, bind, history row, device row; rolled back): {floor * 1000:.0f} ms; "
              f"fold/floor {fold / floor:.2f}x")
        verdict = "PASS" if seconds <= 1.0 else "FAIL"
        print(f"{verdict}: status with {rows:,} historical + {args.new:,} new check-ins (folder running): "
              f"{seconds:.2f}s (goal <= 1 s; ratio {seconds / 1.0:.2f}); folding them itself {itself:.2f}s")
        return 0 if verdict == "PASS" else 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
