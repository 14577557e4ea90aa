"""Firmware inspection at `check`/`build` and `otapub inspect` (issue 6): the binaries themselves are checked."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from otapub.build import build_site
from otapub.errors import ValidationError
from otapub.image import inspect_file
from otapub.imagegen import make_app_image
from otapub.render import plan_site
from tests.conftest import ROOT, esp32_image, problems

MAC = "AA:00:00:00:00:01"


def use(repo, name: str, data: bytes | None = None, source: Path | None = None, **release) -> None:
    """firmware/<name> (a copy of a fixture, given bytes, or a generated image) as release `r`, given to MAC."""
    if source is not None:
        (repo.root / "firmware").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, repo.root / "firmware" / name)
    else:
        repo.firmware(name, data)
    fields = {"version": "1.0.0", "file": f"firmware/{name}", **release}
    repo.write("fleet/fleet.yaml", yaml.safe_dump({
        "releases": {"r": fields},
        "devices": {MAC: {"release": "r"}},
    }, sort_keys=False))


def only(repo) -> str:
    found = problems(repo)
    assert len(found) == 1, found
    return found[0]


# --- real images that must be refused -----------------------------------------------------------

@pytest.mark.parametrize("name,why", [
    ("bootloader_esp32.bin", "not an application"),
    ("esp8266_deepsleep.bin", "ESP8266"),
    ("truncated_blink_esp32s2.bin", "truncated"),
    ("esp32s3_header.bin", "not an application"),
])
def test_build_refuses_real_images_that_are_not_apps(repo, name, why):
    use(repo, name, source=esp32_image(name), version_source="declared")
    message = only(repo)
    assert message.startswith("fleet/fleet.yaml:4:11: releases.r.file: firmware/" + name)
    assert "is not an ESP32 application image" in message and why in message
    result = repo.cli("build")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not repo.site.exists(), "a failed build writes nothing"
    assert repo.cli("check").exit_code == 1


def test_real_esp_idf_image_builds_with_its_facts_in_the_answer(repo):
    # Its descriptor version (qa-test-v5.0-...) is not a dotted number: the release declares its own.
    use(repo, "blink.bin", source=esp32_image("esp_idf_blink_esp32s2.bin"), chip="esp32s2")
    assert "says 'qa-test-v5.0-20220830-4-g4532e6'" in only(repo)
    use(repo, "blink.bin", source=esp32_image("esp_idf_blink_esp32s2.bin"), chip="esp32s2", version_source="declared")
    build_site(repo.config())
    a = repo.answer(MAC)
    assert (a["chip"], a["project_name"], a["secure_version"]) == ("esp32s2", "blink", 0)


def test_real_image_for_another_chip_is_refused(repo):
    use(repo, "blink.bin", source=esp32_image("esp_idf_blink_esp32s2.bin"), chip="esp32", version_source="declared")
    message = only(repo)
    assert message.startswith("fleet/fleet.yaml:5:11: releases.r.chip: declared chip esp32, but firmware/blink.bin "
                              "is an esp32s2 image")


@pytest.mark.parametrize("name", ["fota_1.nosecurity.ino.bin", "fota_fota_via_https_v2.bin"])
def test_arduino_builds_need_version_source_declared(repo, name):
    use(repo, "sketch.bin", source=esp32_image(name), version="2.0.0")
    message = only(repo)
    assert message.startswith("fleet/fleet.yaml:3:14: releases.r.version:")
    assert "version_source: declared" in message
    use(repo, "sketch.bin", source=esp32_image(name), version="2.0.0", version_source="declared", chip="esp32")
    build_site(repo.config())
    a = repo.answer(MAC)
    assert a["firmware_version"] == "2.0.0" and a["chip"] == "esp32"


def test_signed_real_image_is_accepted(repo):
    use(repo, "hello.bin", source=esp32_image("hello-world-signed.bin"), version_source="declared", chip="esp32")
    plan = plan_site(repo.config())
    assert plan.images["r"].project_name == "hello-world"


# --- generated images ----------------------------------------------------------------------

def test_corrupt_checksum_and_hash_are_refused(repo):
    good = bytearray(make_app_image(version="1.0.0"))
    good[0x200] ^= 0xFF  # filler byte: XOR checksum and appended SHA-256 both break
    use(repo, "bad.bin", bytes(good))
    assert "XOR checksum mismatch" in only(repo)
    nohash = bytearray(make_app_image(version="1.0.0", hash_appended=True))
    nohash[-1] ^= 0x01  # only the appended SHA-256 breaks
    use(repo, "bad.bin", bytes(nohash))
    assert "appended SHA-256 does not match" in only(repo)


def test_random_bytes_are_refused(repo):
    use(repo, "random.bin", hashlib.sha256(b"x").digest() * 100)
    assert "first byte is 0x" in only(repo)


def test_version_mismatch_is_refused_unless_declared(repo):
    use(repo, "app.bin", make_app_image(version="1.3.7"), version="1.3.8")
    message = only(repo)
    assert message.startswith("fleet/fleet.yaml:3:14: releases.r.version: declared version 1.3.8, but the app "
                              "descriptor of firmware/app.bin (project example) says '1.3.7'")
    use(repo, "app.bin", make_app_image(version="1.3.7"), version="1.3.8", version_source="declared")
    plan_site(repo.config())
    use(repo, "app.bin", make_app_image(version="v1.3.8.0"), version="1.3.8")  # same version, other spelling
    plan_site(repo.config())


def test_no_descriptor_needs_version_source_declared(repo):
    use(repo, "app.bin", make_app_image(with_descriptor=False))
    assert "has no app descriptor" in only(repo)
    use(repo, "app.bin", make_app_image(with_descriptor=False), version_source="declared")
    build_site(repo.config())
    a = repo.answer(MAC)
    assert a["chip"] == "esp32c6" and "project_name" not in a and "secure_version" not in a


def test_chip_is_checked_and_normalised(repo):
    use(repo, "app.bin", make_app_image(chip="esp32s3", version="1.0.0"), chip="ESP32-C6")
    assert "declared chip esp32c6, but firmware/app.bin is an esp32s3 image" in only(repo)
    use(repo, "app.bin", make_app_image(chip="esp32s3", version="1.0.0"), chip="ESP32-S3")
    plan_site(repo.config())
    use(repo, "app.bin", make_app_image(chip="esp32s3", version="1.0.0"), chip="esp99")
    assert "unknown chip 'esp99'" in only(repo)


def test_secure_version_is_checked_and_published(repo):
    use(repo, "app.bin", make_app_image(version="1.0.0", secure_version=3), secure_version=2)
    assert "declared secure_version 2, but firmware/app.bin has 3" in only(repo)
    use(repo, "app.bin", make_app_image(version="1.0.0", secure_version=3), secure_version=3)
    build_site(repo.config())
    assert repo.answer(MAC)["secure_version"] == 3


def test_every_release_is_inspected_even_when_no_device_gets_it(repo):
    use(repo, "app.bin", make_app_image(version="1.0.0"))
    repo.firmware("unused.bin", b"\xe9 not an image")
    repo.write("fleet/more.yaml", "releases:\n  unused: {version: '2', file: firmware/unused.bin}\n")
    assert "releases.unused.file: firmware/unused.bin is not an ESP32 application image" in only(repo)


def test_image_and_checksum_problems_are_reported_together(repo):
    use(repo, "app.bin", make_app_image(version="1.0.0"), version="2.0.0", md5="0" * 32)
    found = problems(repo)
    assert len(found) == 2 and "checksum mismatch" in found[0] and "says '1.0.0'" in found[1]


def test_inspection_is_cached_like_digests(repo):
    use(repo, "app.bin", make_app_image(version="1.0.0"))
    config = repo.config()
    first = build_site(config)
    assert first.inspected == 1
    repo.write("fleet/more.yaml", 'devices:\n  "AA:00:00:00:00:02": {release: r}\n')
    second = build_site(config)
    assert not second.noop and second.inspected == 0 and second.hashed == 0
    # A changed file is inspected (and refused) again.
    repo.firmware("app.bin", make_app_image(version="1.0.1"))
    with pytest.raises(ValidationError, match="says '1.0.1'"):
        build_site(config)


def test_a_cached_failure_is_still_a_failure(repo):
    use(repo, "app.bin", make_app_image(version="1.0.0"))
    build_site(repo.config())
    repo.firmware("app.bin", b"\x00" * 100)
    for _ in range(2):
        with pytest.raises(ValidationError, match="not an ESP32 image"):
            build_site(repo.config())


# --- otapub inspect ------------------------------------------------------------------------

def test_inspect_prints_everything(repo, tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(make_app_image(chip="esp32s3", version="2.1.0", project_name="PanicButton", secure_version=4))
    result = repo.cli("inspect", str(path))
    assert result.exit_code == 0, result.output
    for text in ("chip:           esp32s3 (chip id 9)", "project_name:   PanicButton", "version:        2.1.0",
                 "secure_version: 4", "segments:       2"):
        assert text in result.output
    data = json.loads(repo.cli("inspect", "--json", str(path)).output)
    assert data["valid"] is True and data["chip"] == "esp32s3" and data["version"] == "2.1.0"
    assert data["secure_version"] == 4 and len(data["segments"]) == 2


def test_inspect_refuses_a_bootloader(repo):
    path = esp32_image("bootloader_esp32.bin")
    result = repo.cli("inspect", str(path))
    assert result.exit_code == 1 and "not an application" in result.output and "Traceback" not in result.output
    data = json.loads(repo.cli("inspect", "--json", str(path)).stdout)
    assert data["valid"] is False and "not an application" in data["error"]


# --- the repository's own example ----------------------------------------------------------

def test_example_firmware_are_valid_images_matching_the_example_fleet():
    releases = yaml.safe_load((ROOT / "fleet/releases.yaml").read_text())["releases"]
    assert releases
    for release in releases.values():
        info = inspect_file(ROOT / release["file"])
        assert (info.chip, info.version, info.project_name) == (release["chip"], release["version"], "PanicButton")


def test_example_fleet_builds(tmp_path):
    from click.testing import CliRunner

    from otapub.cli import main

    for name in ("fleet", "firmware"):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "config.json").write_text("{}")
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "config.json"), "build"],
                                env={"OTA_SERVER_SHARED_SECRET_KEY": "x"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "site/d").glob("*/*.json"))) == len(
        yaml.safe_load((ROOT / "fleet/devices.yaml").read_text())["devices"])
