"""One conformance suite for every shim, over real HTTP on 127.0.0.1 (design.md §2, issues 3 and 8).

Each test runs against each shim: the Python shim under its production server ("python"), and the Cloudflare
Worker (edge/cloudflare) under Miniflare with the site as static assets ("worker-assets") or in
an R2 bucket ("worker-r2"). The Worker's runs fail where node or its npm packages are missing
(`bash edge/cloudflare/ci.sh install`; .ci/run installs them). What only one shim can do runs
against that shim alone (ONLY_PYTHON, ONLY_R2), with the reason.
"""

import json
import re
import socket
import threading
import time
from urllib.parse import unquote_to_bytes

import pytest

from otapub.build import build_site
from otapub.firmware import digest_file
from otapub.shim import Shim
from otapub.tokens import djb2_0_wire, djb2_5381
from tests.conftest import SECRET, Repo, Served, WorkerServed, edge_missing, populate_example, run_threads

HW = "FireBeetle+2+ESP32-C6"  # the firmware's urlEncode(): space -> '+'
EEFF = djb2_5381("AABBCCDDEEFF", SECRET)
SEED_TOKEN = djb2_0_wire("112233445566", SECRET)  # lower case, unpadded: String(hash, HEX)


def check(mac="AA:BB:CC:DD:EE:FF", version="1.3.7", hardware=HW, device_id="PanicAlarm_EEFF"):
    return f"/api/firmware?device_id={device_id}&hardware={hardware}&version={version}&mac={mac}"


SHIMS = ["python", "worker-assets", "worker-r2"]


@pytest.fixture(scope="module", params=SHIMS)
def served(request, tmp_path_factory):
    if request.param != "python" and (why := edge_missing()):
        pytest.fail(why)
    repo = populate_example(Repo(tmp_path_factory.mktemp("shim") / "repo"))
    repo.write("fleet/rollback.yaml", """\
        devices:
          AA:BB:CC:00:00:02: {device_id: rolled-back, release: panic-1.3.7, allow_downgrade: true}
        """)
    repo.set_config(checkin_log="state/checkins.jsonl")
    (repo.root.parent / "outside-canary.txt").write_text("CANARY-OUTSIDE-SITE")
    build_site(repo.config())
    server = Served(repo) if request.param == "python" else WorkerServed(repo, request.param.removeprefix("worker-"))
    server.kind = request.param
    yield server
    server.stop()


# A test for one shim alone overrides the `served` fixture's parameters (indirect parametrization).
ONLY_PYTHON = pytest.mark.parametrize("served", ["python"], indirect=True)
ONLY_R2 = pytest.mark.parametrize("served", ["worker-r2"], indirect=True)


def checkins(served):
    return served.checkins()


def log_text(served) -> str:
    """Everything the shim wrote about requests: the check-in log, or the Worker's whole log."""
    if served.kind == "python":
        return (served.repo.root / "state/checkins.jsonl").read_text()
    return served.log.read_text(errors="replace")


def test_seed_firmware_request_djb2_5381(served):
    status, body = served.json(check(), {"X-Device-Auth": EEFF})
    fw = digest_file(served.repo.root / "firmware/panic_1.3.8.bin")
    assert status == 200
    assert body == {"update_available": True, "firmware_version": "1.3.8",
                    "firmware_url": f"{served.base}/f/{fw.sha256}/panic_1.3.8.bin",
                    "checksum": fw.md5, "sha256": fw.sha256, "size": fw.size}


def test_seed_firmware_request_djb2_0_lower_case_unpadded(served):
    assert SEED_TOKEN == SEED_TOKEN.lower()
    status, body = served.json(check("11:22:33:44:55:66", "1.3.6", device_id="PanicAlarm_5566"),
                               {"X-Device-Auth": SEED_TOKEN})
    assert status == 200 and body["update_available"] is True and body["firmware_version"] == "1.3.7"
    # the same token zero-padded and upper case is the same credential
    status, _ = served.json(check("112233445566", "1.3.6"), {"X-Device-Auth": SEED_TOKEN.upper().zfill(8)})
    assert status == 200


def test_download_what_was_offered_and_md5_matches(served):
    import hashlib

    _, body = served.json(check(), {"X-Device-Auth": EEFF})
    status, headers, data = served.request(body["firmware_url"].removeprefix(served.base))
    assert status == 200 and int(headers["content-length"]) == len(data) > 0
    assert hashlib.md5(data).hexdigest() == body["checksum"]


@pytest.mark.parametrize("version,offered", [("1.3.8", False), ("1.3.8.0", False), ("1.10.0", False),
                                             ("1.3.7", True), ("v1.3.7", True), ("1.3", True), ("0.9.99", True)])
def test_numeric_version_comparison(served, version, offered):
    status, body = served.json(check(version=version), {"X-Device-Auth": EEFF})
    assert status == 200 and body["update_available"] is offered
    if not offered:
        assert body == {"update_available": False}


def test_hardware_mismatch_gets_no_update_and_is_logged(served):
    status, body = served.json(check(hardware="ESP32-S3+Box"), {"X-Device-Auth": EEFF})
    assert status == 200 and body == {"update_available": False}
    last = checkins(served)[-1]
    assert last["decision"] == "hardware_mismatch" and last["hardware"] == "ESP32-S3 Box"


@pytest.mark.parametrize("version,offered", [("1.3.8", True), ("2.0", True), ("1.3.7", False), ("1.3.7.0", False),
                                             ("1.3.6", True)])
def test_downgrade_only_where_the_fleet_allows_it(served, version, offered):
    token = djb2_5381("AABBCC000002", SECRET)
    status, body = served.json(check("AA:BB:CC:00:00:02", version), {"X-Device-Auth": token})
    assert status == 200 and body["update_available"] is offered
    if offered:
        assert body["firmware_version"] == "1.3.7"
    # without allow_downgrade, a newer device is left alone (test_numeric_version_comparison)


def test_device_without_target(served):
    token = djb2_5381("AABBCC000001", SECRET)
    status, body = served.json(check("AA:BB:CC:00:00:01"), {"X-Device-Auth": token})
    assert status == 200 and body == {"update_available": False}


@pytest.mark.parametrize("query,error", [
    ("/api/firmware", "Missing required parameters: device_id, hardware, version, mac"),
    (check(mac=""), "Missing required parameters: mac"),
    (check(mac="AA:BB:CC:DD:EE"), "Invalid MAC address format"),
    (check(mac="GG:BB:CC:DD:EE:FF"), "Invalid MAC address format"),
    (check(version="1.2-beta"), "Invalid version format"),
    (check(version="abc"), "Invalid version format"),
])
def test_bad_requests_are_400_json(served, query, error):
    status, body = served.json(query, {"X-Device-Auth": EEFF})
    assert status == 400 and body == {"error": error}


def test_unknown_mac_and_wrong_token_are_indistinguishable(served):
    unknown = served.request(check("AA:BB:CC:DD:EE:01"), {"X-Device-Auth": djb2_5381("AABBCCDDEE01", SECRET)})
    wrong = served.request(check(), {"X-Device-Auth": "DEADBEEF"})
    missing = served.request(check())
    garbage = served.request(check(), {"X-Device-Auth": "not-hex!"})
    for status, _headers, body in (unknown, wrong, missing, garbage):
        assert status == 401 and json.loads(body) == {"error": "Authentication failed"}
    assert unknown[2] == wrong[2] == missing[2]
    assert checkins(served)[-1]["decision"] == "auth_failed"


def test_checkin_log_lines(served):
    served.json(check(version="1.3.7"), {"X-Device-Auth": EEFF})
    entry = checkins(served)[-1]
    assert set(entry) == {"time", "ip", "client", "mac", "device_id", "hardware", "version", "target", "decision",
                          "status"}
    assert entry["mac"] == "AA:BB:CC:DD:EE:FF" and entry["version"] == "1.3.7" and entry["target"] == "1.3.8"
    assert entry["decision"] == "update_offered" and entry["status"] == 200
    assert entry["ip"] == "127.0.0.1" and entry["client"] == "seed"
    text = log_text(served)
    assert EEFF not in text and EEFF.lower() not in text and SECRET not in text


def test_answer_file_is_token_gated(served):
    path = f"/d/{EEFF}/AABBCCDDEEFF.json"
    assert served.request(path)[0] == 401
    assert served.request(path, {"X-Device-Auth": "00000000"})[0] == 401
    status, headers, body = served.request(path, {"X-Device-Auth": EEFF.lower()})
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["mac"] == "AA:BB:CC:DD:EE:FF"


def firmware_path(served):
    fw = digest_file(served.repo.root / "firmware/panic_1.3.8.bin")
    return f"/f/{fw.sha256}/panic_1.3.8.bin", fw


def test_firmware_headers(served):
    path, fw = firmware_path(served)
    status, headers, body = served.request(path)
    assert status == 200 and len(body) == fw.size
    assert headers["content-length"] == str(fw.size)
    assert headers["etag"] == f'"{fw.sha256}"'
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "last-modified" in headers and headers["content-type"] == "application/octet-stream"


def test_firmware_conditional_range_and_head(served):
    path, fw = firmware_path(served)
    data = (served.repo.root / "firmware/panic_1.3.8.bin").read_bytes()
    assert served.request(path, {"If-None-Match": f'"{fw.sha256}"'})[0] == 304
    assert served.request(path, {"If-None-Match": '"other"'})[0] == 200
    status, headers, body = served.request(path, {"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and headers["content-range"] == f"bytes 10-19/{fw.size}"
    status, headers, body = served.request(path, {"Range": "bytes=-5"})
    assert status == 206 and body == data[-5:]
    status, headers, body = served.request(path, {"Range": "bytes=100-"})
    assert status == 206 and body == data[100:]
    status, headers, _ = served.request(path, {"Range": f"bytes={fw.size}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{fw.size}"
    status, headers, body = served.request(path, method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(fw.size)
    status, _, body = served.request(path, {"Range": "bytes=0-1,5-6"})  # multiple ranges: whole file
    assert status == 200 and body == data
    # bounds of more digits than Python's int() converts (4,300): past every file, as the Worker reads them
    huge = "9" * 5000
    assert served.request(path, {"Range": f"bytes={huge}-"})[0] == 416
    status, _, body = served.request(path, {"Range": f"bytes=-{huge}"})
    assert status == 206 and body == data
    status, _, body = served.request(path, {"Range": f"bytes=10-{huge}"})
    assert status == 206 and body == data[10:]


def test_seed_firmware_route(served):
    status, headers, body = served.request("/firmware/panic_1.3.7.bin")
    assert status == 200 and body == (served.repo.root / "firmware/panic_1.3.7.bin").read_bytes()
    assert served.request("/firmware/unknown.bin")[0] == 404


def test_status(served):
    status, body = served.json("/status")
    assert status == 200 and body["status"] == "ok" and body["site"]["devices"] == 4
    assert SECRET not in json.dumps(body)


@pytest.mark.parametrize("path", ["/", "/d/", "/f/", "/d", "/site", "/build.json/", "/api/firmware/x",
                                  "/admin/devices"])
def test_unknown_paths_are_404_json(served, path):
    status, headers, body = served.request(path)
    assert status == 404 and headers["content-type"] == "application/json" and json.loads(body)["error"]


def test_wrong_method_is_405(served):
    status, headers, body = served.request(check(), method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def raw(served, target: bytes, headers: bytes = b"") -> tuple[int, bytes]:
    """One request sent as bytes; the response read to its Content-Length (or to the close)."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head) if sep else None
            if length and len(body) >= int(length[1]):
                break  # workerd keeps the connection open for a while despite Connection: close
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


TRAVERSAL = [b"/f/../../outside-canary.txt", b"/f/%2e%2e/%2e%2e/outside-canary.txt", b"/%2e%2e/outside-canary.txt",
             b"/firmware/..%2f..%2foutside-canary.txt", b"/firmware/%2e%2e%5c%2e%2e%5coutside-canary.txt",
             b"/d/..%2f..%2f..%2foutside-canary.txt", b"/f/..\\..\\outside-canary.txt", b"/build.json%00.bin",
             b"/firmware/panic_1.3.7.bin%00", b"//etc/passwd", b"/firmware/.." , b"/" + b"a/" * 3000,
             b"/firmware/" + b"%2e" * 500, b"/d/" + EEFF.encode() + b"/..%2f..%2f..%2foutside-canary.txt"]


@pytest.mark.parametrize("target", TRAVERSAL)
def test_traversal_corpus(served, target):
    status, data = raw(served, target)
    assert status in (400, 404, 414) and b"CANARY" not in data and b"root:" not in data


@ONLY_PYTHON
def test_symlink_in_site_is_not_followed(served):
    """Python shim only: the Worker reads a staged copy or an R2 mirror of the site, which never holds a
    symlink (edge/cloudflare/test/site.test.mjs checks that staging and publishing skip them)."""
    site = served.repo.site
    fw_dir = next((site / "f").iterdir())
    link = fw_dir / "evil.bin"
    link.symlink_to(served.repo.root.parent / "outside-canary.txt")
    try:
        status, data = raw(served, f"/f/{fw_dir.name}/evil.bin".encode())
        assert status == 404 and b"CANARY" not in data
        status, data = raw(served, b"/firmware/evil.bin")
        assert status == 404 and b"CANARY" not in data
    finally:
        link.unlink()


def test_concurrent_workers_append_whole_lines(served):
    before = len(checkins(served))
    errors = []

    def hammer(_thread: int) -> None:
        for _ in range(50):
            if served.request(check(), {"X-Device-Auth": EEFF})[0] != 200:
                errors.append(1)

    run_threads(hammer, 8)
    assert not errors
    assert len(checkins(served)) == before + 400  # every line parses: none interleaved


def devices_during(served, change) -> tuple[list, list]:
    """Four devices check and download in a loop while ``change()`` runs; (failures, check statuses)."""
    stop = threading.Event()
    failures: list = []
    checks: list = []

    def device_loop():
        while not stop.is_set():
            status, body = served.json(check(version="0.0.1"), {"X-Device-Auth": EEFF})
            checks.append(status)
            if status != 200 or not body.get("update_available"):
                failures.append((status, body))
                continue
            st, _headers, data = served.request(body["firmware_url"].removeprefix(served.base))
            if st != 200 or len(data) != body["size"]:
                failures.append(("download", st, body["firmware_url"]))

    threads = [threading.Thread(target=device_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        change()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return failures, checks


@ONLY_PYTHON
def test_site_rebuilds_are_served_live_without_failures(served):
    """Serve continuously while releases change; no request fails, no answer names a missing file.

    Python shim only: live rebuilds under the production server; the Worker's site changes by deploy
    or R2 publish (test_r2_republish_keeps_every_answers_firmware).
    """
    repo = served.repo
    releases = repo.root / "fleet/releases.yaml"
    original = releases.read_text()

    def rebuild_repeatedly():
        for i in range(12):
            repo.firmware("panic_1.3.8.bin", size=4000, seed=i)  # a valid image, other bytes each build
            build_site(repo.config())
            time.sleep(0.05)

    try:
        failures, _checks = devices_during(served, rebuild_repeatedly)
    finally:
        repo.firmware("panic_1.3.8.bin", size=4000)
        releases.write_text(original)
        build_site(repo.config())
    assert failures == []


@ONLY_R2
def test_r2_republish_keeps_every_answers_firmware(served):
    """Devices keep checking and downloading while the site is rebuilt and published into R2.

    worker-r2 only: the R2 publish step (edge/cloudflare/lib/publish.mjs).
    """
    repo = served.repo
    summaries = []

    def rebuild_and_publish():
        for i in range(6):
            repo.firmware("panic_1.3.8.bin", size=4000, seed=100 + i)
            build_site(repo.config())
            summaries.append(served.publish())

    try:
        failures, checks = devices_during(served, rebuild_and_publish)
    finally:
        repo.firmware("panic_1.3.8.bin", size=4000)
        build_site(repo.config())
        served.publish()
    assert failures == [] and len(checks) > 6
    # each publish uploads the new firmware, the answer naming it, the index and build.json (unless the
    # build's record came out the same within its one-second resolution): never the whole fleet
    assert all(s.split()[:2] in (["3", "uploaded"], ["4", "uploaded"]) for s in summaries), summaries
    _, body = served.json(check(), {"X-Device-Auth": EEFF})
    fw = digest_file(repo.root / "firmware/panic_1.3.8.bin")
    assert body["sha256"] == fw.sha256
    status, _, data = served.request(body["firmware_url"].removeprefix(served.base))
    assert status == 200 and len(data) == fw.size


def test_otapub_status_reads_the_checkins(served, tmp_path):
    """`otapub status --log` reads the shim's check-ins (for the Worker: converted from its log lines)."""
    served.json(check(version="1.3.7"), {"X-Device-Auth": EEFF})
    log = tmp_path / "checkins.jsonl"
    log.write_text("".join(json.dumps(entry) + "\n" for entry in served.checkins()))
    result = served.repo.cli("status", "--json", "--log", str(log))
    assert result.exit_code == 0, result.output
    rows = {row["mac"]: row for row in json.loads(result.output)}
    assert rows["AA:BB:CC:DD:EE:FF"]["last_version"] == "1.3.7"
    assert rows["AA:BB:CC:DD:EE:FF"]["last_check"] is not None


def test_serve_refuses_placeholder_secrets(example):
    import subprocess
    import sys

    env = {"OTA_SERVER_ADMIN_API_KEY": "change-admin-api-key-in-production", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "otapub", "--config", str(example.config_file), "serve",
                           "--port", "1"], env={**example.env, **env}, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "refusing to start: admin_api_key" in done.stderr and "Traceback" not in done.stderr
    assert "change-admin-api-key-in-production" not in done.stderr


# -- byte for byte: every shim answers what the Python shim's WSGI app answers in-process ------------

FW = "{FW}"  # placeholder: /f/<sha256>/panic_1.3.8.bin of the served site
LONG = "x" * 300
CORPUS = [
    ("GET", check(), {"X-Device-Auth": EEFF}),
    ("GET", check(version="1.3.8"), {"X-Device-Auth": EEFF}),
    ("GET", check(version="%201.3.7%0A"), {"X-Device-Auth": EEFF}),
    ("GET", check(hardware="ESP32-S3+Box"), {"X-Device-Auth": EEFF}),
    ("GET", check(hardware="FireBeetle%202%20ESP32-C6"), {"X-Device-Auth": EEFF}),
    ("GET", check(hardware="%C3%A9%zz%E2%82+%ED%A0%80", device_id="caf%C3%A9"), {"X-Device-Auth": EEFF}),
    ("GET", check(device_id=LONG), {"X-Device-Auth": EEFF}),
    ("GET", check("11:22:33:44:55:66", "1.3.6", device_id="PanicAlarm_5566"), {"X-Device-Auth": SEED_TOKEN}),
    ("GET", check("aabb.ccdd.eeff"), {"X-Device-Auth": f"  {EEFF.lower()}  "}),
    ("GET", check("AA:BB:CC:00:00:01"), {"X-Device-Auth": djb2_5381("AABBCC000001", SECRET)}),
    ("GET", check(), {"X-Device-Auth": EEFF, "X-OTA-Signed": "1"}),
    ("HEAD", check(), {"X-Device-Auth": EEFF}),
    ("GET", "/api/firmware", {}),
    ("GET", "/api/firmware?", {}),
    ("GET", "/api/firmware?mac=&version=&hardware=&device_id=&mac=AA", {}),
    ("GET", check(mac="AA:BB:CC:DD:EE"), {}),
    ("GET", check(mac="AA-BB:CC:DD:EE:FF"), {}),
    ("GET", check(version="1.2-beta"), {}),
    ("GET", check() + "&x=1" * 16, {"X-Device-Auth": EEFF}),
    ("GET", check() + "&pad=" + "y" * 2100, {"X-Device-Auth": EEFF}),
    ("GET", check(), {"X-Device-Auth": "DEADBEEF"}),
    ("GET", check(), {"X-Device-Auth": "F" * 65}),
    ("GET", check(), {"X-Device-Auth": "not-hex!"}),
    ("GET", check(), {}),
    ("GET", f"/d/{EEFF}/AABBCCDDEEFF.json", {"X-Device-Auth": EEFF.lower()}),
    ("HEAD", f"/d/{EEFF}/AABBCCDDEEFF.json", {"X-Device-Auth": EEFF}),
    ("GET", f"/d/{EEFF}/AABBCCDDEEFF.json", {"X-Device-Auth": "00000000"}),
    ("GET", f"/d/{EEFF}/AABBCCDDEE01.json", {"X-Device-Auth": EEFF}),
    ("GET", f"/d/{EEFF.lower()}/AABBCCDDEEFF.json", {"X-Device-Auth": EEFF}),
    ("GET", FW, {}),
    ("HEAD", FW, {}),
    ("GET", FW, {"If-None-Match": '"{SHA}"'}),
    ("GET", FW, {"If-None-Match": 'W/"{SHA}", "x"'}),
    ("GET", FW, {"If-None-Match": "*"}),
    ("GET", FW, {"If-None-Match": '"x"', "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    ("GET", FW, {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    ("GET", FW, {"If-Modified-Since": "Sunday, 06-Nov-94 08:49:37 GMT"}),
    ("GET", FW, {"If-Modified-Since": "1 Jan 2100 00:00 +0100"}),
    ("GET", FW, {"If-Modified-Since": "garbage"}),
    ("GET", FW, {"Range": "bytes=10-19"}),
    ("GET", FW, {"Range": "bytes=-5"}),
    ("GET", FW, {"Range": "bytes=3990-"}),
    ("GET", FW, {"Range": "bytes=3990-99999999999999999999"}),
    ("GET", FW, {"Range": "bytes=" + "9" * 5000 + "-"}),
    ("GET", FW, {"Range": "bytes=-" + "9" * 5000}),
    ("GET", FW, {"Range": "bytes=" + "0" * 5000 + "10-19"}),
    ("GET", FW, {"Range": "bytes=4000-"}),
    ("GET", FW, {"Range": "bytes=-0"}),
    ("GET", FW, {"Range": "bytes=5-2"}),
    ("GET", FW, {"Range": "bytes=0-1,5-6"}),
    ("GET", FW, {"Range": " bytes=0-0 "}),
    ("GET", FW, {"Range": "items=0-1"}),
    ("GET", FW, {"Range": "bytes=0-9", "If-Range": '"{SHA}"'}),
    ("GET", FW, {"Range": "bytes=0-9", "If-Range": '"other"'}),
    ("HEAD", FW, {"Range": "bytes=0-9"}),
    ("GET", "/firmware/panic_1.3.7.bin", {}),
    ("GET", "/firmware/panic_1.3.7.bin", {"Range": "bytes=1-2"}),
    ("GET", "/firmware/unknown.bin", {}),
    ("GET", "/f/" + "0" * 64 + "/panic_1.3.8.bin", {}),
    ("GET", "/keys.json", {}),
    ("GET", "/", {}),
    ("GET", "/admin/devices", {}),
    ("GET", "/build.json", {}),
    ("GET", "/d/", {}),
    ("GET", "/" + "a" * 600, {}),
    ("POST", check(), {}),
    ("PUT", "/status", {}),
    ("DELETE", FW, {}),
    ("POST", "/nowhere", {}),
]
COMPARED = ("content-type", "content-length", "cache-control", "etag", "last-modified", "accept-ranges",
            "content-range", "allow")


def reference(served, method: str, target: str, headers: dict):
    """The Python shim's answer, from its WSGI app called in-process on the same site."""
    path, _, query = target.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
               "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(served.port),
               "HTTP_HOST": f"127.0.0.1:{served.port}", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, header_list, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = {k.lower(): v for k, v in header_list}

    body = b"".join(Shim(served.repo.site)(environ, start_response))
    return answer["status"], answer["headers"], b"" if method == "HEAD" else body


@pytest.mark.parametrize("method,target,headers", CORPUS,
                         ids=[f"{i:02d}-{m}-{t[:40]}" for i, (m, t, _h) in enumerate(CORPUS)])
def test_same_bytes_as_the_python_shim(served, method, target, headers):
    fw_path, fw = firmware_path(served)
    target = target.replace(FW, fw_path)
    headers = {k: v.replace("{SHA}", fw.sha256) for k, v in headers.items()}
    status, got_headers, body = served.request(target, headers, method=method)
    want_status, want_headers, want_body = reference(served, method, target, headers)
    assert (status, body) == (want_status, want_body)
    for name in COMPARED:
        if status == 304 and name == "content-length":
            continue  # servers differ on whether a 304 repeats it; no body either way
        assert got_headers.get(name) == want_headers.get(name), name


@pytest.fixture(scope="module", params=SHIMS)
def signed_served(request, tmp_path_factory):
    """A site with signed answers (keys.json) and a device on the hmac-sha256 token scheme."""
    from otapub.signing import generate_key

    if request.param != "python" and (why := edge_missing()):
        pytest.fail(why)
    repo = populate_example(Repo(tmp_path_factory.mktemp("signed") / "repo"))
    with open(repo.root / "fleet/devices.yaml", "a") as handle:
        handle.write('  "AA:BB:CC:00:00:10":\n    target_version: "1.3.7"\n    token_scheme: hmac-sha256\n')
    repo.env["OTA_SERVER_SIGNING_KEY"] = generate_key()[0]
    build_site(repo.config())
    assert (repo.site / "keys.json").is_file()
    server = Served(repo) if request.param == "python" else WorkerServed(repo, request.param.removeprefix("worker-"))
    server.kind = request.param
    yield server
    server.stop()


def test_signed_answers_and_hmac_tokens_same_bytes(signed_served):
    from otapub.tokens import hmac_sha256

    hmac_token = hmac_sha256("AABBCC000010", SECRET)
    cases = [("GET", check(), {"X-Device-Auth": EEFF, "X-OTA-Signed": "1"}),
             ("GET", check(), {"X-Device-Auth": EEFF, "X-OTA-Signed": " 1 "}),
             ("GET", check(), {"X-Device-Auth": EEFF, "X-OTA-Signed": "yes"}),
             ("GET", check(), {"X-Device-Auth": EEFF}),
             ("GET", check("AA:BB:CC:00:00:10", "1.0.0"), {"X-Device-Auth": hmac_token.lower(), "X-OTA-Signed": "1"}),
             ("GET", check("AA:BB:CC:00:00:10", "1.0.0"), {"X-Device-Auth": hmac_token[:-1]}),
             ("GET", f"/d/{EEFF}/AABBCCDDEEFF.json", {"X-Device-Auth": EEFF}),
             ("GET", "/keys.json", {}),
             ("HEAD", "/keys.json", {}),
             ("POST", "/keys.json", {})]
    for method, target, headers in cases:
        status, got_headers, body = signed_served.request(target, headers, method=method)
        want = reference(signed_served, method, target, headers)
        assert (status, body) == want[::2], (method, target, headers)
        for name in COMPARED:
            assert got_headers.get(name) == want[1].get(name), (name, target)
    status, _, body = signed_served.request(check(), {"X-Device-Auth": EEFF, "X-OTA-Signed": "1"})
    assert status == 200 and b'"signed": {' in body and b'"signature":' in body


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PATH_CHARS = st.sampled_from(list("/.%\\-_~+:;=?&#@!$'()*,") + list("0123456789abcdefABCDEF")
                              + ["%2e", "%2f", "%5c", "%00", "..", "d/", "f/", "api/firmware", "firmware/", "status",
                                 EEFF, "AABBCCDDEEFF.json", "%ff", "%c0%ae"])
_HEADER_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(_PATH_CHARS, max_size=30).map("".join),
       query=st.dictionaries(st.sampled_from(["mac", "version", "hardware", "device_id", "x"]),
                             _HEADER_TEXT, max_size=5),
       auth=st.one_of(st.none(), _HEADER_TEXT, st.just(EEFF)), rng=st.one_of(st.none(), _HEADER_TEXT),
       inm=st.one_of(st.none(), _HEADER_TEXT))
def test_fuzz_never_5xx_never_outside_site(served, path, query, auth, rng, inm):
    target = "/" + path.lstrip("/")
    if query:
        target = "/api/firmware?" + "&".join(f"{k}={v}" for k, v in query.items()).replace("#", "%23")
    headers = b""
    for name, value in (("X-Device-Auth", auth), ("Range", rng), ("If-None-Match", inm)):
        if value is not None:
            headers += f"{name}: {value}\r\n".encode()
    status, data = raw(served, target.replace(" ", "%20").encode(), headers)
    assert 200 <= status < 500, data[:300]
    assert b"CANARY" not in data and b"root:" not in data
