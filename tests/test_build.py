"""The rendered site: layout, content, atomic and minimal writes, pruning (design.md §4)."""

import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from otapub import parsecache
from otapub.build import build_site
from otapub.firmware import digest_file
from otapub.tokens import djb2_0, djb2_5381
from tests.conftest import SECRET

SWITCH = "release: panic-1.3.8\n    hardware: FireBeetle 2 ESP32-C6"


def answer(repo, mac12: str, token: str) -> dict:
    return json.loads((repo.site / "d" / token / f"{mac12}.json").read_bytes())


def test_site_layout_and_answers(example):
    result = build_site(example.config())
    fw = digest_file(example.root / "firmware/panic_1.3.8.bin")
    a = answer(example, "AABBCCDDEEFF", djb2_5381("AABBCCDDEEFF", SECRET))
    assert a == {
        "device_id": "PanicAlarm_EEFF", "mac": "AA:BB:CC:DD:EE:FF", "hardware": "FireBeetle 2 ESP32-C6",
        "release": "panic-1.3.8", "firmware_version": "1.3.8",
        "firmware_url": f"/f/{fw.sha256}/panic_1.3.8.bin", "checksum": fw.md5, "md5": fw.md5,
        "sha256": fw.sha256, "size": fw.size, "release_hardware": ["FireBeetle 2 ESP32-C6"],
        "chip": "esp32c6", "project_name": "panic", "secure_version": 0,  # from the image itself
    }
    # the per-device scheme keys the djb2-0 device's answer
    b = answer(example, "112233445566", djb2_0("112233445566", SECRET))
    assert b["release"] == "panic-1.3.7" and "release_hardware" not in b
    # a device without a target still has an answer (it authenticates, gets no update)
    spare = answer(example, "AABBCC000001", djb2_5381("AABBCC000001", SECRET))
    assert spare == {"device_id": "spare", "mac": "AA:BB:CC:00:00:01", "hardware": None, "release": None}
    assert (example.site / f"f/{fw.sha256}/panic_1.3.8.bin").read_bytes() == \
        (example.root / "firmware/panic_1.3.8.bin").read_bytes()
    record = json.loads((example.site / "build.json").read_text())
    assert record["devices"] == 3 and record["releases"] == 2 and record["firmware_files"] == 2
    assert len(result.written) == 2 + 3 + 1
    names = [p.name for p in example.site.rglob("*")]
    assert not [n for n in names if n.startswith(".")], "uploaders drop dotfiles"


def test_answers_are_compact_sorted_json_whatever_the_device_fields_hold(example):
    # render() encodes each release's part of an answer once and joins the device's fields in:
    # the bytes must be exactly what a JSON serialiser gives for the whole answer.
    example.write("fleet/odd.yaml", """\
        devices:
          "AA:BB:CC:00:00:10":
            device_id: "quote\\" back\\\\slash tab\\t ünïcode 😀 \\u2028 </script>"
            hardware: FireBeetle 2 ESP32-C6
            release: panic-1.3.8
            allow_downgrade: true
          "AA:BB:CC:00:00:11":
            release: panic-1.3.7
        """)
    build_site(example.config())
    answers = sorted((example.site / "d").rglob("*.json"))
    assert len(answers) == 5
    for path in answers:
        data = path.read_bytes()
        parsed = json.loads(data)
        assert data == json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    odd = answer(example, "AABBCC000010", djb2_5381("AABBCC000010", SECRET))
    assert odd["device_id"] == 'quote" back\\slash tab\t ünïcode 😀 \u2028 </script>'
    assert odd["allow_downgrade"] is True and odd["release"] == "panic-1.3.8"
    bare = answer(example, "AABBCC000011", djb2_5381("AABBCC000011", SECRET))
    assert bare["device_id"] is None and bare["hardware"] is None and "allow_downgrade" not in bare


def test_a_fresh_site_gets_its_answers_at_once_and_a_crashed_builds_tree_is_removed(example):
    example.site.mkdir()
    stale = example.site / "d.otapub-tmp-999999/0000ABCD"  # left by a build that crashed half-way
    stale.mkdir(parents=True)
    (stale / "AABBCCDDEEFF.json").write_text("{}")
    result = build_site(example.config())
    assert sorted(p.name for p in example.site.iterdir()) == ["build.json", "d", "f"]
    assert len(list((example.site / "d").rglob("*.json"))) == 3 == len([p for p in result.written if p[:2] == "d/"])
    assert not [p for p in example.site.rglob("*") if ".otapub-tmp-" in p.name]


def test_a_reader_sees_no_answers_or_all_of_them_during_a_fresh_build(example):
    count = 3000
    lines = ["devices:"] + [f'  "02:00:00:00:{i // 256:02X}:{i % 256:02X}":\n    device_id: d{i}' for i in range(count)]
    example.write("fleet/many.yaml", "\n".join(lines) + "\n")
    answers = example.site / "d"
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            if answers.is_dir():  # from the moment d/ exists, every answer is there, whole
                files = list(answers.rglob("*.json"))
                seen.append(len(files))
                for path in files[:50]:
                    json.loads(path.read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        build_site(example.config())
    finally:
        done.set()
        thread.join(timeout=30)
    assert seen and set(seen) == {count + 3}, sorted(set(seen))[:5]


def test_lost_or_foreign_output_digests_fall_back_to_comparing_files(example):
    build_site(example.config())
    outputs = example.root / ".otapub/outputs.json"
    assert json.loads(outputs.read_text())["outputs"], "the digests live beside state.json"
    path = example.root / "fleet/devices.yaml"
    token = djb2_5381("AABBCC000001", SECRET)
    for damage, name in ((b"not json", "spare-2"), (json.dumps({"sequence": 99, "outputs": {}}).encode(), "spare-3")):
        outputs.write_bytes(damage)
        path.write_text(re.sub(r"device_id: spare\S*\n", f"device_id: {name}\n", path.read_text()))
        result = build_site(example.config())
        # every file compared with what it should hold: only the changed answer is written
        assert sorted(result.written) == ["build.json", f"d/{token}/AABBCC000001.json"], result.written


def test_answers_are_written_again_when_d_is_gone(example):
    build_site(example.config())
    before = example.snapshot()
    shutil.rmtree(example.site / "d")
    result = build_site(example.config())
    assert len(result.written) == 3 + 1, "every answer, and the record"
    after = example.snapshot()
    assert {p: v[0] for p, v in after.items()} == {p: v[0] for p, v in before.items() if p != "build.json"} | \
        {"build.json": after["build.json"][0]}


def test_base_url_makes_urls_absolute(example):
    example.set_config(base_url="https://ota.example.com/fw/")
    build_site(example.config())
    a = answer(example, "AABBCCDDEEFF", djb2_5381("AABBCCDDEEFF", SECRET))
    assert a["firmware_url"].startswith("https://ota.example.com/fw/f/")


def test_noop_rebuild_writes_nothing(example):
    build_site(example.config())
    before = example.snapshot()
    result = build_site(example.config())
    assert result.noop and result.written == []
    assert example.snapshot() == before


def test_firmware_is_hashed_once(example):
    assert build_site(example.config()).hashed == 2
    (example.root / "fleet/devices.yaml").write_text(
        (example.root / "fleet/devices.yaml").read_text().replace("spare", "spare-2"))
    result = build_site(example.config())
    assert result.hashed == 0 and not result.noop


def test_one_device_change_rewrites_one_answer_and_the_record(example):
    build_site(example.config())
    before = example.snapshot()
    path = example.root / "fleet/devices.yaml"
    path.write_text(path.read_text().replace("device_id: spare", "device_id: spare-renamed"))
    result = build_site(example.config())
    token = djb2_5381("AABBCC000001", SECRET)
    assert sorted(result.written) == sorted([f"d/{token}/AABBCC000001.json", "build.json"])
    after = example.snapshot()
    unchanged = [p for p in before if p not in result.written]
    assert all(after[p] == before[p] for p in unchanged), "unchanged files keep bytes and mtime"


def test_lost_state_still_does_not_rewrite_unchanged_files(example):
    build_site(example.config())
    before = example.snapshot()
    shutil.rmtree(example.root / ".otapub")
    result = build_site(example.config())
    assert result.written == []
    assert example.snapshot() == before


def _age(*paths) -> None:
    """Date files a minute back: the parse cache skips files modified within the last seconds."""
    past = time.time() - 60
    for path in paths:
        os.utime(path, (past, past))


def _count_parses(monkeypatch) -> list[str]:
    """Names of the files libyaml parses from now on (the parse cache's misses)."""
    parsed: list[str] = []
    real = parsecache.libyaml_load
    monkeypatch.setattr(parsecache, "libyaml_load", lambda data, name: parsed.append(name) or real(data, name))
    return parsed


def _cache_entries(example) -> list[Path]:
    return sorted((example.root / ".otapub/fleet-cache").iterdir())


def test_only_changed_fleet_files_are_parsed_again(example, monkeypatch):
    fleet = example.root / "fleet"
    # Flow style is libyaml's: these files are cached. devices.yaml is plain `key: value`.
    more = example.write("fleet/more.yaml", "devices:\n  aa-bb-cc-00-00-02: {device_id: extra}\n")
    other = example.write("fleet/other.yaml", "devices:\n  aa-bb-cc-00-00-03: {device_id: other}\n")
    _age(fleet / "releases.yaml", fleet / "devices.yaml", more, other)
    build_site(example.config())
    assert len(_cache_entries(example)) == 3, "releases.yaml, more.yaml, other.yaml; not the plain devices.yaml"
    parsed = _count_parses(monkeypatch)
    more.write_text(more.read_text().replace("device_id: extra", "device_id: extra-renamed"))
    other.unlink()
    result = build_site(example.config())
    assert parsed == ["fleet/more.yaml"]
    assert answer(example, "AABBCC000002", djb2_5381("AABBCC000002", SECRET))["device_id"] == "extra-renamed"
    assert len(result.pruned) == 1, "the removed file's device is gone"
    assert len(_cache_entries(example)) == 2, "other.yaml's entry is pruned"


def test_plain_fleet_files_are_read_again_not_cached(example, monkeypatch):
    fleet = example.root / "fleet"
    _age(fleet / "releases.yaml", fleet / "devices.yaml")
    build_site(example.config())
    parsed = _count_parses(monkeypatch)
    path = fleet / "devices.yaml"
    path.write_text(path.read_text().replace("device_id: spare", "device_id: spare-renamed"))
    build_site(example.config())
    assert parsed == [], "the plain file is read by the fast reader, releases.yaml comes from the cache"
    assert answer(example, "AABBCC000001", djb2_5381("AABBCC000001", SECRET))["device_id"] == "spare-renamed"
    assert len(_cache_entries(example)) == 1, "only releases.yaml (a flow-style list) is cached"


def test_damaged_or_foreign_parse_cache_is_ignored(example, monkeypatch):
    fleet = example.root / "fleet"
    more = example.write("fleet/more.yaml", "devices:\n  aa-bb-cc-00-00-02: {device_id: extra}\n")
    _age(fleet / "releases.yaml", fleet / "devices.yaml", more)
    build_site(example.config())
    before = example.snapshot()
    entries = _cache_entries(example)
    assert len(entries) == 2 and all(e.stat().st_mode & 0o777 == 0o600 for e in entries)
    entries[0].write_bytes(b"not a pickle")
    entries[1].chmod(0o644)  # e.g. checked into git: never unpickled
    parsed = _count_parses(monkeypatch)
    assert build_site(example.config(), force=True).written == []
    assert sorted(parsed) == ["fleet/more.yaml", "fleet/releases.yaml"]
    assert example.snapshot() == before
    parsed.clear()
    build_site(example.config(), force=True)
    assert parsed == [], "both entries were written again"


def test_removed_device_answer_is_pruned(example):
    build_site(example.config())
    path = example.root / "fleet/devices.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("  aa-bb-cc-00-00-01")])
    result = build_site(example.config())
    token = djb2_5381("AABBCC000001", SECRET)
    assert result.pruned == [f"d/{token}/AABBCC000001.json"]
    assert not (example.site / "d" / token).exists(), "empty token folder removed"


def test_unreferenced_firmware_survives_one_build_and_the_grace_period(example):
    example.set_config(firmware_grace_seconds=0)
    build_site(example.config())
    old = digest_file(example.root / "firmware/panic_1.3.7.bin")
    old_path = example.site / f"f/{old.sha256}/panic_1.3.7.bin"
    path = example.root / "fleet/devices.yaml"
    path.write_text(path.read_text().replace('target_version: "1.3.7"', SWITCH))
    build_site(example.config())
    assert old_path.is_file(), "a device that just read the old answer can still download"
    build_site(example.config(), force=True)
    assert not old_path.exists()


def test_grace_period_in_time_is_respected(example):
    build_site(example.config())  # default grace: an hour
    path = example.root / "fleet/devices.yaml"
    path.write_text(path.read_text().replace('target_version: "1.3.7"', SWITCH))
    for _ in range(3):
        build_site(example.config(), force=True)
    old = digest_file(example.root / "firmware/panic_1.3.7.bin")
    assert (example.site / f"f/{old.sha256}/panic_1.3.7.bin").is_file()


def test_only_firmware_some_device_gets_is_published(example):
    example.firmware("unused.bin", size=10, version="9")
    example.write("fleet/more.yaml", "releases:\n  unused: {version: '9', file: firmware/unused.bin}\n")
    build_site(example.config())
    assert not list(example.site.rglob("unused.bin"))


def test_url_release_is_not_copied(example):
    example.write("fleet/more.yaml", f"""\
        releases:
          remote: {{version: '2.0', url: 'https://cdn.example.com/p.bin', md5: '{"a" * 32}',
                    sha256: '{"b" * 64}', size: 1234}}
        devices:
          AA:BB:CC:DD:EE:01: {{release: remote}}
        """)
    build_site(example.config())
    a = answer(example, "AABBCCDDEE01", djb2_5381("AABBCCDDEE01", SECRET))
    assert a["firmware_url"] == "https://cdn.example.com/p.bin" and a["checksum"] == "a" * 32


def test_secret_never_in_site_state_or_logs(example, caplog):
    caplog.set_level(logging.DEBUG)
    result = example.cli("build")
    assert result.exit_code == 0
    written = [p for p in [*example.site.rglob("*"), *(example.root / ".otapub").rglob("*")] if p.is_file()]
    assert len(written) > 3 + 2  # every answer and firmware file, build.json and the state were looked at
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.output and SECRET not in caplog.text


def test_changed_firmware_under_same_release_is_caught_by_declared_checksum(example):
    d = digest_file(example.root / "firmware/panic_1.3.8.bin")
    path = example.root / "fleet/releases.yaml"
    path.write_text(path.read_text().replace("    file: firmware/panic_1.3.8.bin",
                                             f"    file: firmware/panic_1.3.8.bin\n    sha256: {d.sha256}"))
    build_site(example.config())
    before = example.snapshot()
    example.firmware("panic_1.3.8.bin", b"tampered" * 100)
    result = example.cli("build")
    assert result.exit_code == 1 and "checksum mismatch" in result.output
    assert example.snapshot() == before


@pytest.mark.parametrize("secret", ["", "change-this-key-in-production"])
def test_missing_or_placeholder_secret_is_refused(example, secret):
    result = example.cli("build", env={"OTA_SERVER_SHARED_SECRET_KEY": secret})
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "shared_secret_key" in result.output
    assert not example.site.exists()


def test_check_needs_no_secret_and_writes_nothing(example):
    result = example.cli("check", env={"OTA_SERVER_SHARED_SECRET_KEY": ""})
    assert result.exit_code == 0, result.output
    assert "ok: 3 devices, 2 releases" in result.output
    assert not example.site.exists() and not (example.root / ".otapub").exists()


def test_check_reports_problems_with_exit_status(example):
    example.write("fleet/more.yaml", "devices:\n  nope: {}\n")
    result = example.cli("check")
    assert result.exit_code == 1
    assert result.output.startswith("fleet/more.yaml:2:3: devices: 'nope' is not a MAC address")
