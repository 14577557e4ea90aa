"""The check-in store: incremental folds of the check-in log, rotation, truncation, retention."""

import json
import os
import sqlite3
from pathlib import Path

import pytest

from otapub.checkins import CheckinLog
from otapub.checkinstore import Store, StoreError
from otapub.mac import normalize_mac

MAC = "AA:BB:CC:DD:EE:FF"
FIXTURES = Path(__file__).parent / "fixtures"
OTHER = "11:22:33:44:55:66"


def entry(time, mac=MAC, version="1.0.0", decision="up_to_date", target="1.0.0", **extra):
    return {"time": time, "mac": mac, "device_id": "dev", "hardware": "hw", "version": version, "target": target,
            "decision": decision, "status": 200, "client": "192.0.2.7", **extra}


def write(path, *entries, partial=b""):
    with open(path, "ab") as handle:
        for e in entries:
            handle.write(json.dumps(e).encode() + b"\n")
        handle.write(partial)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "state" / "checkins.sqlite") as opened:
        yield opened


def test_fold_is_incremental_and_waits_for_a_partial_line(tmp_path, store):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z", version="1.0.0", decision="update_offered", target="1.1.0"),
          entry("2026-11-01T09:00:00Z", mac=OTHER))
    assert store.fold(log).lines == 2
    assert store.fold(log).lines == 0  # nothing new: nothing counted twice
    half = json.dumps(entry("2026-11-02T08:00:00Z", version="1.1.0")).encode()
    write(log, partial=half[:20])
    assert store.fold(log).lines == 0  # a writer mid-line: the line waits
    write(log, partial=half[20:] + b"\nnot json\n")
    result = store.fold(log)
    assert (result.lines, result.skipped) == (1, 1)
    seen = store.devices()[MAC]
    assert seen.checks == 2 and seen.last_version == "1.1.0" and seen.last_update == "2026-11-02T08:00:00Z"
    assert seen.first_seen == "2026-11-01T08:00:00Z" and seen.last_check == "2026-11-02T08:00:00Z"
    assert seen.last_ip == "192.0.2.7" and seen.last_client is None
    assert store.first_reported(MAC) == {"1.0.0": "2026-11-01T08:00:00Z", "1.1.0": "2026-11-02T08:00:00Z"}
    assert store.checks_per_day(MAC) == {"2026-11-01": 1, "2026-11-02": 1}
    [offer] = store.offers("1.1.0")
    assert (offer.mac, offer.first_offered, offer.from_version) == (MAC, "2026-11-01T08:00:00Z", "1.0.0")
    assert store.count() == 3 and [h["time"] for h in store.history(MAC)] == ["2026-11-02T08:00:00Z",
                                                                               "2026-11-01T08:00:00Z"]


def test_fold_state_survives_reopening_the_store(tmp_path):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z"))
    with Store(tmp_path / "s.sqlite") as first:
        first.fold(log)
    write(log, entry("2026-11-01T09:00:00Z"))
    with Store(tmp_path / "s.sqlite") as second:
        assert second.fold(log).lines == 1
        assert second.devices()[MAC].checks == 2


def test_rotation_by_rename_loses_nothing_and_counts_nothing_twice(tmp_path, store):
    path = tmp_path / "checkins.jsonl"
    writer = CheckinLog(path)
    writer.append(entry("2026-11-01T08:00:00Z"))
    store.fold(path)
    writer.append(entry("2026-11-01T09:00:00Z"))  # not folded yet when the log is moved
    os.rename(path, tmp_path / "checkins.jsonl.1")
    writer.append(entry("2026-11-01T10:00:00Z"))  # a worker still writing to the moved file
    writer.reopen()  # SIGHUP / the once-a-second check
    writer.append(entry("2026-11-01T11:00:00Z"))
    assert path.is_file()
    assert store.fold(path).lines == 3
    writer2 = CheckinLog(tmp_path / "checkins.jsonl.1")  # a slow worker's last line to the old file
    writer2.append(entry("2026-11-01T10:30:00Z"))
    assert store.fold(path).lines == 1
    assert store.fold(path).lines == 0
    assert store.devices()[MAC].checks == 5


def test_a_directory_or_fifo_named_like_a_rotated_log_is_not_read(tmp_path, store):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z"))
    (tmp_path / "checkins.jsonl.old").mkdir()  # where someone keeps old logs
    os.mkfifo(tmp_path / "checkins.jsonl.pipe")  # opened, it would block the fold for good
    assert store.fold(log).lines == 1
    write(log, entry("2026-11-01T09:00:00Z"))
    assert store.fold(log).lines == 1 and store.devices()[MAC].checks == 2


def test_the_shims_own_rotation_by_size_and_day(tmp_path, store):
    path = tmp_path / "checkins.jsonl"
    writer = CheckinLog(path, max_bytes=400)
    for hour in range(10):
        writer.append(entry(f"2026-11-01T{hour:02d}:00:00Z"))
        if hour == 4:
            store.fold(path)
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkins.jsonl."))
    assert len(rotated) >= 3 and all(os.path.getsize(tmp_path / name) <= 400 for name in rotated)
    store.fold(path)
    assert store.devices()[MAC].checks == 10
    daily = CheckinLog(tmp_path / "daily.jsonl", daily=True)
    daily.append(entry("2026-11-01T00:00:00Z"))
    daily._day -= 1  # the file was started yesterday
    daily.append(entry("2026-11-02T00:00:00Z"))
    assert sorted(p.name.split(".")[0] for p in tmp_path.iterdir() if p.name.startswith("daily")) == ["daily"] * 2


def test_truncated_or_regenerated_log_is_not_counted_twice(tmp_path, store):
    export = tmp_path / "worker.jsonl"
    write(export, entry("2026-11-01T08:00:00Z"), entry("2026-11-01T09:00:00Z"))
    assert store.fold(export).lines == 2
    export.unlink()  # regenerated export: a new file, overlapping the old
    write(export, entry("2026-11-01T08:00:00Z"), entry("2026-11-01T09:00:00Z"), entry("2026-11-01T10:00:00Z"))
    assert store.fold(export).lines == 1
    with open(export, "r+b") as handle:  # truncated in place (copytruncate), then written again
        handle.truncate(0)
    write(export, entry("2026-11-01T11:00:00Z"))
    assert store.fold(export).lines == 1
    assert store.devices()[MAC].checks == 4


def test_versions_over_time_count_devices_per_day(tmp_path, store):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z", version="1.0.0"), entry("2026-11-01T08:00:00Z", mac=OTHER),
          entry("2026-11-01T20:00:00Z", version="1.1.0"),  # updated during the day: counted under 1.1.0
          entry("2026-11-02T08:00:00Z", version="1.1.0"),
          entry("2026-11-02T09:00:00Z", mac="DE:AD:BE:EF:00:01", decision="auth_failed", version="9.9"))
    store.fold(log)
    assert store.version_days() == [("2026-11-01", "1.0.0", 1), ("2026-11-01", "1.1.0", 1),
                                    ("2026-11-02", "1.1.0", 1)]
    stranger = store.devices()["DE:AD:BE:EF:00:01"]
    assert stranger.auth_failures == 1 and stranger.last_version is None


def test_client_protocol_is_stored_when_logged(tmp_path, store):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z", client="httpupdate", ip="192.0.2.9"),
          entry("2026-11-01T09:00:00Z", client="2001:db8::1"))  # today's shim: the address as `client`
    store.fold(log)
    seen = store.devices()[MAC]
    assert seen.last_client == "httpupdate" and seen.last_ip == "2001:db8::1"
    assert [h["client"] for h in store.history(MAC)] == [None, "httpupdate"]


def test_retention_drops_old_history_but_keeps_device_state(tmp_path):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2000-01-01T00:00:00Z"), entry("2099-01-01T00:00:00Z", version="1.1.0"))
    with Store(tmp_path / "s.sqlite", retention_days=30) as store:
        store.fold(log)
        assert store.count() == 1 and store.checks_per_day(MAC) == {"2099-01-01": 1}
        assert store.devices()[MAC].checks == 2 and store.devices()[MAC].first_seen == "2000-01-01T00:00:00Z"


def test_a_file_that_is_no_store_is_a_clean_error(tmp_path):
    bad = tmp_path / "s.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable check-in store"):
        Store(bad)


@pytest.mark.parametrize("user_version", [0, 1])
def test_a_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path, user_version):
    foreign = tmp_path / "app.sqlite"
    db = sqlite3.connect(foreign)
    db.executescript(f"CREATE TABLE devices (x); CREATE TABLE other (y); PRAGMA user_version={user_version};")
    db.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a check-in store .its tables: devices, other.; set checkin_db"):
        Store(foreign)
    assert foreign.read_bytes() == before and not list(tmp_path.glob("app.sqlite-*"))


def test_odd_lines_are_skipped_or_read_as_missing_fields(tmp_path, store):
    """A hand-made or foreign log: binary garbage, non-UTF-8, a huge line, fields of other types."""
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z"))
    with open(log, "ab") as handle:
        handle.write(bytes(range(14, 256)) * 16 + b"\n")
        handle.write(b'{"time":"2026-11-01T09:00:00Z","mac":"' + MAC.encode() + b'","version":"1.\xff"}\n')
        handle.write(b'{"pad":"' + b"x" * (40 << 20) + b'"}\n')  # larger than a fold's chunk
    write(log, {"time": 12345, "mac": MAC, "version": [1], "decision": {"a": 1}, "status": "x", "target": {"x": 1},
                "device_id": {"a": 1}, "hardware": [1], "ip": 5},
          {"time": "2026-11-01T10:00:00Z", "mac": MAC, "version": 1.5, "decision": "update_offered",
           "target": ["x"], "status": 10**30},
          {"time": "2026-11-01T11:00:00Z", "mac": 123})
    result = store.fold(log)
    assert (result.lines, result.skipped) == (5, 2)
    seen = store.devices()[MAC]
    assert seen.checks == 3 and seen.last_version == "1.0.0" and seen.last_check == "2026-11-01T10:00:00Z"
    assert seen.device_id == "dev" and seen.hardware == "hw" and seen.last_decision == "update_offered"
    assert list(store.offers("1.0.0")) == [] and store.count() == 3


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_serve_reopens_a_moved_log_on_sighup_and_nothing_is_lost(example, server):
    """logrotate's way: move the log, SIGHUP `otapub serve`; every check-in reaches the store once."""
    import signal
    import time

    from conftest import SECRET, Served

    from otapub.checkinstore import open_store
    from otapub.tokens import djb2_5381

    assert example.cli("build").exit_code == 0
    served = Served(example, workers=2, server=server)
    token = {"X-Device-Auth": djb2_5381("AABBCCDDEEFF", SECRET)}
    query = ("/api/firmware?device_id=PanicAlarm_EEFF&hardware=FireBeetle+2+ESP32-C6&version=1.3.{}"
             "&mac=AA:BB:CC:DD:EE:FF")
    log = example.root / "state/checkins.jsonl"
    try:
        for n in range(5):
            assert served.request(query.format(n), token)[0] == 200
        with open_store(example.config()) as store:
            store.fold(log, "checkin_log")
        for n in range(5, 8):
            assert served.request(query.format(n), token)[0] == 200
        os.rename(log, example.root / "state/checkins.jsonl.1")
        for n in range(8, 10):  # before the signal: still written to the moved file
            assert served.request(query.format(n), token)[0] == 200
        served.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        n = 10
        while not log.exists():  # the new workers (or the once-a-second check) open a new log
            assert time.monotonic() < deadline, "the log was not reopened"
            assert served.request(query.format(n), token)[0] == 200
            n += 1
        for k in range(n, n + 3):
            assert served.request(query.format(k), token)[0] == 200
        n += 2  # the last version sent
    finally:
        served.stop()
    with open_store(example.config()) as store:
        store.fold(log, "checkin_log")
        assert store.fold(log, "checkin_log").lines == 0
        seen = store.devices()["AA:BB:CC:DD:EE:FF"]
        assert seen.checks == n + 1
        assert sorted(store.first_reported("AA:BB:CC:DD:EE:FF")) == sorted(f"1.3.{i}" for i in range(n + 1))


def test_one_fold_merges_many_lines_of_a_mac_in_log_order(tmp_path, store):
    """A batch of several lines per MAC: the last of each, the first of each version, in log order."""
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z", version="1.0.0"))
    store.fold(log)
    write(log, entry("2026-11-02T08:00:00Z", version="1.2.0", decision="update_offered", target="1.3.0",
                     client="seed", ip="192.0.2.8"),
          entry("2026-11-02T09:00:00Z", version="1.1.0", device_id="", hardware=None),
          entry("2026-11-02T10:00:00Z", version="1.3.0", client=""),
          entry("2026-11-02T11:00:00Z", version="1.3.0", decision="up_to_date"),
          entry("2026-11-02T12:00:00Z", version="9.9.9", decision="auth_failed", target=None, device_id="x"),
          entry("2026-11-02T13:00:00Z", mac=OTHER, version=7))
    assert store.fold(log).lines == 6
    seen = store.devices()[MAC]
    assert (seen.first_seen, seen.last_check, seen.last_update) == (
        "2026-11-01T08:00:00Z", "2026-11-02T12:00:00Z", "2026-11-02T10:00:00Z")  # 1.1.0 -> 1.3.0 went up last
    assert (seen.last_version, seen.last_decision, seen.last_target, seen.device_id) == (
        "1.3.0", "auth_failed", "1.0.0", "dev")  # what an auth failure claims is not news
    assert (seen.last_ip, seen.last_client, seen.checks, seen.auth_failures) == ("192.0.2.7", "seed", 6, 1)
    assert store.checks_per_day(MAC) == {"2026-11-01": 1, "2026-11-02": 4}  # an auth failure is not a check
    assert store.first_reported(MAC) == {"1.0.0": "2026-11-01T08:00:00Z", "1.2.0": "2026-11-02T08:00:00Z",
                                         "1.1.0": "2026-11-02T09:00:00Z", "1.3.0": "2026-11-02T10:00:00Z"}
    assert [(o.mac, o.from_version) for o in store.offers("1.3.0")] == [(MAC, "1.2.0")]
    assert store.version_days() == [("2026-11-01", "1.0.0", 1), ("2026-11-02", "1.3.0", 1)]
    assert store.devices()[OTHER].last_version is None  # not a version string




def test_a_store_of_schema_1_is_migrated_in_place(tmp_path):
    """Schema 1: `devices` a rowid table, `daily` kept per MAC and day by every fold (with triggers).
    Opening migrates it in place, every device row and every day's count kept, and folds go on."""
    path, log = tmp_path / "checkins.sqlite", tmp_path / "checkins.jsonl"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript((FIXTURES / "checkinstore-schema-1.sql").read_text() + "PRAGMA user_version=1;")
    db.executescript(f"""
        INSERT INTO devices VALUES ('{MAC}', '2026-11-01T08:00:00Z', '2026-11-01T08:00:00Z', '1.0.0', '1.0.0',
            'up_to_date', NULL, 'dev', 'hw', '192.0.2.7', 'seed', 1, 0);
        INSERT INTO checkins VALUES ('2026-11-01', '2026-11-01T08:00:00Z', '{MAC}', '1.0.0', '1.0.0', 'up_to_date',
            200, '192.0.2.7', 'seed');
        INSERT INTO days VALUES ('2026-11-01');
        INSERT INTO daily VALUES ('2026-11-01', '{MAC}', 1, '1.0.0');  -- the trigger counts fleet_days
        INSERT INTO versions VALUES ('{MAC}', '1.0.0', '2026-11-01T08:00:00Z');
    """)
    db.close()
    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
        sql = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'devices'").fetchone()[0]
        assert sql.endswith("WITHOUT ROWID")
        assert store.db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'daily%'").fetchall() == []
        assert store.devices()[MAC].checks == 1 and store.devices()[MAC].device_id == "dev"
        assert store.version_days() == [("2026-11-01", "1.0.0", 1)]
        assert store.checks_per_day(MAC) == {"2026-11-01": 1}
        write(log, entry("2026-11-02T08:00:00Z", version="1.1.0"), entry("2026-11-02T09:00:00Z", mac=OTHER))
        assert store.fold(log).lines == 2
        assert store.devices()[MAC].last_version == "1.1.0" and store.devices()[MAC].checks == 2
        assert store.version_days() == [("2026-11-01", "1.0.0", 1), ("2026-11-02", "1.0.0", 1),
                                        ("2026-11-02", "1.1.0", 1)]
        assert store.checks_per_day(MAC) == {"2026-11-01": 1, "2026-11-02": 1}
    with Store(path) as store:  # opened again: nothing left to migrate
        assert store.devices()[MAC].last_version == "1.1.0"


def _open_at_once(path, barrier, results):
    barrier.wait()
    try:
        with Store(path) as store:
            results.put(store.db.execute("SELECT count(*) FROM devices").fetchone()[0])
    except StoreError as exc:
        results.put(str(exc))


def test_processes_opening_a_store_of_schema_1_at_once_all_get_it_migrated(tmp_path):
    """Several processes (serve's folding process, `otapub status`, a cron `otapub fold`) opening a store of
    schema 1 at the same moment: one migrates it, the others wait and use it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(15):
        path = tmp_path / f"checkins-{round_}.sqlite"
        db = sqlite3.connect(path, isolation_level=None)
        db.executescript((FIXTURES / "checkinstore-schema-1.sql").read_text() + "PRAGMA user_version=1;")
        db.close()
        barrier, results = context.Barrier(6), context.Queue()
        processes = [context.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(6)]
        for process in processes:
            process.start()
        failures += [answer for answer in (results.get(timeout=60) for _ in processes) if answer != 0]
        for process in processes:
            process.join()
    assert failures == []


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "checkins.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=3")
    with pytest.raises(StoreError, match="schema 3, this otapub reads up to 2; move it away"):
        Store(path)


def test_a_batch_of_known_and_new_macs_adds_the_new_ones(tmp_path, store):
    log = tmp_path / "checkins.jsonl"
    write(log, entry("2026-11-01T08:00:00Z"))
    store.fold(log)
    write(log, entry("2026-11-02T08:00:00Z"), entry("2026-11-02T09:00:00Z", mac=OTHER, version="2.0.0"))
    assert store.fold(log).lines == 2
    seen = store.devices()
    assert seen[MAC].checks == 2 and seen[OTHER].checks == 1 and seen[OTHER].last_version == "2.0.0"
    write(log, entry("2026-11-03T08:00:00Z"), entry("2026-11-03T09:00:00Z", mac=OTHER))  # all known
    store.fold(log)
    assert store.devices()[OTHER].checks == 2 and len(store.devices()) == 2


# -- the fold against a line-by-line model of what it means ------------------------------------
def _model(entries):
    """What folding ``entries`` (in log order) means, one line at a time, in plain Python."""
    from otapub.checkins import Seen
    from otapub.versions import parse_version

    def newer(a, b):
        try:
            return parse_version(a) > parse_version(b)
        except ValueError:
            return False

    def text(value):
        return value if isinstance(value, str) else None

    devices, versions, offers, checks, last_of_day = {}, {}, {}, {}, {}
    for e in entries:
        mac, when, decision = normalize_mac(e["mac"]), text(e.get("time")), text(e.get("decision"))
        auth = decision not in ("auth_failed", "bad_request")
        version = text(e.get("version")) if auth else None
        day = when and when[:10]
        seen = devices.get(mac)
        if seen is None:
            seen = devices[mac] = Seen(mac)
        elif version is not None and seen.last_version is not None and version != seen.last_version \
                and newer(version, seen.last_version):
            seen.last_update = when or seen.last_update  # a line without a time moves no time
        seen.first_seen = seen.first_seen or when
        seen.last_check, seen.last_decision, seen.last_ip = when or seen.last_check, decision, text(e.get("ip"))
        seen.last_version = version or seen.last_version
        if auth:
            seen.last_target = text(e.get("target"))
            seen.device_id = text(e.get("device_id")) or seen.device_id
            seen.hardware = text(e.get("hardware")) or seen.hardware
        seen.last_client = text(e.get("client")) or seen.last_client
        seen.checks += 1
        seen.auth_failures += decision == "auth_failed"
        if version is not None and when is not None:
            versions.setdefault((mac, version), when)
            last_of_day[(day, mac)] = version
        if auth and when is not None:
            checks.setdefault(mac, {}).setdefault(day, 0)
            checks[mac][day] += 1
            if decision == "update_offered" and text(e.get("target")) is not None:
                if (mac, e["target"]) not in offers or when < offers[(mac, e["target"])][0]:  # the earliest
                    offers[(mac, e["target"])] = (when, version)
    version_days = {}
    for (day, _mac), version in last_of_day.items():
        version_days[(day, version)] = version_days.get((day, version), 0) + 1
    return devices, versions, offers, checks, sorted((d, v, n) for (d, v), n in version_days.items())


@pytest.mark.parametrize("seed", range(40))
def test_folds_in_any_chunks_mean_what_the_lines_say(tmp_path, seed):
    """Random logs (repeated MACs in any spelling, versions going up and down, unauthenticated lines,
    fields of other types, missing fields, lines without a time), appended and folded in random chunks,
    cut mid-line: the store says what a line-by-line reading says."""
    import random

    rng = random.Random(seed)
    macs = [f"AA:BB:CC:DD:EE:{i:02X}" for i in range(rng.randint(1, 6))]
    spellings = (str, str.lower, lambda mac: mac.replace(":", "-"), lambda mac: mac.replace(":", "").lower())
    entries = []
    for i in range(rng.randint(1, 120)):
        e = {"time": f"2026-11-{1 + i // 40:02d}T{(i // 4) % 24:02d}:{i % 60:02d}:00.000000Z",
             "mac": rng.choice(spellings)(rng.choice(macs))}
        if rng.random() < 0.1:  # a hand-made or foreign line: no day to count it on
            del e["time"]
        for name, choices in (("version", ["1.0.0", "1.1.0", "0.9.0", "2.0.0", "1.1", "x", None, 5]),
                              ("target", ["1.1.0", "2.0.0", None, 7]),
                              ("decision", ["up_to_date", "update_offered", "update_offered", "auth_failed",
                                            "bad_request", "no_target", None]),
                              ("device_id", ["a", "b", "", None]), ("hardware", ["hw", None]),
                              ("ip", ["192.0.2.1", "192.0.2.2", None]), ("client", ["seed", "httpupdate", "", None])):
            value = rng.choice(choices)
            if value is not None or rng.random() < 0.5:
                e[name] = value
        entries.append(e)
    data = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
    log = tmp_path / "checkins.jsonl"
    log.write_bytes(b"")
    with Store(tmp_path / "checkins.sqlite") as store:
        at = 0
        while at < len(data):
            step = rng.randint(1, len(data) // 3 + 1)
            with open(log, "ab") as handle:
                handle.write(data[at:at + step])
            at += step
            store.fold(log)
        devices, versions, offers, checks, version_days = _model(entries)
        differing = {mac: {name: (value, getattr(devices.get(mac), name, None))
                           for name, value in vars(seen).items() if value != getattr(devices.get(mac), name, None)}
                     for mac, seen in store.devices().items()}
        assert store.devices() == devices, differing  # (store, model) of each field that differs
        assert {(mac, v): t for mac in devices for v, t in store.first_reported(mac).items()} == versions
        targets = {target for _, target in offers}
        assert {(o.mac, target): (o.first_offered, o.from_version)
                for target in targets for o in store.offers(target)} == offers
        assert {mac: store.checks_per_day(mac) for mac in devices if store.checks_per_day(mac)} == checks
        assert store.version_days() == version_days


# -- folding outside the readers: `otapub fold`, and serve's folding process (tests/test_server.py) ----


def test_fold_command_says_what_it_folded_and_a_second_run_folds_nothing(repo):
    log = repo.root / "state" / "checkins.jsonl"
    log.parent.mkdir(parents=True)
    write(log, entry("2026-11-01T08:00:00Z"), entry("2026-11-01T09:00:00Z", mac=OTHER), partial=b"not json\n")
    export = repo.root / "worker.jsonl"
    write(export, entry("2026-11-01T10:00:00Z", mac=OTHER))
    first = repo.cli("fold", "--log", str(export))
    assert first.exit_code == 0
    assert first.output.startswith(f"folded check-ins: 3, bytes: {log.stat().st_size + export.stat().st_size}, "
                                   "lines skipped: 1, seconds: ")
    again = repo.cli("fold", "--log", str(export))
    assert again.exit_code == 0 and again.output.startswith("folded check-ins: 0, bytes: 0, seconds: ")
    with sqlite3.connect(f"file:{repo.root / 'state' / 'checkins.sqlite'}?mode=ro", uri=True) as db:
        assert dict(db.execute("SELECT mac, checks FROM devices")) == {MAC: 1, OTHER: 2}
    missing = repo.cli("fold", "--log", str(repo.root / "nope.jsonl"))
    assert missing.exit_code == 2 and "nope.jsonl' does not exist" in missing.output
    (repo.root / "notes.txt").write_text("not a database" * 100)
    broken = repo.cli("fold", env={"OTA_SERVER_CHECKIN_DB": "notes.txt"})
    assert broken.exit_code == 1
    assert broken.output == f"error: {repo.root / 'notes.txt'}: not a usable check-in store (file is not a database)\n"
    (repo.root / "state" / "store").mkdir()
    directory = repo.cli("fold", env={"OTA_SERVER_CHECKIN_DB": "state/store"})
    assert directory.exit_code == 1
    assert directory.output == (f"error: {repo.root / 'state' / 'store'}: a directory, not a check-in store "
                                "(checkin_db names a file)\n")


def test_fold_every_keeps_folding_until_sigterm_and_exits_0(repo):
    import signal
    import subprocess
    import sys
    import threading

    log = repo.root / "state" / "checkins.jsonl"
    log.parent.mkdir(parents=True)
    write(log, entry("2026-11-01T08:00:00Z"))
    proc = subprocess.Popen([sys.executable, "-m", "otapub", "--config", str(repo.config_file), "fold",
                             "--every", "0.1"], env={**os.environ, **repo.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    hang = threading.Timer(30, proc.kill)  # a bound on a hang (readline has no timeout), not a measurement
    hang.start()
    try:
        assert proc.stdout.readline().startswith("folded check-ins: 1, ")  # at once, then each fold with news
        write(log, entry("2026-11-01T09:00:00Z"), entry("2026-11-01T10:00:00Z"))
        assert proc.stdout.readline().startswith("folded check-ins: 2, ")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        hang.cancel()
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out == "" and err == ""
    with Store(repo.root / "state" / "checkins.sqlite") as store:
        assert store.devices()[MAC].checks == 3


def test_follow_warns_about_an_unusable_store_and_keeps_going(repo, caplog):
    """Said once while it lasts (a fold every few seconds must not fill the server's log), and when it ends."""
    import logging
    import threading
    import time

    from otapub.folding import follow

    caplog.set_level(logging.DEBUG, logger="otapub.folding")
    db = repo.root / "state" / "checkins.sqlite"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database, yet" * 100)
    write(repo.root / "state" / "checkins.jsonl", entry("2026-11-01T08:00:00Z"))
    stop = threading.Event()
    folds = []
    thread = threading.Thread(target=follow, args=(repo.config(), 0.02, stop), kwargs={"report": folds.append})
    thread.start()
    try:
        deadline = time.monotonic() + 20  # a bound on a hang, not a measurement
        while caplog.text.count("not a usable check-in store") < 3:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        failures = [r.levelname for r in caplog.records if "not a usable" in r.getMessage()]
        assert folds == [] and failures[0] == "WARNING" and set(failures[1:]) == {"DEBUG"}
        db.unlink()  # the operator moves it away: the next fold builds the store again
        while not folds:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert folds[0].lines == 1 and all(f.lines == 0 for f in folds[1:])
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("folding the check-in log again")] \
        == ["INFO"]


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    """The first openers of a store race to create it (and to put it in WAL mode): none may fail, or
    take it for another program's database."""
    import threading

    def open_at_once(path, start, errors):
        start.wait()
        try:
            Store(path).close()
        except StoreError as exc:
            errors.append(exc)

    errors = []
    for attempt in range(15):
        start = threading.Barrier(6)
        threads = [threading.Thread(target=open_at_once, args=(tmp_path / f"store{attempt}.sqlite", start, errors))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
