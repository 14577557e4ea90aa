"""`otapub device …`: every change is an edit of the fleet YAML, validated first, written atomically."""

import json
import os
import subprocess
import sys

import pytest

from otapub.edit import KEEP, Target, add_device, delete_device, update_device
from otapub.firmware import digest_file
from otapub.imagegen import make_app_image
from otapub.tokens import djb2_0_wire
from tests.conftest import ROOT, SECRET


def files(repo) -> dict[str, tuple[bytes, int]]:
    """Every file of the repository except build state, with bytes and mtime."""
    found = {}
    for path in repo.root.rglob("*"):
        if path.is_file() and ".otapub" not in path.parts and "site" not in path.parts:
            found[str(path.relative_to(repo.root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def one_line_error(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    return "\n".join(lines)


# -- the verbs ----------------------------------------------------------------------------
def test_add_with_outside_firmware_copies_it_and_creates_a_release(example, tmp_path):
    outside = tmp_path / "build" / "PanicButton_v1.2.1.bin"
    outside.parent.mkdir()
    outside.write_bytes(make_app_image(version="1.2.1", size=3000))
    releases_before = (example.root / "fleet/releases.yaml").read_text()
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:99", "--version", "1.2.1", "--firmware-file", str(outside),
                         "--device-id", "panic_button_01", "--hardware", "FireBeetle 2 ESP32-C6")
    assert result.exit_code == 0, result.output
    assert "created release PanicButton_v1.2.1" in result.output
    copied = example.root / "firmware/PanicButton_v1.2.1.bin"
    assert copied.read_bytes() == outside.read_bytes()
    d = digest_file(copied)
    # the new release goes to the file that holds the releases, after the existing ones
    text = (example.root / "fleet/releases.yaml").read_text()
    assert text.startswith(releases_before)
    assert text[len(releases_before):] == (
        "  PanicButton_v1.2.1:\n"
        '    version: "1.2.1"\n'
        "    file: firmware/PanicButton_v1.2.1.bin\n"
        f'    md5: "{d.md5}"\n'
        f'    sha256: "{d.sha256}"\n')
    devices = (example.root / "fleet/devices.yaml").read_text()
    assert devices.endswith(
        '  "AA:BB:CC:DD:EE:99":\n'
        "    device_id: panic_button_01\n"
        "    hardware: FireBeetle 2 ESP32-C6\n"
        "    release: PanicButton_v1.2.1\n")
    assert example.cli("check").exit_code == 0
    assert example.cli("build").exit_code == 0


def test_add_reuses_the_release_with_that_file_and_version(example):
    before = (example.root / "fleet/releases.yaml").read_bytes()
    result = example.cli("device", "add", "aa:bb:cc:dd:ee:98", "--version", "1.3.7",
                         "--firmware-file", str(example.root / "firmware/panic_1.3.7.bin"))
    assert result.exit_code == 0, result.output
    assert "created release" not in result.output and "copied" not in result.output
    assert (example.root / "fleet/releases.yaml").read_bytes() == before
    assert '  "AA:BB:CC:DD:EE:98":\n    release: panic-1.3.7\n' in (example.root / "fleet/devices.yaml").read_text()


def test_firmware_file_without_version_takes_the_images_version(example, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(make_app_image(version="2.0.1", size=1024))
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:97", "--firmware-file", str(image))
    assert result.exit_code == 0, result.output
    assert 'version: "2.0.1"' in (example.root / "fleet/releases.yaml").read_text()


def test_version_alone_pins_like_target_version(example):
    result = example.cli("device", "add", "AABBCCDDEE96", "--version", "1.3.7", "--device-id", "x")
    assert result.exit_code == 0, result.output
    assert '  "AA:BB:CC:DD:EE:96":\n    device_id: x\n    target_version: "1.3.7"\n' in \
        (example.root / "fleet/devices.yaml").read_text()


def test_update_changes_only_the_lines_it_must(example):
    path = example.root / "fleet/devices.yaml"
    before = path.read_text()
    result = example.cli("device", "update", "11-22-33-44-55-66", "--release", "panic-1.3.7", "--device-id", "renamed")
    assert result.exit_code == 0, result.output
    # the release line takes target_version's place; other devices are untouched
    assert path.read_text() == before.replace(
        '    device_id: PanicAlarm_5566\n    target_version: "1.3.7"\n',
        "    device_id: renamed\n    release: panic-1.3.7\n")
    again = example.cli("device", "update", "11:22:33:44:55:66", "--release", "panic-1.3.7")
    assert again.exit_code == 0 and "unchanged" in again.output


def test_update_can_remove_a_field_with_an_empty_value(example):
    path = example.root / "fleet/devices.yaml"
    before = path.read_text()
    assert example.cli("device", "update", "AA:BB:CC:00:00:01", "--device-id", "").exit_code == 0
    assert path.read_text() == before.replace("  aa-bb-cc-00-00-01:\n    device_id: spare\n", "  aa-bb-cc-00-00-01:\n")


def test_token_scheme_channel_and_chip_are_set_and_removed(example):
    example.write("fleet/channels.yaml", "channels:\n  beta: panic-1.3.7\n")
    path = example.root / "fleet/devices.yaml"
    before = path.read_text()
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:97", "--device-id", "x", "--token-scheme", "djb2-0",
                         "--channel", "beta", "--chip", "ESP32-C6")
    assert result.exit_code == 0, result.output
    entry = '  "AA:BB:CC:DD:EE:97":\n    device_id: x\n    token_scheme: djb2-0\n    channel: beta\n    chip: esp32c6\n'
    assert path.read_text() == before + entry
    # the built site keys the answer by the device's own scheme, and the channel gives its release
    example.cli("build")
    answer = example.site / f"d/{djb2_0_wire('AABBCCDDEE97', SECRET).upper().zfill(8)}/AABBCCDDEE97.json"
    assert json.loads(answer.read_bytes())["release"] == "panic-1.3.7"
    result = example.cli("device", "update", "AA:BB:CC:DD:EE:97", "--token-scheme", "", "--channel", "")
    assert result.exit_code == 0, result.output
    assert path.read_text() == before + '  "AA:BB:CC:DD:EE:97":\n    device_id: x\n    chip: esp32c6\n'
    again = example.cli("device", "update", "AA:BB:CC:DD:EE:97", "--chip", "esp32-c6")
    assert again.exit_code == 0 and "unchanged" in again.output, "the same chip in another spelling"


def test_delete_removes_the_entry_and_nothing_else(example):
    path = example.root / "fleet/devices.yaml"
    before = path.read_text()
    result = example.cli("device", "delete", "aabb.ccdd.eeff")
    assert result.exit_code == 0, result.output
    assert path.read_text() == before.replace(
        '  "AA:BB:CC:DD:EE:FF":\n    device_id: PanicAlarm_EEFF\n    hardware: FireBeetle 2 ESP32-C6\n'
        "    release: panic-1.3.8\n", "")


def test_list_table_and_json_with_the_checkin_log(example):
    log = example.root / "state/checkins.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"time": "2026-01-02T03:04:05.000000Z", "mac": "AA:BB:CC:DD:EE:FF",
                               "version": "1.3.7", "decision": "update_offered"}) + "\n")
    result = example.cli("device", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["MAC", "DEVICE", "ID", "HARDWARE", "TARGET", "LAST", "CHECK", "REPORTED"]
    row = next(line for line in lines if line.startswith("AA:BB:CC:DD:EE:FF"))
    assert "PanicAlarm_EEFF" in row and "1.3.8 (panic-1.3.8)" in row and "2026-01-02T03:04:05" in row
    assert row.rstrip().endswith("1.3.7")
    data = json.loads(example.cli("device", "list", "--json").output)
    assert list(data) == sorted(["AA:BB:CC:DD:EE:FF", "11:22:33:44:55:66", "AA:BB:CC:00:00:01"])
    entry = data["AA:BB:CC:DD:EE:FF"]
    fw = digest_file(example.root / "firmware/panic_1.3.8.bin")
    assert entry["target_version"] == "1.3.8" and entry["checksum"] == fw.md5
    assert entry["last_check"].startswith("2026-01-02") and entry["last_version"] == "1.3.7"
    assert data["11:22:33:44:55:66"]["last_check"] is None


def test_get_shows_everything_and_the_token_only_on_request(example):
    result = example.cli("device", "get", "11:22:33:44:55:66")
    assert result.exit_code == 0, result.output
    assert "PanicAlarm_5566" in result.output and "djb2-0" in result.output and "fleet/devices.yaml:" in result.output
    assert "token" not in result.output.replace("token_scheme", "")
    shown = example.cli("device", "get", "112233445566", "--show-token", "--json")
    assert json.loads(shown.output)["token"] == djb2_0_wire("112233445566", SECRET)


def test_empty_fleet_lists_nothing(repo):
    result = repo.cli("device", "list")
    assert result.exit_code == 0 and "no devices" in result.output


def test_add_to_a_new_repository_creates_the_default_file(repo):
    repo.firmware("app_1.0.0.bin")
    result = repo.cli("device", "add", "AA:BB:CC:DD:EE:01", "--version", "1.0.0",
                      "--firmware-file", str(repo.root / "firmware/app_1.0.0.bin"))
    assert result.exit_code == 0, result.output
    text = (repo.root / "fleet/devices.yaml").read_text()
    assert text.startswith('devices:\n  "AA:BB:CC:DD:EE:01":\n    release: app_1.0.0\nreleases:\n  app_1.0.0:\n')
    assert repo.cli("build").exit_code == 0


# -- mistakes: one clean line, non-zero exit, nothing written -------------------------------
@pytest.mark.parametrize("args, message", [
    (("device", "get", "AA:BB:CC:DD:EE:00"), "no device AA:BB:CC:DD:EE:00"),
    (("device", "update", "AA:BB:CC:DD:EE:00", "--device-id", "x"), "no device AA:BB:CC:DD:EE:00"),
    (("device", "delete", "AA:BB:CC:DD:EE:00"), "no device AA:BB:CC:DD:EE:00"),
    (("device", "add", "AA:BB:CC:DD:EE:FF"), "already exists (fleet/devices.yaml:2)"),
    (("device", "add", "AA:BB:CC:DD:EE"), "is not a MAC address"),
    (("device", "get", "not-a-mac"), "is not a MAC address"),
    (("device", "add", "AA:BB:CC:DD:EE:01", "--release", "nope"), "unknown release 'nope'"),
    (("device", "add", "AA:BB:CC:DD:EE:01", "--release", "panic-1.3.7", "--version", "1.3.8"),
     "has version 1.3.7, not 1.3.8"),
    (("device", "add", "AA:BB:CC:DD:EE:01", "--version", "1.x"), "not a version"),
    (("device", "add", "AA:BB:CC:DD:EE:01", "--firmware-file", "missing.bin", "--version", "1.0"),
     "missing.bin: firmware file not found"),
    (("device", "add", "AA:BB:CC:DD:EE:01", "--chip", "esp33"), "chip: unknown chip 'esp33' (known: esp32,"),
    (("device", "update", "AA:BB:CC:DD:EE:FF", "--token-scheme", "md5"),
     "token_scheme: unknown scheme 'md5' (known: djb2-0, djb2-5381, hmac-sha256)"),
])
def test_mistakes_are_one_clean_line(example, args, message):
    before = files(example)
    result = example.cli(*args)
    error = one_line_error(result)
    assert message in error and len(error.splitlines()) == 1, error
    assert files(example) == before


@pytest.mark.parametrize("args,problem", [
    (("AA:BB:CC:00:00:01", "--version", "9.9"),
     "fleet/devices.yaml:12:21: devices.AA:BB:CC:00:00:01.target_version: no release has version 9.9"),
    (("AA:BB:CC:DD:EE:FF", "--channel", "betta"),  # where the new line would stand
     "fleet/devices.yaml:6:14: devices.AA:BB:CC:DD:EE:FF.channel: unknown channel 'betta'"),
])
def test_a_change_that_does_not_validate_names_file_line_and_field(example, args, problem):
    before = files(example)
    result = example.cli("device", "update", *args)
    assert result.exit_code == 1
    assert problem in result.output
    assert "nothing was written" in result.output
    assert files(example) == before


def test_hardware_incompatible_release_is_refused(example):
    before = files(example)
    result = example.cli("device", "update", "11:22:33:44:55:66", "--release", "panic-1.3.8")
    assert result.exit_code == 1 and "panic-1.3.8" in result.output and "hardware" in result.output
    assert files(example) == before


def test_failing_edit_removes_the_firmware_it_copied(example, tmp_path):
    image = tmp_path / "wrong.bin"
    image.write_bytes(make_app_image(version="1.2.1", size=1024))
    before = files(example)
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:01", "--version", "3.0.0", "--firmware-file", str(image))
    assert result.exit_code == 1, result.output
    assert "1.2.1" in result.output and "nothing was written" in result.output
    assert files(example) == before
    assert not (example.root / "firmware/wrong.bin").exists()


def test_firmware_never_overwrites_a_different_file_of_the_same_name(example, tmp_path):
    clash = tmp_path / "panic_1.3.7.bin"
    clash.write_bytes(make_app_image(version="1.3.7", size=1000, seed=99))
    before = files(example)
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:01", "--version", "1.3.7", "--firmware-file", str(clash))
    assert "already exists with different content" in one_line_error(result)
    assert files(example) == before


def test_invalid_fleet_blocks_edits(example):
    example.write("fleet/broken.yaml", "devices:\n  nonsense: {release: nope}\n")
    before = files(example)
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:01")
    assert result.exit_code == 1 and "fleet/broken.yaml:2" in result.output
    assert files(example) == before


def test_default_device_file_outside_the_fleet_is_refused(example):
    example.set_config(default_device_file="devices.yaml")
    result = example.cli("device", "add", "AA:BB:CC:DD:EE:01")
    assert "default_device_file" in one_line_error(result)


# -- preserving what people wrote ------------------------------------------------------------
HAND_WRITTEN = """\
# Fleet of the north building.   Maintained by ops; see RUNBOOK.md.
---
devices:

    # --- lobby ---
    "AA:BB:CC:DD:EE:FF":   # the one by the door
        device_id:   'PanicAlarm_EEFF'     # sticker says 01
        hardware: "FireBeetle 2 ESP32-C6"
        release: panic-1.3.8

    # spare, keep offline
    11:22:33:44:55:66:
        target_version: '1.3.7'    # pinned until the battery fix
    aa-bb-cc-00-00-01: { device_id: spare }   # flow style, on purpose

# end of devices: add new ones above this line
"""


def test_comments_quoting_and_layout_survive_edits_byte_for_byte(example):
    path = example.root / "fleet/devices.yaml"
    path.write_text(HAND_WRITTEN)
    config = example.config()
    add_device(config, "AA:BB:CC:DD:EE:01", device_id="new one", target=Target(version="1.3.7"))
    update_device(config, "11:22:33:44:55:66", target=Target(release="panic-1.3.7"))
    update_device(config, "AA:BB:CC:00:00:01", hardware="FireBeetle 2 ESP32-C6", device_id=KEEP)
    delete_device(config, "AA:BB:CC:DD:EE:FF")
    assert path.read_text() == """\
# Fleet of the north building.   Maintained by ops; see RUNBOOK.md.
---
devices:

    # --- lobby ---

    # spare, keep offline
    11:22:33:44:55:66:
        release: panic-1.3.7    # pinned until the battery fix
    aa-bb-cc-00-00-01: {device_id: spare, hardware: FireBeetle 2 ESP32-C6}   # flow style, on purpose
    "AA:BB:CC:DD:EE:01":
        device_id: new one
        target_version: "1.3.7"

# end of devices: add new ones above this line
"""
    assert example.cli("check").exit_code == 0


def test_a_value_edit_keeps_the_rest_of_its_line(example):
    path = example.root / "fleet/devices.yaml"
    path.write_text(HAND_WRITTEN)
    update_device(example.config(), "AA:BB:CC:DD:EE:FF", device_id="PanicAlarm_EEFF_2")
    assert path.read_text() == HAND_WRITTEN.replace("'PanicAlarm_EEFF'", "PanicAlarm_EEFF_2")


def test_crlf_files_keep_their_line_breaks(example):
    path = example.root / "fleet/devices.yaml"
    path.write_bytes(HAND_WRITTEN.replace("\n", "\r\n").encode())
    add_device(example.config(), "AA:BB:CC:DD:EE:02")
    data = path.read_bytes()
    assert data.startswith(HAND_WRITTEN.replace("\n", "\r\n").split("# end of devices")[0].encode()[:-2])
    assert b'"AA:BB:CC:DD:EE:02": {}\r\n' in data and b"\n" not in data.replace(b"\r\n", b"")


def test_flow_style_sections_are_refused_not_reflowed(example):
    path = example.root / "fleet/devices.yaml"
    path.write_text('devices: {"AA:BB:CC:DD:EE:FF": {release: panic-1.3.7}}\n')
    before = files(example)
    result = example.cli("device", "update", "AA:BB:CC:DD:EE:FF", "--device-id", "x")
    error = one_line_error(result)
    assert "fleet/devices.yaml:1" in error and "block style" in error
    assert files(example) == before


def test_a_device_is_edited_in_the_file_that_declares_it(example):
    other = example.write("fleet/north/building.yaml", """\
        # north building
        devices:

          "02:00:00:00:00:0A":   # hallway
            device_id: hall

          "02:00:00:00:00:0B":
            device_id: stairs
        """)
    devices_before = (example.root / "fleet/devices.yaml").read_bytes()
    update_device(example.config(), "02-00-00-00-00-0a", target=Target(version="1.3.7"))
    assert (example.root / "fleet/devices.yaml").read_bytes() == devices_before
    assert other.read_text().startswith('# north building\ndevices:\n\n  "02:00:00:00:00:0A":   # hallway\n'
                                        '    device_id: hall\n    target_version: "1.3.7"\n\n')
    # a new device goes to the default file, never to this one
    add_device(example.config(), "02:00:00:00:00:0C")
    assert "0C" not in other.read_text()


@pytest.mark.parametrize("section", ["devices:\n", "devices: ~\n", "devices: {}  # none yet\n", ""])
def test_new_devices_fit_an_empty_or_missing_section(example, section):
    path = example.root / "fleet/devices.yaml"
    path.write_text("# devices of the lab\n" + section)
    add_device(example.config(), "02:00:00:00:00:0D", device_id="lab")
    text = path.read_text()
    assert text.startswith("# devices of the lab\ndevices:") and "devices: \n" not in text
    assert text.endswith('\n  "02:00:00:00:00:0D":\n    device_id: lab\n')
    assert "# none yet" in text or "none yet" not in section


def test_blank_line_separated_entries_stay_separated(example):
    path = example.root / "fleet/devices.yaml"
    path.write_text('devices:\n  "02:00:00:00:00:01":\n    device_id: a\n\n  "02:00:00:00:00:02":\n    device_id: b\n')
    add_device(example.config(), "02:00:00:00:00:03", device_id="c")
    assert path.read_text().endswith('device_id: b\n\n  "02:00:00:00:00:03":\n    device_id: c\n')


# -- concurrency -------------------------------------------------------------------------------
def test_concurrent_edits_from_several_processes_lose_nothing(example):
    env = {**os.environ, "OTA_SERVER_SHARED_SECRET_KEY": SECRET, "PYTHONPATH": str(ROOT)}
    env.pop("OTAPUB_CONFIG", None)
    macs = [f"02:00:00:00:00:{i:02X}" for i in range(8)]
    base = [sys.executable, "-m", "otapub", "--config", str(example.config_file), "device"]
    procs = [subprocess.Popen([*base, "add", mac, "--device-id", f"dev-{i}", "--version", "1.3.7"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=example.root)
             for i, mac in enumerate(macs)]
    procs.append(subprocess.Popen([*base, "update", "AA:BB:CC:00:00:01", "--hardware", "board-x"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=example.root))
    outputs = [(p.wait(timeout=120), p.stdout.read().decode()) for p in procs]
    assert all(code == 0 for code, _ in outputs), outputs
    data = json.loads(example.cli("device", "list", "--json").output)
    assert set(macs) <= set(data)
    assert {data[mac]["device_id"] for mac in macs} == {f"dev-{i}" for i in range(8)}
    assert data["AA:BB:CC:00:00:01"]["hardware"] == "board-x"
    assert example.cli("check").exit_code == 0
    leftovers = [p for p in (example.root / "fleet").iterdir() if "otapub-tmp" in p.name]
    assert leftovers == []


def test_every_device_command_has_help(example):
    for verb in ("list", "get", "add", "update", "delete"):
        result = example.cli("device", verb, "--help")
        assert result.exit_code == 0 and len(result.output.splitlines()) > 3
    assert example.cli("import-seed", "--help").exit_code == 0
