"""Issue 7: forgeable djb2 vs per-device hmac-sha256 tokens, signed answers, anti-rollback, audit.

The forgery and the signed pass-through run against the real shim over HTTP (Served).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from otapub.build import build_site
from otapub.cli import main
from otapub.errors import OtapubError, ValidationError
from otapub.signing import SigningError, VerificationError, generate_key, verify_answer
from otapub.tokens import _djb2, canonical_token, device_key, djb2_0_wire, djb2_5381, hmac_sha256
from tests.conftest import SECRET, Repo, Served, git, populate_example

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HW = "FireBeetle+2+ESP32-C6"
HMAC_MACS = ("AA:BB:CC:00:00:10", "AA:BB:CC:00:00:11")


def version(moment: datetime) -> int:
    """The manifest_version a build signing at ``moment`` issues (its Unix time, when no higher one exists)."""
    return int(moment.timestamp())


def check(mac: str, version: str = "1.0.0", hardware: str = HW) -> str:
    return f"/api/firmware?device_id=x&hardware={hardware}&version={version}&mac={mac}"


def mixed_fleet(repo: Repo) -> Repo:
    """The example fleet plus a second djb2-0 device and two hmac-sha256 devices."""
    populate_example(repo)
    with open(repo.root / "fleet/devices.yaml", "a") as handle:
        handle.write('  "11:22:33:44:55:77":\n    target_version: "1.3.7"\n    token_scheme: djb2-0\n')
        for mac in HMAC_MACS:
            handle.write(f'  "{mac}":\n    target_version: "1.3.7"\n    token_scheme: hmac-sha256\n')
    return repo


def answer_file(repo: Repo, mac12: str) -> Path:
    return next(repo.site.glob(f"d/*/{mac12}.json"))


# --- tokens: the forgery ----------------------------------------------------------------------
def forge_djb2(mac1: str, token1: int, mac2: str, secret_length: int, seed: int) -> int:
    """Another MAC's djb2 token from one observed (MAC, token) pair and the secret's length only.

    djb2 over MAC12 + secret: after the 12 MAC bytes the state is h(MAC), a public function of the
    MAC; the L secret bytes then give h(MAC) * 33^L + c (mod 2^32), c depending on the secret only.
    So token(m2) - token(m1) = 33^L * (h(m2) - h(m1)) (mod 2^32): c, and the secret, drop out.
    """
    h1, h2 = _djb2(mac1.encode(), seed), _djb2(mac2.encode(), seed)
    return (token1 + pow(33, secret_length, 1 << 32) * (h2 - h1)) % (1 << 32)


def test_forgery_math_and_secret_length_from_two_pairs():
    observed = {mac: int(djb2_5381(mac, SECRET), 16) for mac in ("AABBCCDDEEFF", "AABBCC000001")}
    (m1, t1), (m2, t2) = observed.items()
    # two observed pairs even give the secret's length away
    lengths = [n for n in range(200) if forge_djb2(m1, t1, m2, n, 5381) == t2]
    assert len(SECRET) in lengths
    for target in ("001122334455", "240AC4123456", "FFFFFFFFFFFF"):
        assert f"{forge_djb2(m1, t1, target, len(SECRET), 5381):08X}" == djb2_5381(target, SECRET)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    repo = mixed_fleet(Repo(tmp_path_factory.mktemp("forgery") / "repo"))
    build_site(repo.config(), now=NOW)
    server = Served(repo)
    yield server
    server.stop()


def test_shim_accepts_a_forged_djb2_token(mixed):
    # The attacker captured one request of AA:BB:CC:DD:EE:FF and knows (or guesses) the secret's length.
    captured = int(djb2_5381("AABBCCDDEEFF", SECRET), 16)
    forged = f"{forge_djb2('AABBCCDDEEFF', captured, 'AABBCC000001', len(SECRET), 5381):08X}"
    status, body = mixed.json(check("AA:BB:CC:00:00:01"), {"X-Device-Auth": forged})
    assert status == 200 and body == {"update_available": False}  # authenticated as another device
    status, headers, data = mixed.request(f"/d/{forged}/AABBCC000001.json", {"X-Device-Auth": forged})
    assert status == 200 and json.loads(data)["mac"] == "AA:BB:CC:00:00:01"
    # the seed firmware's variant (djb2-0, lower case, unpadded) falls the same way
    seen = int(djb2_0_wire("112233445566", SECRET), 16)
    forged0 = f"{forge_djb2('112233445566', seen, '112233445577', len(SECRET), 0):x}"
    status, body = mixed.json(check("11:22:33:44:55:77", "1.3.6"), {"X-Device-Auth": forged0})
    assert status == 200 and body["update_available"] is True and body["firmware_version"] == "1.3.7"


def test_shim_rejects_forgeries_for_hmac_devices(mixed):
    mac1, mac2 = (m.replace(":", "") for m in HMAC_MACS)
    captured = hmac_sha256(mac1, SECRET)
    attempts = {
        captured,  # replaying another device's token
        f"{forge_djb2(mac1, int(captured, 16), mac2, len(SECRET), 5381) % (1 << 128):032X}",
        f"{forge_djb2(mac1, int(captured, 16) & 0xFFFFFFFF, mac2, len(SECRET), 5381):08X}",
        djb2_5381(mac2, SECRET),  # its token under the old scheme: no longer valid for it
    }
    for forged in attempts:
        status, body = mixed.json(check(HMAC_MACS[1], "1.3.6"), {"X-Device-Auth": forged})
        assert status == 401 and body == {"error": "Authentication failed"}, forged
    genuine = hmac_sha256(mac2, SECRET)
    assert len(genuine) == 32 and canonical_token(genuine.lower()) == genuine
    status, body = mixed.json(check(HMAC_MACS[1], "1.3.6"), {"X-Device-Auth": genuine.lower()})
    assert status == 200 and body["update_available"] is True


def test_device_keys_are_independent():
    key1, key2 = (device_key(m.replace(":", ""), SECRET) for m in HMAC_MACS)
    assert key1 != key2 and len(key1) == 32
    # a leaked device key yields that device's token, and nothing about another's
    from otapub.tokens import hmac_token_from_key

    assert hmac_token_from_key(key1, "AABBCC000010") == hmac_sha256("AABBCC000010", SECRET)
    assert hmac_token_from_key(key1, "AABBCC000011") != hmac_sha256("AABBCC000011", SECRET)


def test_provision_and_token_commands(example):
    result = example.cli("provision", "aa:bb:cc:dd:ee:ff")
    assert result.exit_code == 0, result.output
    key = device_key("AABBCCDDEEFF", SECRET).hex()
    token = hmac_sha256("AABBCCDDEEFF", SECRET)
    assert f"device key: {key}" in result.stdout and f"token:      {token}" in result.stdout
    assert f"device_key,data,hex2bin,{key}" in result.stdout and "token_scheme: hmac-sha256" in result.stdout
    data = json.loads(example.cli("provision", "AA:BB:CC:DD:EE:FF", "--format", "json").stdout)
    assert data["device_key"] == key and data["token"] == token and data["fleet_scheme"] == "djb2-5381"
    csv = example.cli("provision", "AA:BB:CC:DD:EE:FF", "--format", "nvs-csv").stdout
    assert csv == f"key,type,encoding,value\notapub,namespace,,\ndevice_key,data,hex2bin,{key}\n"
    assert example.cli("token", "AA:BB:CC:DD:EE:FF", "--scheme", "hmac-sha256").stdout.strip() == token
    assert SECRET not in result.stdout
    refused = example.cli("provision", "AA:BB:CC:DD:EE:FF",
                          env={"OTA_SERVER_SHARED_SECRET_KEY": "your-device-secret-key"})
    assert refused.exit_code != 0 and "placeholder" in refused.output


# --- signed answers -----------------------------------------------------------------------------
@pytest.fixture
def signed(example):
    private, key = generate_key()
    example.env["OTA_SERVER_SIGNING_KEY"] = private
    example.key, example.private = key, private
    return example


def keys_of(repo: Repo) -> dict[str, bytes]:
    from otapub.signing import load_keys_document

    return load_keys_document((repo.site / "keys.json").read_bytes(), "keys.json")


def test_signed_answers_keys_json_and_build_record(signed):
    build_site(signed.config(), now=NOW)
    keys = keys_of(signed)
    assert keys == {signed.key.keyid: signed.key.public_raw}
    paths = list(signed.site.glob("d/*/*.json"))
    assert len(paths) == 3
    for path in paths:
        data = path.read_bytes()
        found = verify_answer(data, keys, NOW)
        assert found.manifest_version == version(NOW) and found.content["mac"].replace(":", "") == path.stem
        assert found.expires == NOW + timedelta(days=7)
        # the signature is the last member: cut there, the rest is the canonical signed content
        assert data.endswith(b'"}}') and data.count(b',"signature":') == 1
    record = json.loads((signed.site / "build.json").read_text())
    assert record["manifest_version"] == version(NOW)
    eeff = json.loads(answer_file(signed, "AABBCCDDEEFF").read_bytes())
    assert eeff["secure_version"] == 0 and eeff["release"] == "panic-1.3.8"
    assert set(eeff) >= {"expires", "manifest_version", "signature", "mac", "sha256", "checksum"}


def test_no_op_and_re_signing_at_half_lifetime(signed):
    build_site(signed.config(), now=NOW)
    before = signed.snapshot()
    for later in (timedelta(hours=1), timedelta(days=3, hours=11)):
        result = build_site(signed.config(), now=NOW + later)
        assert result.noop and signed.snapshot() == before
    result = build_site(signed.config(), now=NOW + timedelta(days=3, hours=12, minutes=1))
    assert not result.noop
    assert sorted(result.written) == sorted([p for p in before if p.startswith("d/")] + ["build.json"])
    data = answer_file(signed, "AABBCCDDEEFF").read_bytes()
    found = verify_answer(data, keys_of(signed), NOW + timedelta(days=4))
    resigned = NOW + timedelta(days=3, hours=12, minutes=1)
    assert found.manifest_version == version(resigned) and found.expires == resigned + timedelta(days=7)
    assert build_site(signed.config(), now=NOW + timedelta(days=4)).noop


def test_build_now_moves_rollout_stages_only_never_the_signing_clock(signed):
    """`build --now 2030-…` must not publish answers that stay valid until 2030 (a freeze attack's window)."""
    signed.write("fleet/rollouts.yaml", """\
        rollouts:
          to-1.3.7:
            release: panic-1.3.7
            to: all
            stages:
              - {percent: 100, not_before: 2029-06-01T00:00:00Z}
        """)
    result = signed.cli("build", "--now", "2030-01-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    real = datetime.now(timezone.utc)
    spare = verify_answer(answer_file(signed, "AABBCC000001").read_bytes(), keys_of(signed), real)
    assert spare.content["release"] == "panic-1.3.7"  # the stage of 2029 is open "in 2030"
    answers = sorted(signed.site.glob("d/*/*.json"))
    assert len(answers) >= 3
    for path in answers:
        found = verify_answer(path.read_bytes(), keys_of(signed), real)
        assert real + timedelta(days=6) < found.expires <= real + timedelta(days=7, minutes=5), path
        assert found.manifest_version <= version(real) + 1


def test_content_change_re_signs_only_that_answer(signed):
    build_site(signed.config(), now=NOW)
    before = signed.snapshot()
    devices = signed.root / "fleet/devices.yaml"
    devices.write_text(devices.read_text().replace("device_id: spare", "device_id: spare-2"))
    result = build_site(signed.config(), now=NOW + timedelta(hours=2))
    spare = str(answer_file(signed, "AABBCC000001").relative_to(signed.site))
    assert sorted(result.written) == sorted([spare, "build.json"])
    assert json.loads((signed.site / spare).read_bytes())["manifest_version"] == version(NOW + timedelta(hours=2))
    eeff = str(answer_file(signed, "AABBCCDDEEFF").relative_to(signed.site))
    assert signed.snapshot()[eeff] == before[eeff]
    assert json.loads((signed.site / "build.json").read_text())["manifest_version"] == version(NOW + timedelta(hours=2))
    assert json.loads(answer_file(signed, "AABBCCDDEEFF").read_bytes())["manifest_version"] == version(NOW)


def test_manifest_version_never_decreases_when_state_is_lost(signed):
    """Versions are max(last + 1, Unix time): even a lost state and a clock running behind cannot lower them."""
    build_site(signed.config(), now=NOW)
    devices = signed.root / "fleet/devices.yaml"
    devices.write_text(devices.read_text().replace("device_id: spare", "device_id: spare-2"))
    build_site(signed.config(), now=NOW + timedelta(hours=1))
    highest = version(NOW + timedelta(hours=1))
    answers_before = {p: b for p, (b, _) in signed.snapshot().items() if p.startswith("d/")}
    shutil.rmtree(signed.root / ".otapub")
    build_site(signed.config(), now=NOW + timedelta(hours=2))
    after = {p: b for p, (b, _) in signed.snapshot().items() if p.startswith("d/")}
    assert after == answers_before  # recovered from the site: nothing re-signed
    shutil.rmtree(signed.root / ".otapub")
    (signed.site / "build.json").unlink()
    devices.write_text(devices.read_text().replace("device_id: spare-2", "device_id: spare-3"))
    build_site(signed.config(), now=NOW - timedelta(days=1))  # and the build machine's clock is a day behind
    assert json.loads(answer_file(signed, "AABBCC000001").read_bytes())["manifest_version"] == highest + 1
    assert json.loads((signed.site / "build.json").read_text())["manifest_version"] == highest + 1


def test_turning_signing_off_publishes_unsigned_answers(signed):
    build_site(signed.config(), now=NOW)
    signed.env.pop("OTA_SERVER_SIGNING_KEY")
    build_site(signed.config(), now=NOW + timedelta(hours=1))
    assert not (signed.site / "keys.json").exists()
    assert b"signature" not in answer_file(signed, "AABBCCDDEEFF").read_bytes()


def test_verify_command(signed, tmp_path):
    build_site(signed.config(), now=NOW)
    path = answer_file(signed, "AABBCCDDEEFF")
    keys = str(signed.site / "keys.json")
    now = ("--now", "2026-03-02T00:00:00Z")
    ok = signed.cli("verify", str(path), "--keys", keys, "--mac", "aa:bb:cc:dd:ee:ff", "--min-version", "1", *now)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: answer for AA:BB:CC:DD:EE:FF: release panic-1.3.8")
    ok = signed.cli("verify", str(path), "--public-key", base64.b64encode(signed.key.public_raw).decode(),
                    "--mac", "AABBCCDDEEFF", *now)
    assert ok.exit_code == 0, ok.output
    unchecked = signed.cli("verify", str(path), "--keys", keys, *now)  # "ok" would claim a check not made
    assert unchecked.exit_code == 2 and "give --mac MAC" in unchecked.output and "ok:" not in unchecked.output
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(path.read_bytes().replace(b'"firmware_version":"1.3.8"', b'"firmware_version":"1.3.9"'))
    cases = {
        "altered": (str(tampered), "--keys", keys, *now),
        "expired at 2026-03-08T12:00:00Z": (str(path), "--keys", keys, "--now", "2026-03-08T12:00:00Z"),
        "is for AA:BB:CC:DD:EE:FF, not AA:BB:CC:DD:EE:00": (str(path), "--keys", keys, "--mac", "AA:BB:CC:DD:EE:00",
                                                           *now),
        "replayed": (str(path), "--keys", keys, "--min-version", str(version(NOW) + 1), *now),
        "secure_version 0 is below": (str(path), "--keys", keys, "--min-secure-version", "1", *now),
        "not trusted": (str(path), "--public-key", generate_key()[1].public_raw.hex(), *now),
    }
    for expected, args in cases.items():
        if "--mac" not in args:
            args = (*args, "--mac", "AA:BB:CC:DD:EE:FF")
        result = signed.cli("verify", *args)
        assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output, expected
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_bytes(b'{"mac":"AA:BB:CC:DD:EE:FF"}')
    assert "no signature" in signed.cli("verify", str(unsigned), "--keys", keys, "--mac", "AABBCCDDEEFF").output


def test_key_rotation_keeps_the_old_key_valid(signed, tmp_path):
    build_site(signed.config(), now=NOW)
    old_answer = answer_file(signed, "AABBCCDDEEFF").read_bytes()
    private, new = generate_key()
    signed.env["OTA_SERVER_SIGNING_KEY"] = private
    signed.set_config(previous_public_keys=signed.key.public_raw.hex())
    result = build_site(signed.config(), now=NOW + timedelta(hours=1))  # no YAML change: the key change re-signs
    assert not result.noop and "keys.json" in result.written
    keys = keys_of(signed)
    assert set(keys) == {new.keyid, signed.key.keyid}
    new_answer = answer_file(signed, "AABBCCDDEEFF").read_bytes()
    assert verify_answer(new_answer, keys, NOW + timedelta(hours=2)).keyid == new.keyid
    assert verify_answer(old_answer, keys, NOW + timedelta(hours=2)).keyid == signed.key.keyid
    with pytest.raises(VerificationError, match="not trusted"):
        verify_answer(new_answer, {signed.key.keyid: signed.key.public_raw}, NOW + timedelta(hours=2))


def test_signing_key_file_must_live_outside_repo_and_site(example, tmp_path):
    private, key = generate_key()
    inside = example.root / "secrets" / "signing.key"
    inside.parent.mkdir()
    inside.write_text(private)
    example.set_config(signing_key_file="secrets/signing.key")
    result = example.cli("build")
    assert result.exit_code == 2 and "inside the repository" in result.output and private not in result.output
    outside = tmp_path / "keys" / "signing.key"
    result = example.cli("keygen", "--out", str(outside))
    assert result.exit_code == 0, result.output
    assert oct(outside.stat().st_mode & 0o777) == "0o600"
    written = outside.read_text().strip()
    assert written not in result.stdout and "keyid:" in result.stdout
    example.set_config(signing_key_file=str(outside))
    assert example.cli("build").exit_code == 0
    assert (example.site / "keys.json").is_file()
    assert example.cli("keygen", "--out", str(outside)).exit_code == 2  # never overwrites a key
    refused = example.cli("keygen", "--out", str(example.site / "k.key"))
    assert refused.exit_code == 2 and "inside" in refused.output and not (example.site / "k.key").exists()
    bare = example.cli("keygen")
    assert bare.exit_code == 0 and len(base64.b64decode(bare.stdout.strip())) == 32
    assert "public key:" in bare.stderr and bare.stdout.strip() not in bare.stderr


def test_keygen_refuses_any_git_work_tree_wherever_it_runs_from(tmp_path, monkeypatch):
    """Run from outside every repository, without a config: the target's own work tree still counts."""
    fleet = tmp_path / "fleet-repo"
    fleet.mkdir()
    git(fleet, "init", "-q", "-b", "main")
    git(fleet, "commit", "-q", "--allow-empty", "-m", "base")
    git(fleet, "worktree", "add", "-q", str(tmp_path / "linked"))  # its .git is a file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "into-repo").symlink_to(fleet)
    monkeypatch.chdir(elsewhere)
    targets = [fleet / "signing.key", fleet / "deep" / "er" / "signing.key", tmp_path / "linked" / "k.key",
               elsewhere / "into-repo" / "k.key", Path("into-repo/new/k.key")]
    for target in targets:
        result = CliRunner().invoke(main, ["keygen", "--out", str(target)], catch_exceptions=False)
        assert result.exit_code == 2 and "is inside a git work tree" in result.output, (target, result.output)
        assert not target.exists()
    assert not (fleet / "deep").exists() and not (fleet / "new").exists()  # no folder made either
    outside = elsewhere / "keys" / "signing.key"
    assert CliRunner().invoke(main, ["keygen", "--out", str(outside)]).exit_code == 0
    assert outside.is_file()
    # a file where a folder goes, a folder that cannot be made: a clean error, no key written anywhere
    for target, said in ((outside / "k.key", f"{outside} is a file, not a folder"),
                         (Path("/proc/otapub-test/k.key"), "cannot write the key there")):
        result = CliRunner().invoke(main, ["keygen", "--out", str(target)], catch_exceptions=False)
        assert result.exit_code == 2 and said in result.output and "check the paths" not in result.output, result.output
        assert not target.exists()
    empty = CliRunner().invoke(main, ["keygen", "--out", ""], catch_exceptions=False)  # an unset "$VARIABLE"
    assert empty.exit_code == 2 and "--out .: a folder; give the name of the key file" in empty.output, empty.output


def test_a_bad_signing_key_is_a_clean_error(example):
    result = example.cli("build", env={"OTA_SERVER_SIGNING_KEY": "not-a-key-c2VjcmV0"})
    assert result.exit_code == 2 and "not an Ed25519 private key" in result.output
    assert "not-a-key-c2VjcmV0" not in result.output and "Traceback" not in result.output


def test_expired_signing_key_refuses_to_sign(signed):
    signed.set_config(signing_key_expires="2026-02-01")
    with pytest.raises(SigningError, match="expired"):
        build_site(signed.config(), now=NOW)
    signed.set_config(signing_key_expires="2026-03-04")
    build_site(signed.config(), now=NOW)
    content = json.loads(answer_file(signed, "AABBCCDDEEFF").read_bytes())
    assert content["expires"] == "2026-03-04T00:00:00Z"  # never beyond the key's own expiry
    assert json.loads((signed.site / "keys.json").read_bytes())["keys"][0]["expires"] == "2026-03-04T00:00:00Z"
    assert build_site(signed.config(), now=NOW + timedelta(days=2)).noop  # cannot be extended: no churn


# --- the shim passes signed answers through ---------------------------------------------------------
def test_shim_signed_pass_through(signed):
    signed.set_config(base_url="https://ota.example.com")
    build_site(signed.config(), now=NOW)
    token = djb2_5381("AABBCCDDEEFF", SECRET)
    stored = answer_file(signed, "AABBCCDDEEFF").read_bytes()
    server = Served(signed)
    try:
        plain_status, _, plain = server.request(check("AA:BB:CC:DD:EE:FF", "1.3.7"), {"X-Device-Auth": token})
        status, headers, body = server.request(check("AA:BB:CC:DD:EE:FF", "1.3.7"),
                                               {"X-Device-Auth": token, "X-OTA-Signed": "1"})
        keys_status, keys_headers, keys_body = server.request("/keys.json")
        log = server.log.read_text()
    finally:
        server.stop()
    assert plain_status == status == 200
    assert "signed" not in json.loads(plain)  # seed devices: the unchanged shape
    assert body == plain[:-1] + b', "signed": ' + stored + b"}"  # verbatim, last member
    parsed = json.loads(body)
    assert {k: v for k, v in parsed.items() if k != "signed"} == json.loads(plain)
    # what a device does: cut out the signed answer and verify it
    cut = body[body.index(b', "signed": ') + len(b', "signed": '):-1]
    found = verify_answer(cut, keys_of(signed), NOW + timedelta(hours=1), mac="AA:BB:CC:DD:EE:FF")
    assert found.content["firmware_version"] == parsed["firmware_version"] == "1.3.8"
    assert keys_status == 200 and keys_headers["content-type"] == "application/json"
    assert keys_body == (signed.site / "keys.json").read_bytes()
    assert signed.private not in log and SECRET not in log


def test_shim_without_signing_ignores_the_header(example):
    build_site(example.config(), now=NOW)
    token = djb2_5381("AABBCCDDEEFF", SECRET)
    server = Served(example)
    try:
        status, body = server.json(check("AA:BB:CC:DD:EE:FF", "1.3.7"), {"X-Device-Auth": token, "X-OTA-Signed": "1"})
        assert status == 200 and "signed" not in body
        assert server.request("/keys.json")[0] == 404
    finally:
        server.stop()


# --- anti-rollback ------------------------------------------------------------------------------------
def rollback_repo(repo: Repo) -> Repo:
    repo.firmware("app_2.0.0.bin", secure_version=2)
    repo.firmware("app_2.1.0.bin", secure_version=1)
    repo.firmware("app_2.2.0.bin", secure_version=3)
    repo.write("fleet/releases.yaml", """\
        releases:
          app-2.0.0: {version: "2.0.0", file: firmware/app_2.0.0.bin}
          app-2.1.0: {version: "2.1.0", file: firmware/app_2.1.0.bin}
          app-2.2.0: {version: "2.2.0", file: firmware/app_2.2.0.bin}
        """)
    pin("app-2.0.0", repo)
    return repo


def pin(release: str, repo: Repo, extra: str = "") -> None:
    repo.write("fleet/devices.yaml", f"""\
        devices:
          "AA:BB:CC:DD:EE:01":
            release: {release}
            {extra}
          "AA:BB:CC:DD:EE:02":
            release: app-2.2.0
        """)


def test_anti_rollback_refuses_a_lower_secure_version(repo):
    rollback_repo(repo)
    build_site(repo.config(), now=NOW)
    assert json.loads(answer_file(repo, "AABBCCDDEE01").read_bytes())["secure_version"] == 2
    before = repo.snapshot()
    pin("app-2.1.0", repo)
    with pytest.raises(ValidationError) as failure:
        build_site(repo.config(), now=NOW)
    message = str(failure.value)
    assert "anti-rollback" in message and "'app-2.0.0' has secure_version 2" in message
    assert "devices.yaml:3" in message and "nothing was written" in message
    assert repo.snapshot() == before
    result = repo.cli("build")
    assert result.exit_code != 0 and "allow_secure_version_rollback" in result.output
    # the state is lost: the published answers still remember the previous targets
    shutil.rmtree(repo.root / ".otapub")
    with pytest.raises(ValidationError):
        build_site(repo.config(), now=NOW)
    pin("app-2.2.0", repo)  # forward is fine
    build_site(repo.config(), now=NOW)
    pin("app-2.0.0", repo)  # and 3 -> 2 is a rollback again
    with pytest.raises(ValidationError):
        build_site(repo.config(), now=NOW)


def test_check_and_plan_run_the_builds_anti_rollback_check(repo):
    """What pull requests run must refuse what the build will: the same check, the same message."""
    rollback_repo(repo)
    repo.write(".gitignore", "site/\n.otapub/\n")
    repo.git("init", "-q", "-b", "main")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "app-2.0.0 everywhere")
    build_site(repo.config(), now=NOW)
    pin("app-2.1.0", repo)  # secure_version 2 -> 1
    built = repo.cli("build")
    assert built.exit_code != 0 and "anti-rollback" in built.output
    checked = repo.cli("check")
    assert checked.exit_code != 0 and checked.output == built.output
    planned = repo.cli("plan", "--format", "json")
    assert planned.exit_code != 0
    message = built.output.removeprefix("error: ").split("\n")[0]
    assert json.loads(planned.stdout)["errors"] == [message]
    # merged, the change is no change to plan, and still refused
    repo.git("commit", "-qam", "app-2.1.0")
    planned = repo.cli("plan", "--format", "json")
    assert planned.exit_code != 0 and json.loads(planned.stdout)["errors"] == [message]
    # a pull request has neither the build state nor the site: plan takes the base's targets as floors
    repo.git("reset", "-q", "--hard", "HEAD~1")
    shutil.rmtree(repo.root / ".otapub")
    shutil.rmtree(repo.site)
    pin("app-2.1.0", repo)
    planned = repo.cli("plan", "--format", "json")
    assert planned.exit_code != 0 and json.loads(planned.stdout)["errors"] == [message]
    pin("app-2.2.0", repo)  # forward is fine
    assert repo.cli("check").exit_code == 0 and repo.cli("plan").exit_code == 0


def test_anti_rollback_can_be_allowed_explicitly(repo):
    rollback_repo(repo)
    build_site(repo.config(), now=NOW)
    pin("app-2.1.0", repo, "allow_secure_version_rollback: true")
    build_site(repo.config(), now=NOW)
    assert json.loads(answer_file(repo, "AABBCCDDEE01").read_bytes())["secure_version"] == 1
    pin("app-2.2.0", repo)
    build_site(repo.config(), now=NOW)
    releases = repo.root / "fleet/releases.yaml"
    releases.write_text(releases.read_text().replace(
        "file: firmware/app_2.1.0.bin}", "file: firmware/app_2.1.0.bin, allow_secure_version_rollback: true}"))
    pin("app-2.1.0", repo)
    build_site(repo.config(), now=NOW)


@contextlib.contextmanager
def static_host(folder: Path) -> Iterator[str]:
    """A plain static web host (like GitHub Pages) for a folder, on 127.0.0.1: 404 for what it lacks."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_lost_answer_on_the_live_site_stops_a_build_without_state(tmp_path):
    """previous_site_url: a device the live site was built with, whose answer the host does not give
    (404), would lose its anti-rollback floor (41 -> 29 went through): the build fails closed instead."""
    live = rollback_repo(Repo(tmp_path / "live"))
    live.write(".gitignore", "site/\n.otapub/\n")
    live.git("init", "-q", "-b", "main")
    live.git("add", "-A")
    live.git("commit", "-qm", "live")
    build_site(live.config(), now=NOW)
    assert json.loads((live.site / "build.json").read_text())["source_commit"] == live.git("rev-parse", "HEAD").strip()
    lost = answer_file(live, "AABBCCDDEE01")
    kept = lost.read_bytes()
    lost.unlink()  # the host answers 404 for this device's answer
    live.git("clone", "-q", str(live.root), str(tmp_path / "ci"))  # a fresh CI runner: no state, no site
    ci = Repo(tmp_path / "ci")
    with static_host(live.site) as base:
        ci.set_config(previous_site_url=base)
        pin("app-2.1.0", ci)  # secure_version 2 -> 1: what the lost answer's floor forbids
        with pytest.raises(OtapubError) as failure:
            build_site(ci.config(), now=NOW)
        message = str(failure.value)
        assert "previous_site_url" in message and "AA:BB:CC:DD:EE:01" in message and "anti-rollback" in message
        assert not ci.site.exists()
        result = ci.cli("build")
        assert result.exit_code != 0 and "AA:BB:CC:DD:EE:01" in result.output and "Traceback" not in result.output
        assert ci.cli("check").output == result.output  # what a pull request runs says the same
        # with the answer back, the floor is recovered and the rollback refused
        lost.write_bytes(kept)
        with pytest.raises(ValidationError, match="anti-rollback"):
            build_site(ci.config(), now=NOW)
        # a device the live site was not built with may be absent from it: it is new
        pin("app-2.2.0", ci)
        with open(ci.root / "fleet/devices.yaml", "a") as handle:
            handle.write('  "AA:BB:CC:DD:EE:03":\n    release: app-2.2.0\n')
        build_site(ci.config(), now=NOW)
        assert json.loads(answer_file(ci, "AABBCCDDEE03").read_bytes())["secure_version"] == 3


def test_a_live_site_answering_pages_of_its_own_stops_a_build_without_state(tmp_path):
    """previous_site_url: a host that answers 200 with something else (an HTML page, another device's
    answer) where an answer or the build record should be has not shown the floor: fail closed."""
    live = rollback_repo(Repo(tmp_path / "live"))
    build_site(live.config(), now=NOW)
    ci = Repo(tmp_path / "ci")
    shutil.copytree(live.root / "fleet", ci.root / "fleet")
    shutil.copytree(live.root / "firmware", ci.root / "firmware")
    page = b"<!doctype html><title>Welcome</title>"
    with static_host(live.site) as base:
        ci.set_config(previous_site_url=base)
        pin("app-2.1.0", ci)  # secure_version 2 -> 1: what the live answer's floor forbids
        with pytest.raises(ValidationError, match="anti-rollback"):
            build_site(ci.config(), now=NOW)
        lost = answer_file(live, "AABBCCDDEE01")
        kept = lost.read_bytes()
        for wrong in (page, answer_file(live, "AABBCCDDEE02").read_bytes()):
            lost.write_bytes(wrong)
            with pytest.raises(OtapubError, match="AA:BB:CC:DD:EE:01.*not its answer.*anti-rollback"):
                build_site(ci.config(), now=NOW)
        lost.write_bytes(kept)
        (live.site / "build.json").write_bytes(page)
        with pytest.raises(OtapubError, match="build.json is not otapub's build record"):
            build_site(ci.config(), now=NOW)
        result = ci.cli("check")
        assert result.exit_code != 0 and "build.json is not otapub's build record" in result.output
        assert "Traceback" not in result.output and not ci.site.exists()
        (live.site / "build.json").unlink()  # neither build.json nor /status: never published
        build_site(ci.config(), now=NOW)


# --- audit ------------------------------------------------------------------------------------------
def findings(result) -> dict[str, str]:
    data = json.loads(result.stdout)
    return {f["check"]: f["severity"] for f in data["findings"]}


def test_audit_of_the_example_fleet(example):
    result = example.cli("audit", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    seen = findings(result)
    assert seen["djb2-tokens"] == "warning" and seen["signing"] == "warning" and seen["base-url"] == "warning"
    assert seen["short-secret"] == "warning" and seen["firmware-sha256"] == "ok" and seen["secure-version"] == "ok"
    djb2 = next(f for f in data["findings"] if f["check"] == "djb2-tokens")
    assert djb2["count"] == 3 and "one captured (MAC, token) pair" in djb2["message"]
    assert data["facts"]["token_schemes"] == {"djb2-0": 1, "djb2-5381": 2}
    assert example.cli("audit", "--strict").exit_code == 1
    text = example.cli("audit").stdout
    assert "WARNING" in text and text.rstrip().endswith("0 error(s), 5 warning(s)")
    assert SECRET not in result.stdout + text


def test_audit_errors(example):
    example.set_config(base_url="http://ota.example.com")
    example.write("fleet/extra.yaml", """\
        releases:
          remote:
            version: "9.0.0"
            url: http://cdn.example.com/fw.bin
            md5: 0123456789abcdef0123456789abcdef
            sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
            size: 1000
        devices:
          "AA:BB:CC:00:00:09":
            release: remote
        """)
    result = example.cli("audit", "--format", "json", env={"OTA_SERVER_SHARED_SECRET_KEY": "your-device-secret-key"})
    assert result.exit_code == 1
    seen = findings(result)
    assert seen["placeholder-secret"] == seen["base-url"] == seen["firmware-url"] == "error"
    assert seen["secure-version"] == "warning" and seen["firmware-sha256"] == "ok"  # `url:` releases need one
    assert "your-device-secret-key" not in result.stdout
    assert findings(example.cli("audit", "--format", "json", env={"OTA_SERVER_SHARED_SECRET_KEY": "short"})
                    )["short-secret"] == "error"


def test_audit_of_a_well_kept_fleet(repo, tmp_path):
    mixed_fleet(repo)
    devices = repo.root / "fleet/devices.yaml"
    devices.write_text(devices.read_text().replace("token_scheme: djb2-0", "token_scheme: hmac-sha256"))
    private, _ = generate_key()
    repo.env.update(OTA_SERVER_SHARED_SECRET_KEY="x" * 40, OTA_SERVER_SIGNING_KEY=private)
    repo.set_config(base_url="https://ota.example.com", token_scheme="hmac-sha256",
                    signing_key_expires=(NOW + timedelta(days=365)).strftime("%Y-%m-%d"))
    build_site(repo.config(), now=NOW)  # the build machine's clock at NOW (`build --now` moves rollouts only)
    result = repo.cli("audit", "--strict", "--now", (NOW + timedelta(days=1)).isoformat())
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("0 error(s), 0 warning(s)")
    late = findings(repo.cli("audit", "--format", "json", "--now", (NOW + timedelta(days=6, hours=12)).isoformat()))
    assert late["answer-expiry"] == "warning"  # the scheduled re-signing did not run
    stale = findings(repo.cli("audit", "--format", "json", "--now", (NOW + timedelta(days=8)).isoformat()))
    assert stale["answer-expiry"] == "error"
    soon = findings(repo.cli("audit", "--format", "json", "--now", (NOW + timedelta(days=350)).isoformat()))
    assert soon["key-expiry"] == "warning"


# --- nothing secret leaks ----------------------------------------------------------------------------
def test_no_secret_or_private_key_in_site_logs_or_output(repo):
    mixed_fleet(repo)
    private, key = generate_key()
    repo.env["OTA_SERVER_SIGNING_KEY"] = private
    repo.set_config(checkin_log="state/checkins.jsonl")
    outputs = [repo.cli("build").output, repo.cli("audit").output, repo.cli("--help").output]
    outputs.append(repo.cli("verify", str(answer_file(repo, "AABBCCDDEEFF")), "--keys",
                            str(repo.site / "keys.json"), "--mac", "AABBCCDDEEFF").output)
    server = Served(repo)
    try:
        for mac in HMAC_MACS:
            server.request(check(mac, "1.3.6"), {"X-Device-Auth": hmac_sha256(mac.replace(":", ""), SECRET),
                                                 "X-OTA-Signed": "1"})
    finally:
        server.stop()
    seed = base64.b64decode(private)
    forbidden = [SECRET, private, seed.hex(), *(device_key(m.replace(":", ""), SECRET).hex() for m in HMAC_MACS)]
    texts = {"output": "\n".join(outputs), "serve.log": server.log.read_text(),
             "checkins": (repo.root / "state/checkins.jsonl").read_text()}
    for dirpath, _dirs, names in os.walk(repo.site):
        for name in names:
            texts[os.path.join(dirpath, name)] = Path(dirpath, name).read_bytes().decode("latin-1")
    for name, text in texts.items():
        for secret in forbidden:
            assert secret not in text and secret.lower() not in text.lower(), name
    assert key.public_raw.hex() in (repo.site / "keys.json").read_text()


def test_a_build_without_state_reads_the_live_site(tmp_path):
    """A fresh CI runner has neither state nor site: previous_site_url gives anti-rollback its floor."""
    live = rollback_repo(Repo(tmp_path / "live"))
    private, key = generate_key()
    live.env["OTA_SERVER_SIGNING_KEY"] = private
    build_site(live.config(), now=NOW)
    server = Served(live)
    try:
        ci = Repo(tmp_path / "ci")
        shutil.copytree(live.root / "fleet", ci.root / "fleet")
        shutil.copytree(live.root / "firmware", ci.root / "firmware")
        ci.env["OTA_SERVER_SIGNING_KEY"] = private
        ci.set_config(previous_site_url=server.base)
        pin("app-2.1.0", ci)
        with pytest.raises(ValidationError, match="anti-rollback"):
            build_site(ci.config(), now=NOW - timedelta(hours=1))
        pin("app-2.2.0", ci)
        build_site(ci.config(), now=NOW - timedelta(hours=1))  # the CI runner's clock is behind
        answer = json.loads(answer_file(ci, "AABBCCDDEE01").read_bytes())
        assert answer["manifest_version"] == version(NOW) + 1
        # answers the live site already holds unchanged are carried over, signature and all
        assert answer_file(ci, "AABBCCDDEE02").read_bytes() == answer_file(live, "AABBCCDDEE02").read_bytes()
        # a live site that cannot be read stops the build rather than skipping the check
        shutil.rmtree(ci.root / ".otapub")
        shutil.rmtree(ci.site)
        ci.set_config(previous_site_url="http://127.0.0.1:9")
        with pytest.raises(OtapubError, match="previous_site_url"):
            build_site(ci.config(), now=NOW)
    finally:
        server.stop()
