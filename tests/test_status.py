"""`otapub status`: the check-in log folded into one row per device."""

import json

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
