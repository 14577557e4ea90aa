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
3. The shim's log gets a few lines which a first `status` folds (the log is known to the store),
   then ``--new`` new check-ins (one per device, the next day), written as the shim writes them.
4. Timed: `otapub status --json` as a subprocess (the CLI, loading the fleet YAML, folding the
   new lines, reading 100,000 device rows, printing them), then again with nothing new; and
   in-process the fold alone and the store read alone.

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
    db.execute("""
        INSERT INTO daily SELECT day, mac, 1, version FROM checkins ORDER BY rowid  -- already (day, MAC)
    """)
    db.execute("INSERT INTO fleet_days SELECT day, version, count(*) FROM daily GROUP BY day, version")
    db.execute("INSERT INTO days SELECT DISTINCT day FROM fleet_days")
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
        for i in range(10):
            d = fleet.device(i)
            log.append({"time": f"{day}T00:00:{i:02d}.000000Z", "mac": d["mac"], "version": "1.0.0",
                        "target": "1.0.0", "decision": "up_to_date", "status": 200, "client": "192.0.2.1"})
        cold, _ = status_cli(root)  # the store learns the log and the fleet's targets
        print(f"first status (folds 10 lines; loads the fleet YAML, keeps its targets in the store): {cold:.2f}s")

        versions = {r["name"]: r["version"] for r in fleet.releases}
        started = time.perf_counter()
        for i in range(args.new):
            d = fleet.device(i % args.devices)
            v = versions[d["release"]]
            log.append({"time": f"{day}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.000000Z",
                        "mac": d["mac"], "device_id": d["device_id"], "hardware": "FireBeetle 2 ESP32-C6",
                        "version": v, "target": v, "decision": "up_to_date", "status": 200,
                        "client": "192.0.2.1"})
        print(f"log: {args.new:,} new check-ins appended by CheckinLog in {time.perf_counter() - started:.1f}s "
              f"({log_path.stat().st_size / 1e6:.1f} MB)")

        busy = wait_quiet(30)
        seconds, count = status_cli(root)
        again, _ = status_cli(root)
        print(f"otapub status --json, {args.new:,} new lines: {seconds:.2f}s ({count:,} rows; machine "
              f"{busy:.0%} busy before)")
        print(f"otapub status --json, nothing new: {again:.2f}s")

        # The parts, in-process: the same fold on a copy of the state, and the read alone.
        with Store(store_path) as store:
            started = time.perf_counter()
            store.devices()
            read = time.perf_counter() - started
        print(f"store read alone (100k device rows): {read * 1000:.0f} ms")
        for i in range(args.new):
            d = fleet.device(i % args.devices)
            log.append({"time": f"{day}T23:59:59.{i:06d}Z", "mac": d["mac"], "version": "1.0.0",
                        "target": "1.0.0", "decision": "up_to_date", "status": 200, "client": "192.0.2.1"})
        with Store(store_path) as store:
            started = time.perf_counter()
            result = store.fold(log_path, "checkin_log")
            fold = time.perf_counter() - started
            total = store.count()
        print(f"fold alone: {result.lines:,} lines in {fold * 1000:.0f} ms "
              f"({fold / max(result.lines, 1) * 1e6:.1f} us per line; store now {total:,} check-ins)")
        verdict = "PASS" if seconds <= 1.0 else "FAIL"
        print(f"{verdict}: status with {rows:,} historical + {args.new:,} new check-ins: {seconds:.2f}s "
              f"(goal <= 1 s; ratio {seconds / 1.0:.2f})")
        return 0 if verdict == "PASS" else 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
