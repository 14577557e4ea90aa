"""Health-gated rollouts on simulated fleets: synthetic check-ins over simulated days, no sleeps.

Each simulated day the fleet's real targets are resolved at that day's time (otapub.targets);
every device checks in once, is offered what the shim would offer, and the next day reports
the new version (good release) or, for a seeded share of devices, its old one again (bad
release: the bootloader rolled back). `otapub health` then judges the stages; when a gate
decides, `health --write` edits rollouts.yaml, as the scheduled workflow's pull request would.
"""

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from otapub.checkins import CheckinLog
from otapub.fleet import load_fleet
from otapub.health import ADVANCE_EXIT, HALT_EXIT, exit_code, fleet_health, write_gates
from otapub.rollout import bucket
from otapub.targets import resolve_targets
from otapub.versions import parse_version

START = datetime(2026, 12, 1, tzinfo=timezone.utc)
DEVICES = 2000
ROLLOUT = """\
rollouts:
  next:
    release: fw-1.1.0
    to: all
    halt_if: {failed_percent: 5, min_devices: 10, grace_hours: 2, silent_hours: 72}
    advance_after: {updated_percent: 90}
    stages:
      - {percent: 2}
      - {percent: 20}
      - percent: 100
"""


def fleet_repo(repo):
    repo.firmware("fw_1.0.0.bin", size=1024)
    repo.firmware("fw_1.1.0.bin", size=1024)
    repo.write("fleet/releases.yaml", """\
        releases:
          fw-1.0.0: {version: "1.0.0", file: firmware/fw_1.0.0.bin}
          fw-1.1.0: {version: "1.1.0", file: firmware/fw_1.1.0.bin}
        channels:
          stable: fw-1.0.0
        """)
    lines = ["devices:"]
    for i in range(DEVICES):
        mac = ":".join(f"{b:02X}" for b in (0x02, 0x00, 0x10, i >> 16 & 255, i >> 8 & 255, i & 255))
        lines.append(f'  "{mac}": {{device_id: d{i}}}')
    (repo.root / "fleet/devices.yaml").write_text("\n".join(lines) + "\n")
    repo.write("fleet/rollouts.yaml", ROLLOUT)
    return repo


def simulate(repo, fail_share, days, seed=7):
    """Run the fleet for ``days`` days; returns the day log of health decisions."""
    config = repo.config()
    log = CheckinLog(config.path("checkin_log"))
    rng = random.Random(seed)
    reported = {}
    breaks = {}  # devices the bad release fails on: a seeded share
    decisions = []
    for day in range(days):
        fleet = load_fleet(config.path("fleet_dir"), config.root)
        for mac in fleet.devices:
            reported.setdefault(mac, "1.0.0")
            breaks.setdefault(mac, rng.random() < fail_share)
        moment = START + timedelta(days=day)
        targets = resolve_targets(fleet, moment)
        for n, (mac, device) in enumerate(sorted(fleet.devices.items())):
            when = moment + timedelta(seconds=20 * n)  # spread over the day, before tomorrow
            release = targets.get(mac)
            target = release.version if release is not None else None
            offer = target is not None and parse_version(target) > parse_version(reported[mac])
            log.append({"time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "mac": mac, "device_id": device.device_id,
                        "version": reported[mac], "target": target, "status": 200,
                        "decision": "update_offered" if offer else "up_to_date", "client": "192.0.2.1"})
            if offer and not breaks[mac]:
                reported[mac] = target  # it flashed and reports the new version from its next check on
        now = moment + timedelta(hours=23, minutes=59)
        healths = fleet_health(config, now=now)
        code = exit_code(healths)
        decisions.append((day, code, [s.__dict__.copy() for s in healths[0].stages]))
        if code:
            write_gates(config, healths, now)
        if code == HALT_EXIT:
            break
    return decisions, reported


@pytest.fixture
def fleet(repo):
    return fleet_repo(repo)


def test_a_bad_release_trips_the_halt_gate_in_its_first_stage(fleet):
    decisions, reported = simulate(fleet, fail_share=0.3, days=6)
    day, code, stages = decisions[-1]
    assert code == HALT_EXIT and day == 1  # offered on day 0; they report their old version on day 1
    assert stages[0]["tripped"] and stages[0]["offered"] >= 10 and not stages[1]["open"]
    text = (fleet.root / "fleet/rollouts.yaml").read_text()
    assert "halted: " in text and "stage 1:" in text
    # Halted: nobody gets it any more; those that updated keep it (no downgrade is offered).
    config = fleet.config()
    fleet_model = load_fleet(config.path("fleet_dir"), config.root)
    targets = resolve_targets(fleet_model, START + timedelta(days=30))
    assert {r.version for r in targets.values()} == {"1.0.0"}
    updated = [mac for mac, v in reported.items() if v == "1.1.0"]
    assert updated and all(parse_version("1.0.0") < parse_version(reported[m]) for m in updated)
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-qm", "halted")):
        fleet.git(*args)
    plan = fleet.cli("plan", "--now", "2026-12-30T00:00:00Z")
    assert "halted (stage 1:" in plan.output and "gates: halt if >= 5%" in plan.output
    mac = updated[0]
    explained = fleet.cli("explain", mac, "--now", "2026-12-30T00:00:00Z").output
    assert "halted by its health gate" in explained
    again = fleet.cli("health", "--now", "2026-12-30T00:00:00Z")
    assert again.exit_code == 0 and "halted (stage 1:" in again.output  # decided once, in a commit


def test_a_good_release_advances_stage_by_stage_and_never_halts(fleet):
    decisions, reported = simulate(fleet, fail_share=0.0, days=7)
    codes = [code for _, code, _ in decisions]
    assert HALT_EXIT not in codes and codes.count(ADVANCE_EXIT) == 2
    text = (fleet.root / "fleet/rollouts.yaml").read_text()
    assert text.count('not_before: "2026-12-') == 2
    assert not any(s["passed"] for s in decisions[-1][2])
    assert '{percent: 20, not_before: "2026-12-02T23:59:00Z"}' in text
    assert sum(v == "1.1.0" for v in reported.values()) == DEVICES
    last = decisions[-1][2]
    assert all(s["open"] for s in last) and sum(s["updated"] for s in last) == DEVICES


def test_same_seed_same_cohorts_and_decisions(repo, tmp_path):
    from conftest import Repo

    first = simulate(fleet_repo(repo), fail_share=0.3, days=3)
    second = simulate(fleet_repo(Repo(tmp_path / "other")), fail_share=0.3, days=3)
    assert first == second
    config = repo.config()
    fleet_model = load_fleet(config.path("fleet_dir"), config.root)
    stage1 = {m for m, d in fleet_model.devices.items() if bucket("next", d.mac12) < 2}
    assert first[0][-1][2][0]["devices"] == len(stage1)


def test_health_cli_exit_codes_and_json(fleet):
    config = fleet.config()
    log = CheckinLog(config.path("checkin_log"))
    result = fleet.cli("health", "--now", "2026-12-01T12:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    [item] = json.loads(result.output)
    assert item["name"] == "next" and item["stages"][0]["open"] and item["stages"][0]["offered"] == 0
    fleet_model = load_fleet(config.path("fleet_dir"), config.root)
    cohort = sorted(m for m, d in fleet_model.devices.items() if bucket("next", d.mac12) < 2)
    for mac in cohort:  # offered, then silent for longer than silent_hours
        log.append({"time": "2026-12-01T00:00:00Z", "mac": mac, "version": "1.0.0", "target": "1.1.0",
                    "decision": "update_offered", "status": 200})
    result = fleet.cli("health", "next", "--now", "2026-12-05T00:00:00Z")
    assert result.exit_code == HALT_EXIT and f"{len(cohort)} silent" in result.output and "HALT" in result.output
    missing = fleet.cli("health", "nope")
    assert missing.exit_code not in (0, HALT_EXIT, ADVANCE_EXIT) and "no rollout 'nope'" in missing.output
    fleet.write("fleet/broken.yaml", "rollouts: [\n")  # an error is not a decision of a gate
    broken = fleet.cli("health", "--now", "2026-12-05T00:00:00Z")
    assert broken.exit_code not in (0, HALT_EXIT, ADVANCE_EXIT) and "broken.yaml" in broken.output


@pytest.mark.parametrize("gates, message", [
    ("halt_if: {failed_percent: 500}", "rollouts.next.halt_if.failed_percent: expected a number 0..100, found 500"),
    ("halt_if: {min_devices: 3}", "rollouts.next.halt_if: expected a mapping such as"),
    ("halt_if: {failed_percent: 5, min_devices: 2.5}", "halt_if.min_devices: expected a whole number >= 1"),
    ("halt_if: {failed_percent: 5, typo: 1}", "unknown key in halt_if"),
    ("advance_after: {updated_percent: yes}", "advance_after.updated_percent: expected a number 0..100"),
    ("advance_after: {updated_percent: .nan}", "advance_after.updated_percent: expected a number 0..100"),
    ("halt_if: {failed_percent: .nan}", "halt_if.failed_percent: expected a number 0..100, found nan"),
    ("halt_if: {failed_percent: 5, grace_hours: .inf}", "halt_if.grace_hours: expected a number 0..878400"),
    ("halt_if: {failed_percent: 5, silent_hours: 1.0e+12}", "halt_if.silent_hours: expected a number 0..878400"),
    ("halted: 5", "rollouts.next.halted: expected why it was halted"),
])
def test_gate_mistakes_name_file_line_and_field(fleet, gates, message):
    fleet.write("fleet/rollouts.yaml", f"""\
        rollouts:
          next:
            release: fw-1.1.0
            to: all
            {gates}
        """)
    result = fleet.cli("check")
    assert result.exit_code != 0
    assert "rollouts.yaml:5:" in result.output and message in result.output


def test_a_stage_without_a_time_needs_the_advance_gate(fleet):
    fleet.write("fleet/rollouts.yaml", """\
        rollouts:
          next:
            release: fw-1.1.0
            to: all
            stages:
              - {percent: 2}
              - {percent: 20}
        """)
    result = fleet.cli("check")
    assert result.exit_code != 0 and "stages[1].not_before" in result.output


def test_plan_json_shows_the_gates_and_the_waiting_stage(fleet):
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-qm", "fleet")):
        fleet.git(*args)
    result = fleet.cli("plan", "--format", "json", "--now", "2026-12-01T12:00:00Z")
    assert result.exit_code == 0, result.output
    [rollout] = json.loads(result.output)["rollouts"]
    assert rollout["waiting_stage"] == 2 and "advance after 90%" in rollout["gates"]
    assert rollout["state"] == "stage 1 of 3, stage 2 waits for the advance gate"
