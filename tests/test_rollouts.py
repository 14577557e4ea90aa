"""Groups, channels and staged rollouts: cohorts, precedence, time, validation, explain (issue 6)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from otapub.build import build_site
from otapub.fleet import load_fleet
from otapub.render import plan_site
from otapub.rollout import BUCKETS, bucket, rollout_status
from otapub.targets import CHANNEL, NONE, PIN, ROLLOUT, Rules, explain
from tests.conftest import one, problems

C6 = "FireBeetle 2 ESP32-C6"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
DEC1 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
DEC3 = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)


def macs(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    values = rng.sample(range(1 << 40), count)
    return [":".join(f"{(0x02 << 40 | v):012X}"[i : i + 2] for i in range(0, 12, 2)) for v in values]


@pytest.fixture
def rolling(repo):
    """Three releases (1.3.8 stable, 1.4.0-rc1 beta, 1.4.0 rolling out), 200 devices, no pins."""
    for version in ("1.3.8", "1.4.0.1", "1.4.0"):
        repo.firmware(f"panic_{version}.bin", size=600)
    repo.write("fleet/releases.yaml", f"""\
        releases:
          panic-1.3.8: {{version: "1.3.8", file: firmware/panic_1.3.8.bin, chip: esp32c6, hardware: ["{C6}"]}}
          panic-1.4.0-rc1: {{version: "1.4.0.1", file: firmware/panic_1.4.0.1.bin, hardware: ["{C6}"]}}
          panic-1.4.0: {{version: "1.4.0", file: firmware/panic_1.4.0.bin, chip: esp32c6, hardware: ["{C6}"]}}
        """)
    lines = ["devices:"] + [f'  "{m}": {{device_id: d{i}, hardware: {C6}}}' for i, m in enumerate(macs(200))]
    repo.write("fleet/devices.yaml", "\n".join(lines) + "\n")
    repo.write("fleet/rules.yaml", f"""\
        groups:
          c6-boards: {{hardware: "{C6}"}}
        channels:
          stable: panic-1.3.8
          beta: panic-1.4.0-rc1
        rollouts:
          panic-1.4.0:
            release: panic-1.4.0
            to: {{groups: [c6-boards]}}
            stages:
              - {{percent: 5}}
              - {{percent: 25, not_before: 2026-12-01T09:00:00Z}}
              - {{percent: 100, not_before: 2026-12-03T09:00:00Z}}
        """)
    return repo


def fleet_of(repo):
    config = repo.config()
    return load_fleet(config.path("fleet_dir"), config.root)


# --- cohorts -------------------------------------------------------------------------------

def test_bucket_is_documented_sha256_and_stable():
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"panic-1.4.0\nAABBCCDDEEFF").digest()[:8], "big") % 100
    assert bucket("panic-1.4.0", "AABBCCDDEEFF") == expected
    assert bucket("panic-1.4.0", "AABBCCDDEEFF") == bucket("panic-1.4.0", "AABBCCDDEEFF")


def test_realised_share_within_one_point_for_100000_devices():
    devices = [f"{0x02 << 40 | v:012X}" for v in random.Random(1).sample(range(1 << 40), 100_000)]
    for rollout in ("panic-1.4.0", "hotfix-2"):
        counts = [0] * BUCKETS
        for mac12 in devices:
            counts[bucket(rollout, mac12)] += 1
        inside = 0
        for percent in range(1, 101):
            inside += counts[percent - 1]  # devices with bucket < percent
            share = 100 * inside / len(devices)
            assert abs(share - percent) <= 1, (rollout, percent, share)


def test_cohorts_differ_between_rollouts():
    devices = [m.replace(":", "") for m in macs(20_000)]
    first = {m for m in devices if bucket("a", m) < 10}
    second = {m for m in devices if bucket("b", m) < 10}
    # Independent 10% cohorts share about 1% of devices, not 10%.
    assert len(first & second) < 0.02 * len(devices)


def test_device_in_a_stage_stays_in_later_stages(rolling):
    fleet = fleet_of(rolling)
    receiving = []
    for now in (T0, DEC1, DEC3):
        rules = Rules(fleet, now)
        receiving.append({mac for mac, device in fleet.devices.items() if rules.decide(device).rule == ROLLOUT})
    assert receiving[0] <= receiving[1] <= receiving[2]
    assert 0 < len(receiving[0]) < len(receiving[1]) < len(receiving[2]) == 200


# --- precedence ----------------------------------------------------------------------------

def test_precedence_pin_then_rollout_then_channel(rolling):
    rolling.write("fleet/more.yaml", f"""\
        devices:
          "AA:00:00:00:00:01": {{hardware: {C6}, release: panic-1.3.8}}
          "AA:00:00:00:00:02": {{hardware: {C6}, channel: beta}}
          "AA:00:00:00:00:03": {{hardware: {C6}}}
        """)
    build_site(rolling.config(), now=DEC3)  # the rollout's last stage: 100% of C6 boards
    assert rolling.answer("AA:00:00:00:00:01")["release"] == "panic-1.3.8"  # a pin beats the rollout
    assert rolling.answer("AA:00:00:00:00:02")["release"] == "panic-1.4.0"  # the rollout beats beta
    assert rolling.answer("AA:00:00:00:00:03")["release"] == "panic-1.4.0"  # ... and stable
    build_site(rolling.config(), now=T0)  # stage 1 (5%): outside it, each keeps its channel's release
    fleet = fleet_of(rolling)
    for mac, channel_release in (("AA:00:00:00:00:02", "panic-1.4.0-rc1"), ("AA:00:00:00:00:03", "panic-1.3.8")):
        inside = bucket("panic-1.4.0", fleet.devices[mac].mac12) < 5
        assert rolling.answer(mac)["release"] == ("panic-1.4.0" if inside else channel_release)
    assert rolling.answer("AA:00:00:00:00:01")["release"] == "panic-1.3.8"
    rules = Rules(fleet, DEC1)
    inside = next(d for d in fleet.devices.values() if not d.release and bucket("panic-1.4.0", d.mac12) < 25)
    outside = next(d for d in fleet.devices.values() if not d.release and bucket("panic-1.4.0", d.mac12) >= 25)
    assert (rules.decide(inside).rule, rules.decide(inside).stage) == (ROLLOUT, 1)
    assert rules.decide(outside).rule == CHANNEL
    assert rules.decide(fleet.devices["AA:00:00:00:00:01"]).rule == PIN


def test_nothing_when_no_rule_applies(repo):
    repo.firmware("panic_1.3.8.bin")
    repo.write("fleet/f.yaml", """\
        releases:
          panic-1.3.8: {version: "1.3.8", file: firmware/panic_1.3.8.bin}
        devices:
          "AA:00:00:00:00:01": {channel: beta}
        channels:
          beta: panic-1.3.8
        """)
    repo.write("fleet/g.yaml", 'devices:\n  "AA:00:00:00:00:02": {}\n')
    build_site(repo.config(), now=T0)
    assert repo.answer("AA:00:00:00:00:01")["release"] == "panic-1.3.8"
    assert repo.answer("AA:00:00:00:00:02")["release"] is None  # stable is not declared
    fleet = fleet_of(repo)
    assert Rules(fleet, T0).decide(fleet.devices["AA:00:00:00:00:02"]).rule == NONE


def test_newest_rollout_wins_and_outsiders_fall_through_to_the_older_one(rolling):
    rolling.write("fleet/hotfix.yaml", """\
        rollouts:
          panic-1.3.9:
            release: panic-1.4.0-rc1
            to: all
        """)
    fleet = fleet_of(rolling)
    rules = Rules(fleet, DEC1)
    got = {d.mac: rules.decide(d) for d in fleet.devices.values()}
    # 1.4.0.1 > 1.4.0: the rc rollout ranks first and covers everyone at 100%.
    assert {t.name for t in got.values()} == {"panic-1.3.9"}
    # Give the 1.4.0 rollout a higher priority: its 25% cohort gets 1.4.0, the rest fall through.
    rules_file = rolling.root / "fleet/rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("release: panic-1.4.0\n", "release: panic-1.4.0\n"
                                                         "    priority: 10\n"))
    fleet = fleet_of(rolling)
    rules = Rules(fleet, DEC1)
    for device in fleet.devices.values():
        target = rules.decide(device)
        expected = "panic-1.4.0" if bucket("panic-1.4.0", device.mac12) < 25 else "panic-1.3.9"
        assert target.name == expected


def test_paused_rollout_offers_nothing(rolling):
    rules_file = rolling.root / "fleet/rules.yaml"
    rules_file.write_text(rules_file.read_text() + "    paused: true\n")
    fleet = fleet_of(rolling)
    assert all(Rules(fleet, DEC3).decide(d).rule == CHANNEL for d in fleet.devices.values())
    status = rollout_status(fleet, DEC3)[0]
    assert status.state == "paused"


def test_device_outside_the_audience_is_not_touched(rolling):
    rolling.write("fleet/more.yaml", 'devices:\n  "AA:00:00:00:00:09": {hardware: Other Board, channel: lab}\n'
                  'channels:\n  lab: panic-1.4.0-rc1\n')
    rel = rolling.root / "fleet/releases.yaml"
    rel.write_text(rel.read_text().replace('file: firmware/panic_1.4.0.1.bin, hardware: ["FireBeetle 2 ESP32-C6"]',
                                           "file: firmware/panic_1.4.0.1.bin"))
    fleet = fleet_of(rolling)
    target = Rules(fleet, DEC3).decide(fleet.devices["AA:00:00:00:00:09"])
    assert (target.rule, target.release.name) == (CHANNEL, "panic-1.4.0-rc1")
    plan_site(rolling.config(), now=DEC3)


# --- time ----------------------------------------------------------------------------------

def test_stages_advance_with_now_and_the_noop_fast_path_knows(rolling):
    config = rolling.config()
    first = build_site(config, now=T0)
    assert not first.noop
    assert build_site(config, now=T0 + timedelta(days=1)).noop  # same stage: nothing to do
    crossing = build_site(config, now=DEC1)  # stage 2 opens without any file change
    assert not crossing.noop
    fleet = fleet_of(rolling)
    joined = [d for d in fleet.devices.values() if 5 <= bucket("panic-1.4.0", d.mac12) < 25]
    answers = [p for p in crossing.written if p.startswith("d/")]
    assert len(answers) == len(joined) > 0, "only devices joining the stage get a new answer"
    assert build_site(config, now=DEC1 + timedelta(hours=1)).noop
    back = build_site(config, now=T0)  # a preview of the past is a real change too
    assert not back.noop and len([p for p in back.written if p.startswith("d/")]) == len(joined)


def test_cli_now_option_selects_the_stage(rolling):
    result = rolling.cli("build", "--now", "2026-12-03T09:00:00Z")
    assert result.exit_code == 0, result.output
    fleet = fleet_of(rolling)
    assert all(rolling.answer(m)["release"] == "panic-1.4.0" for m in fleet.devices)
    for command in ("build", "check"):
        wrong = rolling.cli(command, "--now", "next tuesday")
        assert wrong.exit_code == 2 and "Invalid value for '--now': 'next tuesday' is not an ISO 8601" in wrong.output


def test_rollout_not_started_gives_nothing_yet(rolling):
    rules_file = rolling.root / "fleet/rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("- {percent: 5}", "- {percent: 5, not_before: 2026-11-30}"))
    fleet = fleet_of(rolling)
    assert all(Rules(fleet, T0).decide(d).rule == CHANNEL for d in fleet.devices.values())
    assert rollout_status(fleet, T0)[0].state == "scheduled"


# --- validation ----------------------------------------------------------------------------

def test_unknown_references_are_located(rolling):
    rolling.write("fleet/bad.yaml", """\
        groups:
          lobby: ["AA:00:00:00:00:99"]
        channels:
          canary: panic-9
        devices:
          "AA:00:00:00:00:01": {channel: betta}
        rollouts:
          r1: {release: panic-1.4.1, to: {groups: [lobbby]}}
          r2: {release: panic-1.4.0, to: {channels: [nightly]}, priority: 3}
        """)
    found = problems(rolling, T0)
    assert any(p.startswith("fleet/bad.yaml:2:11: groups.lobby.members: unknown device AA:00:00:00:00:99")
               for p in found), found
    assert any(p.startswith("fleet/bad.yaml:4:11: channels.canary: unknown release 'panic-9'") for p in found)
    assert any(p.startswith("fleet/bad.yaml:6:34: devices.AA:00:00:00:00:01.channel: unknown channel 'betta'")
               and "did you mean 'beta'" in p for p in found), found
    assert any(p.startswith("fleet/bad.yaml:8:17: rollouts.r1.release: unknown release 'panic-1.4.1'")
               for p in found), found
    assert any(p.startswith("fleet/bad.yaml:8:43: rollouts.r1.to.groups: unknown group 'lobbby'") for p in found)
    assert any("rollouts.r2.to.channels: unknown channel 'nightly'" in p for p in found)


def test_stages_must_increase_in_percent_and_time(rolling):
    rolling.write("fleet/bad.yaml", """\
        rollouts:
          r1:
            release: panic-1.4.0
            to: {channels: [beta]}
            priority: 5
            stages:
              - {percent: 25}
              - {percent: 25, not_before: 2026-12-01T09:00:00Z}
              - {percent: 50, not_before: 2026-12-01T08:00:00Z}
              - {percent: 60}
              - {percent: 0, not_before: 2026-12-09T00:00:00Z}
        """)
    found = problems(rolling, T0)
    assert any(p.startswith("fleet/bad.yaml:8:19: rollouts.r1.stages[1].percent: percentages must increase")
               for p in found), found
    assert any(p.startswith("fleet/bad.yaml:9:35: rollouts.r1.stages[2].not_before: stage times must increase")
               for p in found), found
    assert any(p.startswith("fleet/bad.yaml:10:9: rollouts.r1.stages[3].not_before: stage 4 has no start time")
               for p in found), found
    assert any("rollouts.r1.stages[4].percent: expected a whole percentage 1..100" in p for p in found)


def test_overlapping_rollouts_need_priorities(rolling):
    rolling.write("fleet/second.yaml", """\
        rollouts:
          second:
            release: panic-1.4.0
            to: all
        """)
    message = one(rolling, "rollouts.second:", T0)
    assert message.startswith("fleet/second.yaml:2:3: rollouts.second: 200 device(s)")
    assert "also covered by rollout 'panic-1.4.0' (fleet/rules.yaml:7)" in message
    # Priorities make it unambiguous; so does pausing one of them.
    second = rolling.root / "fleet/second.yaml"
    second.write_text(second.read_text() + "    priority: 1\n")
    plan_site(rolling.config(), now=T0)
    second.write_text(second.read_text().replace("priority: 1", "paused: true"))
    plan_site(rolling.config(), now=T0)


def test_disjoint_audiences_do_not_overlap(rolling):
    rolling.write("fleet/second.yaml", """\
        devices:
          "AA:00:00:00:00:01": {hardware: FireBeetle 2 ESP32-C6, channel: beta}
        rollouts:
          second: {release: panic-1.4.0, to: {channels: [beta]}}
        groups:
          only-stable: {channel: stable}
        """)
    rules_file = rolling.root / "fleet/rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("groups: [c6-boards]", "groups: [only-stable]"))
    plan = plan_site(rolling.config(), now=DEC3)  # no overlap problem; every stage open
    by_rollout = {mac: t.name for mac, t in plan.targets.items() if t.rule == ROLLOUT}
    assert by_rollout.pop("AA:00:00:00:00:01") == "second"  # the beta device, and only it
    assert set(by_rollout.values()) == {"panic-1.4.0"} and len(by_rollout) == 200


def test_group_shapes_and_selectors(rolling):
    rolling.write("fleet/more.yaml", """\
        devices:
          "AA:00:00:00:00:01": {device_id: lobby-1, hardware: FireBeetle 2 ESP32-C6, chip: ESP32-C6}
          "AA:00:00:00:00:02": {device_id: lobby-2, hardware: FireBeetle 2 ESP32-C6}
        groups:
          by-id: {device_id: "lobby-*"}
          by-chip: {chip: esp32c6}
          mixed: {members: ["aa-00-00-00-00-02"], device_id: nobody}
          empty: {}
          bad: 42
        """)
    found = problems(rolling, T0)
    assert any("groups.empty: a group needs `members:` and/or a selector" in p for p in found), found
    assert any("groups.bad: expected a list of MAC addresses, or a mapping" in p for p in found), found
    more = rolling.root / "fleet/more.yaml"
    more.write_text("\n".join(line for line in more.read_text().splitlines() if "empty" not in line
                              and "bad:" not in line) + "\n")
    from otapub.rollout import group_members

    members = group_members(fleet_of(rolling))
    assert members["by-id"] == {"AA:00:00:00:00:01", "AA:00:00:00:00:02"}
    assert members["by-chip"] == {"AA:00:00:00:00:01"}  # chip names are normalised (ESP32-C6)
    assert members["mixed"] == {"AA:00:00:00:00:02"}
    assert len(members["c6-boards"]) == 202


def test_groups_channels_rollouts_are_no_longer_reserved(example):
    example.write("fleet/more.yaml", "groups: {}\nchannels: {}\nrollouts: {}\n")
    assert plan_site(example.config())


def test_rule_names_are_unique_across_files(rolling):
    rolling.write("fleet/z-dup.yaml", "channels:\n  beta: panic-1.3.8\n")
    assert one(rolling, "channels.beta:", T0).startswith(
        "fleet/z-dup.yaml:2:3: channels.beta: duplicate channel name (first declared at fleet/rules.yaml:5)")


# --- compatibility -------------------------------------------------------------------------

def test_rollout_release_must_fit_every_device_it_covers(rolling):
    rolling.firmware("s3.bin", chip="esp32s3", version="2.0")
    rolling.write("fleet/more.yaml", """\
        releases:
          s3-2.0: {version: "2.0", file: firmware/s3.bin, hardware: [ESP32-S3 Box]}
        devices:
          "AA:00:00:00:00:01": {hardware: ESP32-S3 Box}
          "AA:00:00:00:00:02": {hardware: ESP32-S3 Box, release: s3-2.0}
        """)
    rules_file = rolling.root / "fleet/rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("to: {groups: [c6-boards]}", "to: all"))
    found = problems(rolling, T0 + timedelta(days=30))  # every stage open: the rollout reaches the S3 box
    rollout = [p for p in found if "rollouts.panic-1.4.0.release" in p]
    assert rollout[0].startswith("fleet/rules.yaml:8:14: rollouts.panic-1.4.0.release: release 'panic-1.4.0' does "
                                 "not fit 1 device(s) this rollout covers: AA:00:00:00:00:01 (fleet/more.yaml:4: "
                                 "hardware 'ESP32-S3 Box', release 'panic-1.4.0' is for ['FireBeetle 2 ESP32-C6'])")
    # The default channel does not fit the unpinned S3 box either; the pinned one is left alone.
    assert [p for p in found if "channels.stable" in p][0].startswith(
        "fleet/rules.yaml:4:11: channels.stable: no release of channel 'stable' fits 1 device(s) on it: "
        "AA:00:00:00:00:01")
    assert len(found) == 2, found
    # Already before the stage that would reach it opens: a scheduled build must not start failing later.
    assert problems(rolling, T0) == found


def test_device_chip_must_match_its_target_release(rolling):
    rolling.firmware("s3.bin", chip="esp32s3", version="2.0")
    rolling.write("fleet/more.yaml", f"""\
        releases:
          s3-2.0: {{version: "2.0", file: firmware/s3.bin}}
        devices:
          "AA:00:00:00:00:01": {{hardware: {C6}, chip: esp32s3, channel: beta}}
          "AA:00:00:00:00:02": {{hardware: {C6}, chip: esp32c6, release: s3-2.0}}
        """)
    found = problems(rolling, T0)
    # panic-1.4.0-rc1 declares no chip: its image's (esp32c6) counts.
    assert any("channels.beta: no release of channel 'beta' fits 1 device(s)" in p
               and "chip esp32s3, release 'panic-1.4.0-rc1' is for esp32c6" in p for p in found), found
    assert any(p.startswith("fleet/more.yaml:5:82: devices.AA:00:00:00:00:02.release: does not fit: chip esp32c6")
               for p in found), found


def test_channel_with_one_release_per_board(rolling):
    rolling.firmware("s3.bin", chip="esp32s3", version="1.3.8")
    rolling.write("fleet/more.yaml", """\
        releases:
          panic-s3-1.3.8: {version: "1.3.8", file: firmware/s3.bin, hardware: [ESP32-S3 Box]}
        devices:
          "AA:00:00:00:00:01": {hardware: ESP32-S3 Box, chip: esp32s3}
        """)
    rules_file = rolling.root / "fleet/rules.yaml"
    rules_file.write_text(rules_file.read_text().replace("stable: panic-1.3.8",
                                                         "stable: [panic-1.3.8, panic-s3-1.3.8]"))
    build_site(rolling.config(), now=T0)
    assert rolling.answer("AA:00:00:00:00:01")["release"] == "panic-s3-1.3.8"
    assert rolling.answer("AA:00:00:00:00:01")["chip"] == "esp32s3"
    fleet = fleet_of(rolling)
    c6 = next(d for d in fleet.devices.values() if bucket("panic-1.4.0", d.mac12) >= 5)
    assert rolling.answer(c6.mac)["release"] == "panic-1.3.8"


def test_url_release_without_chip_cannot_serve_a_chip_declaring_device(rolling):
    rolling.write("fleet/more.yaml", f"""\
        releases:
          remote: {{version: "2.0", url: "https://cdn.example.com/p.bin", md5: "{'a' * 32}",
                    sha256: "{'b' * 64}", size: 1234}}
        devices:
          "AA:00:00:00:00:01": {{chip: esp32c6, release: remote}}
        """)
    assert "has no known chip (a `url:` release must declare `chip:`)" in one(rolling, "AA:00:00:00:00:01.release", T0)
    more = rolling.root / "fleet/more.yaml"
    more.write_text(more.read_text().replace("size: 1234}", "size: 1234, chip: esp32c6}"))
    build_site(rolling.config(), now=T0)
    assert rolling.answer("AA:00:00:00:00:01")["chip"] == "esp32c6"


# --- downgrade -----------------------------------------------------------------------------

def test_allow_downgrade_reaches_the_answer_only_when_allowed(rolling):
    rolling.write("fleet/more.yaml", f"""\
        devices:
          "AA:00:00:00:00:01": {{hardware: {C6}, release: panic-1.3.8, allow_downgrade: true}}
          "AA:00:00:00:00:02": {{hardware: {C6}, release: panic-1.3.8}}
          "AA:00:00:00:00:03": {{hardware: {C6}, release: panic-1.4.0-rc1}}
        """)
    rel = rolling.root / "fleet/releases.yaml"
    rel.write_text(rel.read_text().replace('panic-1.4.0-rc1: {version: "1.4.0.1",',
                                           'panic-1.4.0-rc1: {allow_downgrade: true, version: "1.4.0.1",'))
    build_site(rolling.config(), now=T0)
    assert rolling.answer("AA:00:00:00:00:01")["allow_downgrade"] is True  # the device allows it
    assert "allow_downgrade" not in rolling.answer("AA:00:00:00:00:02")
    assert rolling.answer("AA:00:00:00:00:03")["allow_downgrade"] is True  # the release allows it
    rolling.write("fleet/more.yaml", 'devices:\n  "AA:00:00:00:00:01": {allow_downgrade: "yes"}\n')
    assert "expected true or false" in one(rolling, "AA:00:00:00:00:01.allow_downgrade", T0)


# --- explain and status --------------------------------------------------------------------

def test_explain_names_the_rule_and_why_others_did_not_apply(rolling):
    fleet = fleet_of(rolling)
    inside = next(d for d in fleet.devices.values() if bucket("panic-1.4.0", d.mac12) < 25)
    outside = next(d for d in fleet.devices.values() if bucket("panic-1.4.0", d.mac12) >= 25)
    text = "\n".join(explain(fleet, outside.mac, DEC1).lines())
    assert "target: release panic-1.3.8 (version 1.3.8), by channel stable" in text
    assert f"cohort bucket {bucket('panic-1.4.0', outside.mac12)} is outside stage 2 of 3 (25%)" in text
    assert "pin: no `release:` or `target_version:`" in text
    result = rolling.cli("explain", inside.mac.lower(), "--now", "2026-12-01T10:00:00Z")
    assert result.exit_code == 0, result.output
    assert "by rollout panic-1.4.0" in result.output and "-> rollout panic-1.4.0" in result.output
    assert "channel stable: on channel 'stable' (the default): release 'panic-1.3.8'; but a rule above comes first" \
        in result.output
    missing = rolling.cli("explain", "AA:00:00:00:00:42")
    assert missing.exit_code == 1 and "not a device of the fleet" in missing.output
    assert "Traceback" not in missing.output


def test_explain_agrees_with_the_build_for_every_device(rolling):
    plan = plan_site(rolling.config(), now=DEC1)
    fleet = plan.fleet
    rules = Rules(fleet, DEC1)
    for mac, device in fleet.devices.items():
        target, steps = rules.explain(device)
        assert target == plan.targets[mac]
        assert sum(s.chosen for s in steps) == (0 if target.rule == NONE else 1)
        assert steps[0].rule == PIN and steps[-1].rule == CHANNEL


def test_rollout_status_counts_devices_per_stage(rolling):
    fleet = fleet_of(rolling)
    plan = plan_site(rolling.config(), now=DEC1)
    receiving = {"panic-1.4.0": sum(t.rule == ROLLOUT for t in plan.targets.values())}
    status = rollout_status(fleet, DEC1, receiving)[0]
    expected = [sum(bucket("panic-1.4.0", d.mac12) < p for d in fleet.devices.values()) for p in (5, 25, 100)]
    assert [s.devices for s in status.stages] == expected
    assert status.state == "stage 2 of 3" and status.audience == 200 and status.receiving == expected[1]
    assert "* stage 2:  25% from 2026-12-01T09:00:00Z" in "\n".join(status.lines())
