"""`otapub import-seed`: a seed server's devices.json and config.json become a fleet that builds."""

import hashlib
import json

import pytest

from otapub.imagegen import make_app_image
from otapub.tokens import djb2_0
from tests.conftest import SECRET

# The seed README's examples, verbatim.
SEED_CONFIG = """\
{
  "shared_secret_key": "your-device-secret-key",
  "server_port": 5000,
  "server_host": "0.0.0.0",
  "debug_mode": false,
  "log_level": "INFO",
  "devices_file": "devices.json",
  "firmware_directory": "firmware",
  "admin_api_key": "change-admin-api-key-in-production"
}
"""
SEED_DEVICES = """\
{
  "AA:BB:CC:DD:EE:FF": {
    "device_id": "panic_button_01",
    "hardware_version": "1.0",
    "target_version": "1.2.1",
    "firmware_url": "http://example.com/firmware/PanicButton_v1.2.1.bin",
    "checksum": "5f4dcc3b5aa765d61d8327deb882cf99",
    "last_check": null,
    "last_update": null
  }
}
"""
README_MD5 = "5f4dcc3b5aa765d61d8327deb882cf99"  # md5("password"): not an image anyone can flash


class SeedDir:
    def __init__(self, folder, md5):
        self.folder, self.md5 = folder, md5

    def __truediv__(self, name):
        return self.folder / name


@pytest.fixture
def seed(tmp_path):
    """The seed server's folder: config.json, devices.json and firmware/ (a real app image)."""
    folder = tmp_path / "seed"
    (folder / "firmware").mkdir(parents=True)
    image = make_app_image(version="1.2.1", project_name="PanicButton", size=3000)
    (folder / "firmware/PanicButton_v1.2.1.bin").write_bytes(image)
    (folder / "config.json").write_text(SEED_CONFIG)
    # The README's checksum is md5("password"); a seed that served this image held its MD5.
    md5 = hashlib.md5(image).hexdigest()
    (folder / "devices.json").write_text(SEED_DEVICES.replace(README_MD5, md5))
    return SeedDir(folder, md5)


def run(repo, seed, *extra):
    return repo.cli("import-seed", str(seed / "devices.json"), "--config", str(seed / "config.json"), *extra)


def snapshot(repo) -> dict[str, bytes]:
    return {str(p.relative_to(repo.root)): p.read_bytes() for p in repo.root.rglob("*")
            if p.is_file() and ".otapub" not in p.parts and "site" not in p.parts}


def test_the_seeds_example_becomes_a_fleet_that_builds(repo, seed):
    result = run(repo, seed)
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "created release PanicButton_v1.2.1" in result.output
    text = (repo.root / "fleet/devices.yaml").read_text()
    assert text == (
        "devices:\n"
        '  "AA:BB:CC:DD:EE:FF":\n'
        "    device_id: panic_button_01\n"
        '    hardware: "1.0"\n'
        "    release: PanicButton_v1.2.1\n"
        "    token_scheme: djb2-0\n"
        "releases:\n"
        "  PanicButton_v1.2.1:\n"
        '    version: "1.2.1"\n'
        "    file: firmware/PanicButton_v1.2.1.bin\n"
        f'    md5: "{seed.md5}"\n'
        f'    sha256: "{hashlib.sha256((seed / "firmware/PanicButton_v1.2.1.bin").read_bytes()).hexdigest()}"\n')
    assert (repo.root / "firmware/PanicButton_v1.2.1.bin").read_bytes() == \
        (seed / "firmware/PanicButton_v1.2.1.bin").read_bytes()
    # secrets are reported, never written; the seed's placeholders are called out
    assert "shared_secret_key not written" in result.output and "placeholder" in result.output
    assert "your-device-secret-key" not in (repo.root / "config.json").read_text()
    assert "last_check" not in text
    build = repo.cli("build")
    assert build.exit_code == 0, build.output
    # the device keeps authenticating the way the seed's server checked it (djb2 from 0)
    answer = repo.site / "d" / djb2_0("AABBCCDDEEFF", SECRET) / "AABBCCDDEEFF.json"
    data = json.loads(answer.read_text())
    assert data["firmware_version"] == "1.2.1" and data["checksum"] == seed.md5


def test_running_it_again_changes_nothing(repo, seed):
    assert run(repo, seed).exit_code == 0
    before = {path: (data, (repo.root / path).stat().st_mtime_ns) for path, data in snapshot(repo).items()}
    again = run(repo, seed)
    assert again.exit_code == 0, again.output
    assert "0 added, 0 updated, 1 unchanged" in again.output and "nothing to change" in again.output
    assert {path: (data, (repo.root / path).stat().st_mtime_ns) for path, data in snapshot(repo).items()} == before


def test_runtime_state_is_reported_not_imported(repo, seed):
    devices = json.loads((seed / "devices.json").read_text())
    devices["11:22:33:44:55:66"] = {"device_id": "b", "target_version": "1.2.1",
                                    "firmware_url": "http://example.com/firmware/PanicButton_v1.2.1.bin",
                                    "checksum": seed.md5, "last_check": "2025-03-01T10:00:00",
                                    "last_update": "2025-02-01T09:00:00"}
    (seed / "devices.json").write_text(json.dumps(devices))
    result = run(repo, seed)
    assert result.exit_code == 0, result.output
    assert "2025-03-01T10:00:00" in result.output and "2025-02-01T09:00:00" in result.output
    text = (repo.root / "fleet/devices.yaml").read_text()
    assert "2025" not in text and "last_" not in text
    assert text.count("release: PanicButton_v1.2.1") == 2, "one release per distinct triple"
    assert text.count("PanicButton_v1.2.1:\n") == 1


def test_distinct_versions_become_distinct_releases(repo, seed):
    image = make_app_image(version="1.3.0", size=2000)
    (seed / "firmware/PanicButton_v1.3.0.bin").write_bytes(image)
    devices = json.loads((seed / "devices.json").read_text())
    devices["aa-bb-cc-dd-ee-01"] = {"target_version": "1.3.0", "checksum": hashlib.md5(image).hexdigest(),
                                    "firmware_url": "http://example.com/firmware/PanicButton_v1.3.0.bin"}
    (seed / "devices.json").write_text(json.dumps(devices))
    assert run(repo, seed).exit_code == 0
    text = (repo.root / "fleet/devices.yaml").read_text()
    assert "  PanicButton_v1.2.1:\n" in text and "  PanicButton_v1.3.0:\n" in text
    assert repo.cli("check").exit_code == 0


def test_a_checksum_the_file_does_not_have_stops_everything(repo, seed):
    (seed / "devices.json").write_text(SEED_DEVICES)  # the README's md5("password")
    result = run(repo, seed)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert README_MD5 in result.output and "nothing was written" in result.output
    assert snapshot(repo) == {"config.json": b"{}"}


def test_missing_firmware_fails_unless_skipped(repo, seed):
    (seed / "firmware/PanicButton_v1.2.1.bin").unlink()
    result = run(repo, seed)
    assert result.exit_code == 1 and "PanicButton_v1.2.1.bin" in result.output
    assert not (repo.root / "fleet").exists()
    skipped = run(repo, seed, "--skip-missing")
    assert skipped.exit_code == 0, skipped.output
    assert "imported without a release" in skipped.output
    assert "release" not in (repo.root / "fleet/devices.yaml").read_text()


def test_bad_seed_data_is_reported_per_device_and_writes_nothing(repo, seed):
    (seed / "devices.json").write_text(json.dumps({"not-a-mac": {}, "AA:BB:CC:DD:EE:01": {"target_version": 5},
                                                   "aa:bb:cc:dd:ee:01": {}}, indent=2))
    result = run(repo, seed)
    assert result.exit_code == 1
    where = seed / "devices.json"
    assert f"{where}:2: not-a-mac: 'not-a-mac' is not a MAC address" in result.output
    assert f"{where}:3: AA:BB:CC:DD:EE:01: target_version: expected a string" in result.output
    assert f"{where}:6: aa:bb:cc:dd:ee:01: the same device as" in result.output
    assert not (repo.root / "fleet").exists()
    (seed / "devices.json").write_text("{oops")
    result = run(repo, seed)
    assert result.exit_code == 1 and "devices.json:1:2: invalid JSON" in result.output


def test_seed_settings_carry_over_once(repo, seed):
    config = json.loads(SEED_CONFIG)
    config.update(server_port=8080, log_level="DEBUG")
    (seed / "config.json").write_text(json.dumps(config))
    result = run(repo, seed)
    assert result.exit_code == 0, result.output
    written = json.loads((repo.root / "config.json").read_text())
    assert written == {"server_port": 8080, "log_level": "DEBUG"}
    again = run(repo, seed)
    assert "nothing to change" in again.output
    config["server_port"] = "eighty"
    (seed / "config.json").write_text(json.dumps(config))
    bad = run(repo, seed)
    assert bad.exit_code == 1 and "server_port" in bad.output
    assert json.loads((repo.root / "config.json").read_text()) == written


def test_imported_devices_can_be_administered(repo, seed):
    assert run(repo, seed).exit_code == 0
    result = repo.cli("device", "update", "AA:BB:CC:DD:EE:FF", "--device-id", "lobby")
    assert result.exit_code == 0, result.output
    assert "device_id: lobby" in (repo.root / "fleet/devices.yaml").read_text()
