"""`otapub plan` against a real git repository in tmp_path."""

import json

import pytest

from tests.conftest import git


@pytest.fixture
def committed(example):
    git(example, "init", "-q", "-b", "main")
    git(example, "add", "-A")
    git(example, "commit", "-qm", "base")
    return example


def plan_json(repo, *args):
    result = repo.cli("plan", "--format", "json", *args, env={"OTA_SERVER_SHARED_SECRET_KEY": ""})
    return result, json.loads(result.output) if result.output.startswith("{") else None


def test_no_change(committed):
    result, data = plan_json(committed)
    assert result.exit_code == 0 and data["valid"]
    assert data["target_changes"] == [] and data["devices_added"] == [] and data["base_ref"] == "HEAD"
    text = committed.cli("plan").output
    assert "No change to any device." in text


def test_grouped_target_changes_adds_removes_and_loud_checksum(committed):
    devices = committed.root / "fleet/devices.yaml"
    text = devices.read_text().replace('target_version: "1.3.7"',
                                       'target_version: "1.3.7"\n    hardware: FireBeetle 2 ESP32-C6')
    text = text.replace('target_version: "1.3.7"', "release: panic-1.3.8")
    text = text[: text.index("  aa-bb-cc-00-00-01")]
    text += "  AA:BB:CC:00:00:09: {release: panic-1.3.7}\n  AA:BB:CC:00:00:0A: {release: panic-1.3.7}\n"
    devices.write_text(text)
    committed.firmware("panic_1.3.7.bin", seed=99)  # new bytes under an old name (a valid image: plan checks)
    result, data = plan_json(committed)
    assert result.exit_code == 0, result.output
    assert data["target_changes"] == [{"from": "1.3.7 (panic-1.3.7)", "to": "1.3.8 (panic-1.3.8)", "count": 1,
                                       "macs": ["11:22:33:44:55:66"], "downgrade": False}]
    assert [d["mac"] for d in data["devices_added"]] == ["AA:BB:CC:00:00:09", "AA:BB:CC:00:00:0A"]
    assert data["devices_removed"] == [{"mac": "AA:BB:CC:00:00:01", "target": "(none)"}]
    assert data["releases_changed"][0]["name"] == "panic-1.3.7" and data["releases_changed"][0]["checksum_changed"]
    markdown = committed.cli("plan", "--format", "markdown").output
    assert markdown.startswith("<!-- otapub-plan -->")
    assert "[!WARNING]" in markdown and "firmware bytes of an existing release changed" in markdown
    assert markdown.index("| 1.3.7 (panic-1.3.7) → 1.3.8 (panic-1.3.8) | 1 device |") < markdown.index("<details>")
    assert "| devices added | 2 |" in markdown


def test_downgrade_is_flagged(committed):
    devices = committed.root / "fleet/devices.yaml"
    devices.write_text(devices.read_text().replace("release: panic-1.3.8", "release: panic-1.3.7"))
    _, data = plan_json(committed)
    assert data["target_changes"][0]["downgrade"] is True
    assert "(DOWNGRADE)" in committed.cli("plan").output


def test_invalid_working_tree_exits_non_zero_with_errors(committed):
    committed.write("fleet/bad.yaml", "devices:\n  nope: {}\n")
    result = committed.cli("plan", "--format", "markdown")
    assert result.exit_code == 1
    assert "does not validate" in result.output and "fleet/bad.yaml:2:3" in result.output


def test_base_defaults_to_merge_base_with_origin_main(committed):
    git(committed, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(committed, "checkout", "-q", "-b", "feature")
    devices = committed.root / "fleet/devices.yaml"
    devices.write_text(devices.read_text().replace("device_id: spare", "device_id: spare2"))
    git(committed, "commit", "-qam", "rename")
    _, data = plan_json(committed)
    assert data["base_ref"] != "HEAD" and len(data["base_ref"]) == 40


def test_outside_git_is_a_clean_error(example):
    result = example.cli("plan")
    assert result.exit_code != 0 and result.output.startswith("error: git") and "Traceback" not in result.output


def test_rollout_devices_per_stage(committed):
    committed.firmware("panic_1.4.0.bin")
    committed.write("fleet/rollouts.yaml", """\
        releases:
          panic-1.4.0: {version: "1.4.0", file: firmware/panic_1.4.0.bin}
        rollouts:
          panic-1.4.0:
            release: panic-1.4.0
            to: all
            stages:
              - {percent: 100}
        """)
    result, data = plan_json(committed)
    assert result.exit_code == 0, result.output
    [rollout] = data["rollouts"]
    assert rollout["audience"] == 3 and rollout["stages"] == [{"percent": 100, "devices": 3, "not_before": None}]
    assert rollout["receiving"] == 1  # the two pinned devices keep their pins
    assert data["target_changes"][0]["to"] == "1.4.0 (panic-1.4.0)" and data["target_changes"][0]["count"] == 1
    assert "stage 1: 100% from immediately: 3 devices" in committed.cli("plan").output
