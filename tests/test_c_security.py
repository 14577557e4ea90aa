"""The device-side C for hmac-sha256 tokens (mbedTLS) and signed answers (libsodium) agrees with Python.

Needs gcc and the Debian packages libmbedtls-dev and libsodium-dev (.ci/run installs them); each
test fails with the reason when its library is missing. The signed answers come from a real `build_site` run.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from otapub.build import build_site
from otapub.mac import mac12
from otapub.signing import generate_key
from otapub.tokens import device_key, hmac_sha256, hmac_token_from_key
from tests.conftest import ROOT, Repo, load_script, populate_example

SECURE = ROOT / "examples" / "secure"
VECTORS_FILE = ROOT / "tests" / "vectors" / "hmac_tokens.json"
VECTORS: list[dict[str, str]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]


def _compile(gcc: str, tmp: Path, name: str, sources: list[Path], lib: str, header: str, package: str) -> Path:
    probe = subprocess.run([gcc, "-E", "-x", "c", "-"], input=f"#include <{header}>\n", capture_output=True,
                           text=True, check=False)
    if probe.returncode != 0:
        pytest.fail(f"<{header}> not found: bash .ci/run installs it (apt-get install {package})")
    binary = tmp / name
    done = subprocess.run([gcc, *CFLAGS, f"-I{SECURE}", "-o", str(binary), *map(str, sources), lib],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return binary


@pytest.fixture(scope="module")
def hmac_driver(gcc, tmp_path_factory) -> Path:
    return _compile(gcc, tmp_path_factory.mktemp("hmac"), "hmac_token",
                    [ROOT / "tests/c/hmac_token_main.c", SECURE / "otapub_hmac_token.c"],
                    "-lmbedcrypto", "mbedtls/md.h", "libmbedtls-dev")


@pytest.fixture(scope="module")
def verify_driver(gcc, tmp_path_factory) -> Path:
    return _compile(gcc, tmp_path_factory.mktemp("verify"), "verify_answer",
                    [ROOT / "tests/c/verify_answer_main.c", SECURE / "otapub_verify.c"],
                    "-lsodium", "sodium.h", "libsodium-dev")


# --- hmac-sha256 tokens -------------------------------------------------------------------------
def test_python_matches_hmac_vectors() -> None:
    import hashlib
    import hmac

    for vector in VECTORS:
        digits = mac12(vector["mac"])
        key = device_key(digits, vector["secret"])
        assert key.hex() == vector["device_key"]
        assert hmac_token_from_key(key, digits) == vector["token"] == hmac_sha256(digits, vector["secret"])
        # the documented formula, spelled out independently
        again = hmac.new(vector["secret"].encode(), digits.encode(), hashlib.sha256).digest()
        tag = hmac.new(again, b"otapub-token:" + digits.encode(), hashlib.sha256).hexdigest()[:32].upper()
        assert tag == vector["token"] and len(tag) == 32


def test_hmac_vectors_file_is_up_to_date() -> None:
    module = load_script(ROOT / "scripts" / "make_hmac_vectors.py")
    assert module.render(module.build_vectors()) == VECTORS_FILE.read_text(encoding="utf-8")


def test_c_hmac_tokens_match_vectors(hmac_driver: Path) -> None:
    lines = "".join(f"{mac12(v['mac'])} {v['secret'].encode('utf-8').hex() or '-'}\n" for v in VECTORS)
    done = subprocess.run([str(hmac_driver)], input=lines, capture_output=True, text=True, timeout=30, check=True)
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows == [[v["device_key"], v["token"]] for v in VECTORS]


def test_c_hmac_rejects_a_bad_mac12(hmac_driver: Path) -> None:
    done = subprocess.run([str(hmac_driver)], input="aabbccddeeff 41\nAABBCCDDEEF 41\n", capture_output=True,
                          text=True, timeout=30, check=True)
    assert done.stdout.splitlines() == ["error", "error"]


# --- signed answers -----------------------------------------------------------------------------
class Signed:
    """A site built with signing, its answer files and the key that signed them."""

    def __init__(self, root: Path):
        self.repo = populate_example(Repo(root / "repo"))
        self.private, self.key = generate_key()
        self.repo.env["OTA_SERVER_SIGNING_KEY"] = self.private
        # a UTF-8 device_id: the signed bytes carry it raw, not \u-escaped
        devices = self.repo.root / "fleet/devices.yaml"
        devices.write_text(devices.read_text().replace("PanicAlarm_EEFF", "Alarme_Entrée_EEFF"))
        build_site(self.repo.config(), now=NOW)
        self.answer = next(self.repo.site.glob("d/*/AABBCCDDEEFF.json"))

    def arg(self, key=None) -> str:
        key = key or self.key
        return f"{key.keyid}:{key.public_raw.hex()}"


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> Signed:
    return Signed(tmp_path_factory.mktemp("signed"))


def run_verify(driver: Path, answer: Path, keys: list[str], mac="AA:BB:CC:DD:EE:FF",
               now="2026-03-02T00:00:00Z", min_version=0) -> tuple[int, int, dict[str, str]]:
    done = subprocess.run([str(driver), str(answer), mac, now, str(min_version), *keys], capture_output=True,
                          text=True, timeout=30, check=True)
    first, *rest = done.stdout.splitlines()
    rc, version = map(int, first.split())
    return rc, version, dict(line.split(" ", 1) for line in rest)


def test_c_verifies_a_signature_made_by_the_build(signed, verify_driver) -> None:
    content = json.loads(signed.answer.read_bytes())
    assert "Entrée".encode() in signed.answer.read_bytes()
    rc, version, fields = run_verify(verify_driver, signed.answer, [signed.arg()])
    assert rc == 0 and version == content["manifest_version"] == int(NOW.timestamp())
    assert fields == {"firmware_url": json.dumps(content["firmware_url"]), "sha256": f'"{content["sha256"]}"',
                      "secure_version": str(content["secure_version"])}
    # every answer of the site, including one without a release
    answers = sorted(signed.repo.site.glob("d/*/*.json"))
    assert len(answers) >= 3 and any(b'"release":null' in p.read_bytes() or b'"release"' not in p.read_bytes()
                                     for p in answers)
    for path in answers:
        mac = json.loads(path.read_bytes())["mac"]
        assert run_verify(verify_driver, path, [signed.arg()], mac=mac)[0] == 0


def test_c_rejects_tampered_wrong_device_expired_and_replayed(signed, verify_driver, tmp_path) -> None:
    data = signed.answer.read_bytes()
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(data.replace(b'"size":4000', b'"size":4001'))
    assert run_verify(verify_driver, tampered, [signed.arg()])[0] == -3
    assert run_verify(verify_driver, signed.answer, [signed.arg()], mac="AA:BB:CC:DD:EE:00")[0] == -4
    expires = json.loads(data)["expires"]
    assert run_verify(verify_driver, signed.answer, [signed.arg()], now=expires)[0] == -5
    assert run_verify(verify_driver, signed.answer, [signed.arg()], now="2026-02-28T23:59:59Z")[0] == 0
    version = json.loads(data)["manifest_version"]
    assert run_verify(verify_driver, signed.answer, [signed.arg()], min_version=version)[0] == 0
    assert run_verify(verify_driver, signed.answer, [signed.arg()], min_version=version + 1)[0] == -6
    _, other = generate_key()
    assert run_verify(verify_driver, signed.answer, [signed.arg(other)])[0] == -2
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_bytes(data[: data.rindex(b',"signature":')] + b"}")
    assert run_verify(verify_driver, unsigned, [signed.arg()])[0] == -1


def test_c_accepts_old_and_new_key_during_a_rotation(verify_driver, tmp_path) -> None:
    signed = Signed(tmp_path)  # its own site: the rotation changes it
    repo = signed.repo
    old = signed.key
    private, new = generate_key()
    before = signed.answer.read_bytes()
    saved = tmp_path / "old.json"
    saved.write_bytes(before)
    repo.set_config(previous_public_keys=old.public_raw.hex())
    build_site(repo.config(OTA_SERVER_SIGNING_KEY=private), now=NOW + timedelta(hours=1))
    after = next(repo.site.glob("d/*/AABBCCDDEEFF.json"))
    assert after.read_bytes() != before
    both = [signed.arg(old), signed.arg(new)]
    assert run_verify(verify_driver, after, both)[:2] == (0, int((NOW + timedelta(hours=1)).timestamp()))
    assert run_verify(verify_driver, saved, both)[0] == 0
    assert run_verify(verify_driver, after, [signed.arg(old)])[0] == -2  # firmware that only knows the old key
    keys = json.loads((repo.site / "keys.json").read_bytes())["keys"]
    assert [(k["keyid"], k["status"]) for k in keys] == [(new.keyid, "current"), (old.keyid, "previous")]
