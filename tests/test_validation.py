"""Every user mistake in the fleet YAML: located (file:line:column), named, all at once, nothing written."""

import os

import pytest

from otapub.build import build_site
from otapub.render import plan_site
from tests.conftest import one, problems


def test_example_is_valid(example):
    plan = plan_site(example.config())
    assert len(plan.answers) == 3


def test_yaml_syntax_error(example):
    example.write("fleet/devices.yaml", "devices:\n  AA:BB:CC:DD:EE:01: {device_id: x\n")
    assert one(example, "invalid YAML").startswith("fleet/devices.yaml:3:")


@pytest.mark.parametrize("value,expected", [
    ("2026-13-01", "'2026-13-01' is not a valid timestamp (month must be in 1..12)"),
    ("!!int twelve", "'twelve' is not a valid int"),
    ("1" * 5000, "is not a valid int (Exceeds the limit"),
])
def test_a_value_its_yaml_type_cannot_hold_is_a_located_yaml_error(example, value, expected):
    example.write("fleet/rollouts.yaml", f"""\
        rollouts:
          r:
            release: panic-1.3.8
            to: all
            stages:
              - percent: 10
                not_before: {value}
        """)
    found = one(example, "invalid YAML")
    assert found.startswith("fleet/rollouts.yaml:7:") and expected in found, found


def test_bytes_yaml_does_not_allow_are_located(example):
    (example.root / "fleet/more.yaml").write_bytes(b"devices:\n  aa-bb-cc-00-00-07:\n    device_id: x\x00y\n")
    assert one(example, "invalid YAML").startswith(
        "fleet/more.yaml:3:17: invalid YAML: control characters are not allowed (byte #x00)")
    (example.root / "fleet/more.yaml").write_bytes(b"devices:\n  aa-bb-cc-00-00-07:\n    device_id: \xff\n")
    assert one(example, "invalid YAML").startswith("fleet/more.yaml:3:16: invalid YAML: invalid leading UTF-8 octet")


def test_a_fleet_file_that_cannot_be_read_is_reported_not_skipped(example):
    (example.root / "fleet/gone.yaml").symlink_to(example.root / "nowhere.yaml")
    assert one(example, "gone.yaml") == "fleet/gone.yaml: cannot read: No such file or directory"


def test_duplicate_key_in_one_mapping(example):
    example.write("fleet/more.yaml", "devices:\n  AA:BB:CC:DD:EE:01:\n    device_id: a\n    device_id: b\n")
    assert "fleet/more.yaml:4:5" in one(example, "duplicate key 'device_id'")


def test_unknown_keys_everywhere(example):
    example.write("fleet/bad.yaml", """\
        fleets: {}
        releases:
          r1: {version: "1", file: firmware/panic_1.3.7.bin, colour: red}
        devices:
          AA:BB:CC:DD:EE:01: {device_id: x, relase: r1}
        """)
    found = problems(example)
    assert any(p.startswith("fleet/bad.yaml:1:1: fleets: unknown top-level key") for p in found)
    assert any(p.startswith("fleet/bad.yaml:3:54: colour: unknown key in release 'r1'") for p in found)
    assert any(p.startswith("fleet/bad.yaml:5:37: relase: unknown key in device AA:BB:CC:DD:EE:01") for p in found)


def test_missing_required_fields(example):
    example.write("fleet/bad.yaml", "releases:\n  r1: {file: firmware/panic_1.3.7.bin}\n  r2: {version: '2'}\n")
    assert "fleet/bad.yaml:2:7: releases.r1.version: missing required field" in problems(example)
    assert "needs exactly one of `file:`" in one(example, "releases.r2:")


def test_url_release_needs_checksums_and_size(example):
    example.write("fleet/bad.yaml", "releases:\n  r1: {version: '2', url: 'https://cdn.example.com/a.bin'}\n")
    for name in ("md5", "sha256", "size"):
        assert f"releases.r1.{name}: required for a `url:` release" in one(example, f"releases.r1.{name}")


def test_invalid_mac(example):
    example.write("fleet/bad.yaml", "devices:\n  AA:BB:CC:DD:EE: {}\n")
    assert one(example, "is not a MAC address").startswith("fleet/bad.yaml:2:3: devices:")


def test_duplicate_mac_after_normalisation_names_both_places(example):
    example.write("fleet/z-more.yaml", "devices:\n  aabbccddeeff: {device_id: twin}\n")
    message = one(example, "duplicate device")
    assert message.startswith("fleet/z-more.yaml:2:3: devices.AA:BB:CC:DD:EE:FF:")
    assert "fleet/devices.yaml:2:3" in message


def test_sexagesimal_mac_is_still_a_mac(example):
    # YAML 1.1 would read an unquoted 11:22:33:44:55:67 as a base-60 integer.
    example.write("fleet/more.yaml", "devices:\n  11:22:33:44:55:67: {device_id: sixty}\n")
    plan = plan_site(example.config())
    assert "11:22:33:44:55:67" in plan.fleet.devices


def test_duplicate_release_across_files(example):
    example.write("fleet/sub/dir/more.yaml",
                  "releases:\n  panic-1.3.7: {version: '1.3.7', file: firmware/panic_1.3.7.bin}\n")
    message = one(example, "duplicate release name")
    assert message.startswith("fleet/sub/dir/more.yaml:2:3: releases.panic-1.3.7:")
    assert "fleet/releases.yaml:2" in message


def test_unknown_release_suggests(example):
    example.write("fleet/more.yaml", "devices:\n  AA:BB:CC:DD:EE:01: {release: panic-1.3.9}\n")
    message = one(example, "unknown release")
    assert message.startswith("fleet/more.yaml:2:32: devices.AA:BB:CC:DD:EE:01.release:")
    assert "did you mean" in message


def test_target_version_missing_and_ambiguous(example):
    example.write("fleet/more.yaml", """\
        releases:
          panic-1.3.7-copy: {version: "1.3.7.0", file: firmware/panic_1.3.7.bin}
        devices:
          AA:BB:CC:DD:EE:01: {target_version: "9.9"}
        """)
    assert "no release has version 9.9" in one(example, "AA:BB:CC:DD:EE:01.target_version")
    assert "ambiguous: releases panic-1.3.7, panic-1.3.7-copy" in one(example, "11:22:33:44:55:66.target_version")


def test_target_version_picks_by_hardware(example):
    example.firmware("other.bin", size=100, version="1.3.8")
    example.write("fleet/more.yaml", """\
        releases:
          other-1.3.8: {version: "1.3.8", file: firmware/other.bin, hardware: [Other Board]}
        devices:
          AA:BB:CC:DD:EE:01: {target_version: "1.3.8", hardware: Other Board}
          AA:BB:CC:DD:EE:02: {target_version: "1.3.8", hardware: Unknown Board}
        """)
    assert "none for hardware 'Unknown Board'" in one(example, "AA:BB:CC:DD:EE:02")
    assert not [p for p in problems(example) if "AA:BB:CC:DD:EE:01" in p]


@pytest.mark.parametrize("value,needle", [("1.2-beta", "not a version"), ("1.10", "is a number in YAML"),
                                          ("[1]", "expected a version")])
def test_bad_version_strings(example, value, needle):
    example.write("fleet/more.yaml", f"releases:\n  r9:\n    version: {value}\n    file: firmware/panic_1.3.7.bin\n")
    assert one(example, "releases.r9.version").startswith("fleet/more.yaml:3:14")
    assert needle in one(example, "releases.r9.version")


def test_missing_firmware_file(example):
    (example.root / "firmware/panic_1.3.8.bin").unlink()
    assert one(example, "not found").startswith("fleet/releases.yaml:7:")


@pytest.mark.parametrize("path", ["../outside.bin", "/etc/passwd", "firmware/link.bin"])
def test_firmware_path_escaping_the_repository(example, path):
    (example.root.parent / "outside.bin").write_bytes(b"x" * 10)
    os.symlink(example.root.parent / "outside.bin", example.root / "firmware/link.bin")
    example.write("fleet/more.yaml", f"releases:\n  r9: {{version: '2', file: '{path}'}}\n")
    message = one(example, "releases.r9.file")
    assert message.startswith("fleet/more.yaml:2:")
    assert "absolute" in message or "outside the repository" in message


def test_checksum_mismatch_shows_both_digests(example):
    example.write("fleet/more.yaml", "releases:\n  r9:\n    version: '2'\n    file: firmware/panic_1.3.7.bin\n"
                  f"    md5: '{'0' * 32}'\n    sha256: {'A' * 64}\n")
    real = example.firmware("panic_1.3.7.bin", size=3000)
    md5 = one(example, "releases.r9.md5")
    assert md5.startswith("fleet/more.yaml:5:10") and f"declared {'0' * 32}, file has {real.md5}" in md5
    assert f"declared {'a' * 64}, file has {real.sha256}" in one(example, "releases.r9.sha256")


def test_device_hardware_not_listed_by_its_release(example):
    example.write("fleet/more.yaml", "devices:\n  AA:BB:CC:DD:EE:01: {hardware: ESP32-S3 Box, release: panic-1.3.8}\n")
    message = one(example, "AA:BB:CC:DD:EE:01.release")
    assert "is for ['FireBeetle 2 ESP32-C6'], not for this device's hardware 'ESP32-S3 Box'" in message


def test_all_errors_in_one_run_and_site_unchanged(example):
    build_site(example.config())
    before = example.snapshot()
    example.write("fleet/more.yaml", """\
        releases:
          r9: {version: x}
        devices:
          nope: {}
          AA:BB:CC:DD:EE:01: {release: missing}
        """)
    (example.root / "fleet/devices.yaml").write_text((example.root / "fleet/devices.yaml").read_text()
                                                    .replace("PanicAlarm_EEFF", "renamed"))
    result = example.cli("build")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.output.count("fleet/more.yaml:") >= 4
    assert "nothing was written" in result.output
    assert example.snapshot() == before


def test_unknown_token_scheme(example):
    example.write("fleet/more.yaml", "devices:\n  AA:BB:CC:DD:EE:01: {token_scheme: md5}\n")
    assert "unknown token scheme 'md5'" in one(example, "AA:BB:CC:DD:EE:01.token_scheme")


def test_top_level_must_be_a_mapping(example):
    example.write("fleet/more.yaml", "- just\n- a list\n")
    assert one(example, "expected a mapping").startswith("fleet/more.yaml:1:1")


def test_unquoted_numeric_digest_gets_a_hint(example):
    example.write("fleet/more.yaml",
                  f"releases:\n  r9: {{version: '2', file: firmware/panic_1.3.7.bin, md5: {'1' * 32}}}\n")
    assert "quote it" in one(example, "releases.r9.md5")


def test_a_site_inside_the_fleet_is_refused_by_check_as_by_build(example):
    for site_dir in ("fleet/site", "."):
        example.set_config(site_dir=site_dir)
        built, checked = example.cli("build"), example.cli("check")
        assert built.exit_code == checked.exit_code == 1 and "must not contain each other" in built.output
        assert checked.output == built.output and "Traceback" not in built.output
    assert not (example.root / "fleet/site").exists()
