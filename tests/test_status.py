"""`otapub status`: the check-in log folded into one row per device."""

import json
import os

from otapub.checkins import CheckinLog
from otapub.checkinstore import Store


def log_lines(repo, *entries):
    log = CheckinLog(repo.root / "state/checkins.jsonl")
    for entry in entries:
        log.append(entry)


def entry(time, mac, version, decision, target="1.3.8", status=200):
    return {"time": time, "mac": mac, "device_id": "dev", "hardware": "hw", "version": version, "target": target,
            "decision": decision, "status": status, "client": "127.0.0.1"}


def test_status_rows_states_and_last_update(example):
    log_lines(example,
              entry("2026-11-01T00:00:00Z", "AA:BB:CC:DD:EE:FF", "1.3.7", "update_offered"),
              entry("2026-11-02T00:00:00Z", "AA:BB:CC:DD:EE:FF", "1.3.8", "up_to_date"),
              entry("2026-11-03T00:00:00Z", "AA:BB:CC:DD:EE:FF", "1.3.8", "up_to_date"),
              entry("2026-11-03T00:00:00Z", "11:22:33:44:55:66", None, "auth_failed", target=None, status=401),
              entry("2026-11-04T00:00:00Z", "DE:AD:BE:EF:00:01", "0.1", "auth_failed", target=None, status=401))
    result = example.cli("status", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["mac"]: r for r in json.loads(result.output)}
    eeff = rows["AA:BB:CC:DD:EE:FF"]
    assert eeff["state"] == "up to date" and eeff["last_version"] == "1.3.8" and eeff["target"] == "1.3.8"
    assert eeff["last_update"] == "2026-11-02T00:00:00Z" and eeff["last_check"] == "2026-11-03T00:00:00Z"
    assert eeff["checks"] == 3
    assert rows["11:22:33:44:55:66"]["state"] == "failing auth"
    assert rows["AA:BB:CC:00:00:01"]["state"] == "never seen" and rows["AA:BB:CC:00:00:01"]["last_check"] is None
    stranger = rows["DE:AD:BE:EF:00:01"]
    assert not stranger["in_fleet"] and stranger["state"] == "not in fleet (failing auth)"
    text = example.cli("status").output
    assert text.splitlines()[0].split() == ["MAC", "DEVICE", "ID", "TARGET", "REPORTED", "STATE", "LAST", "CHECK",
                                            "LAST", "UPDATE"]
    assert "never seen" in text and "DE:AD:BE:EF:00:01" in text


def test_status_with_explicit_log_and_broken_lines(example, tmp_path):
    path = tmp_path / "exported.jsonl"
    path.write_text('{"time": "t1", "mac": "AA:BB:CC:DD:EE:FF", "version": "1.0", "decision": "update_offered"}\n'
                    "not json\n")
    result = example.cli("status", "--log", str(path), "--json")
    assert result.exit_code == 0
    rows = {r["mac"]: r for r in json.loads(result.output)}
    assert rows["AA:BB:CC:DD:EE:FF"]["state"] == "update offered"


def test_summary_ignores_version_noise(tmp_path):
    path = tmp_path / "log.jsonl"
    log = CheckinLog(path)
    log.append(entry("t1", "AA:BB:CC:DD:EE:FF", "1.2", "update_offered"))
    log.append(entry("t2", "AA:BB:CC:DD:EE:FF", "1.2.0", "update_offered"))  # same version, other spelling
    log.append(entry("t3", "AA:BB:CC:DD:EE:FF", "garbage", "bad_request", status=400))
    with Store(tmp_path / "store.sqlite") as store:
        store.fold(path)
        seen = store.devices()["AA:BB:CC:DD:EE:FF"]
    assert seen.last_update is None and seen.checks == 3
    assert seen.last_version == "1.2.0" and seen.last_decision == "bad_request"


def test_device_get_shows_what_the_store_knows(example):
    log_lines(example,
              entry("2026-11-01T08:00:00.000000Z", "AA:BB:CC:DD:EE:FF", "1.3.7", "update_offered"),
              entry("2026-11-01T09:00:00.000000Z", "AA:BB:CC:DD:EE:FF", "1.3.8", "up_to_date"),
              entry("2026-11-02T09:00:00.000000Z", "AA:BB:CC:DD:EE:FF", "1.3.8", "up_to_date"))
    result = example.cli("device", "get", "AA:BB:CC:DD:EE:FF", "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert view["versions_first_reported"] == {"1.3.7": "2026-11-01T08:00:00.000000Z",
                                               "1.3.8": "2026-11-01T09:00:00.000000Z"}
    assert view["checks_per_day"] == {"2026-11-01": 2, "2026-11-02": 1}
    assert view["first_seen"] == "2026-11-01T08:00:00.000000Z" and view["last_ip"] == "127.0.0.1"
    assert view["last_update"] == "2026-11-01T09:00:00.000000Z" and view["checks"] == 3


def test_status_targets_follow_fleet_edits_and_stage_times(example):
    """`status` keeps the fleet's targets in the store; an edit or a stage opening is seen at once."""
    from datetime import datetime, timezone

    from otapub.checkinstore import folded
    from otapub.fleet import load_fleet
    from otapub.fleetstatus import fleet_status

    def settle():  # files changed within the last seconds are not trusted by their mtime: age them
        for path in (example.root / "fleet").iterdir():
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 10**10))

    def targets(now):
        return {r.mac: r.target for r in fleet_status(example.config(), now=now)}

    def cached():
        with Store(example.root / "state/checkins.sqlite") as store:
            return json.loads(store.db.execute("SELECT value FROM meta WHERE key = 'targets'").fetchone()[0])

    example.write("fleet/rollouts.yaml", """\
        rollouts:
          to-138:
            release: panic-1.3.8
            to: all
            stages:
              - {percent: 100, not_before: 2026-06-01T00:00:00Z}
        """)
    settle()
    before = datetime(2026, 5, 1, tzinfo=timezone.utc)
    after = datetime(2026, 7, 1, tzinfo=timezone.utc)
    assert targets(before)["AA:BB:CC:00:00:01"] is None
    assert cached()["key"] and cached()["until"] == "2026-06-01T00:00:00+00:00"
    assert targets(before)["AA:BB:CC:00:00:01"] is None  # from the store this time
    assert targets(after)["AA:BB:CC:00:00:01"] == "1.3.8"  # the stage opened
    assert targets(before)["AA:BB:CC:00:00:01"] is None
    example.write("fleet/devices.yaml", """\
        devices:
          "AA:BB:CC:DD:EE:FF":
            device_id: PanicAlarm_EEFF
            release: panic-1.3.7
        """)
    settle()
    rows = fleet_status(example.config(), now=before)
    assert [(r.mac, r.device_id, r.target, r.state) for r in rows] == [
        ("AA:BB:CC:DD:EE:FF", "PanicAlarm_EEFF", "1.3.7", "never seen")]
    log_lines(example, entry("2026-11-01T00:00:00Z", "11:22:33:44:55:66", "1.3.7", "up_to_date"),
              entry("2026-11-01T00:00:01Z", "AA:BB:CC:DD:EE:FF", "1.3.7", "rebooting"),
              entry("2026-11-01T00:00:02Z", "AA:BB:CC:00:00:02", "1.3.7", None))
    rows = fleet_status(example.config(), now=before)
    assert [(r.mac, r.in_fleet, r.device_id, r.state, r.checks) for r in rows] == [
        ("AA:BB:CC:DD:EE:FF", True, "PanicAlarm_EEFF", "rebooting", 1),
        ("11:22:33:44:55:66", False, "dev", "not in fleet (up to date)", 1),
        ("AA:BB:CC:00:00:02", False, "dev", "not in fleet (unknown)", 1)]
    with folded(example.config()) as store:  # the same rows as from the fleet's YAML
        seen = store.devices()
    assert rows == fleet_status(example.config(), now=before, fleet=load_fleet(example.root / "fleet", example.root),
                                seen=seen)


def test_json_written_by_sqlite_is_the_rows_of_the_table(example, capsys):
    """`status --json` and `status` (both written by SQLite) say what the Python rows say, awkward strings
    included."""
    from otapub.fleetstatus import fleet_status

    odd = 'quote " backslash \\ tab \t newline \n ünïcode 🚀 \u2028'
    log_lines(example,
              entry("2026-11-01T00:00:00Z", "AA:BB:CC:DD:EE:FF", odd, "update_offered"),
              {**entry("2026-11-02T00:00:00Z", "DE:AD:BE:EF:00:02", "1.0", "up_to_date"), "device_id": odd},
              entry("2026-11-03T00:00:00Z", "DE:AD:BE:EF:00:03", None, "something_new", target=None))
    result = example.cli("status", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows == [row.to_dict() for row in fleet_status(example.config())]
    by_mac = {r["mac"]: r for r in rows}
    assert by_mac["AA:BB:CC:DD:EE:FF"]["last_version"] == odd
    assert by_mac["DE:AD:BE:EF:00:02"]["device_id"] == odd and by_mac["DE:AD:BE:EF:00:02"]["in_fleet"] is False
    assert by_mac["DE:AD:BE:EF:00:03"]["state"] == "not in fleet (something_new)"
    assert [r["in_fleet"] for r in rows] == sorted((r["in_fleet"] for r in rows), reverse=True)  # members first
    # the table, laid out by SQLite, is what otapub.cli.echo_table prints of the same rows
    from otapub.cli import echo_table
    from otapub.fleetstatus import TABLE

    capsys.readouterr()
    echo_table(tuple(heading for heading, _ in TABLE), [tuple(row[field] for _, field in TABLE) for row in rows])
    expected = capsys.readouterr().out
    table = example.cli("status").output
    assert table == expected and "ünïcode 🚀" in table


def test_json_of_an_empty_store_and_fleet(tmp_path):
    from otapub.config import load_config
    from otapub.fleetstatus import fleet_status_json

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "fleet").mkdir()
    assert json.loads(fleet_status_json(load_config(tmp_path / "config.json"))) == []
