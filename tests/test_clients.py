"""Every update client against every shim (issue 12): each test sends the client's own request,
bytes as its source sends them, and checks what the client's code checks.

Sources followed (docs/clients.md):
- Arduino-ESP32 HTTPUpdate: libraries/HTTPUpdate/src/HTTPUpdate.cpp (handleUpdate: HTTP/1.0,
  User-Agent ESP32-http-Update, Cache-Control then the x-ESP32-* headers in this order, the request
  callback's headers last; 200 needs Content-Length > 0, first byte 0xE9, x-MD5 given to
  Update.setMD5; 304 is "no updates"), headers framed by libraries/HTTPClient/src/HTTPClient.cpp
  sendHeader (Host, User-Agent, Connection, Authorization, then the added headers).
- ESP8266httpUpdate: libraries/ESP8266httpUpdate/src/ESP8266httpUpdate.cpp (handleUpdate and
  getAvailableVersion's mode "version" answered by x-version), framed by ESP8266HTTPClient.cpp
  sendHeader (Host, User-Agent, Authorization, Connection, then the added headers).
- esp32FOTA: src/esp32FOTA.cpp (execHTTPcheck, checkJSONManifest, getHTTPStream).
- ESPHome: esphome/components/http_request/update/http_request_update.cpp (update()) and
  ota/ota_http_request.cpp (the download and its MD5 check).
- ESP-IDF: components/esp_https_ota/src/esp_https_ota.c (esp_https_ota_begin / perform: HEAD,
  the bytes=0-0 fallback, bytes=N-M windows, resumption from bytes=N-, 416).

Each runs against the Python shim and the Worker in both storage modes, like tests/test_shim.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket

import pytest

from otapub.build import build_site
from otapub.clients import semver3
from otapub.firmware import digest_file
from otapub.tokens import djb2_5381
from tests.conftest import SECRET, Repo, Served, WorkerServed, edge_missing, populate_example
from tests.test_shim import COMPARED, reference

SHIMS = ["python", "worker-assets", "worker-r2"]
BASE_URL = "https://ota.example.com/fleet"
FW = "firmware/fw_2.0.0.bin"
CLIENTS_YAML = """\
    releases:
      fw-2.0.0:
        version: "2.0.0"
        file: firmware/fw_2.0.0.bin
        release_url: https://example.com/releases/2.0.0
    groups:
      lab:
        members: ["AA:BB:CC:00:00:25"]
        client: [esp32fota, esphome]
        firmware_type: lab-fota
    devices:
      "AA:BB:CC:00:00:20": {device_id: hu-esp32, client: httpupdate, release: fw-2.0.0}
      "AA:BB:CC:00:00:21": {device_id: hu-esp8266, client: [httpupdate, seed], release: fw-2.0.0}
      "AA:BB:CC:00:00:22": {device_id: fota, client: esp32fota, firmware_type: panic-fota, release: fw-2.0.0}
      "AA:BB:CC:00:00:23": {device_id: kitchen, client: esphome, release: fw-2.0.0}
      "AA:BB:CC:00:00:24": {device_id: idf-dev, client: idf, release: fw-2.0.0}
      "AA:BB:CC:00:00:25": {device_id: lab-1}
      "AA:BB:CC:00:00:26": {device_id: hu-none, client: httpupdate}
    """


def token(mac12: str) -> str:
    return djb2_5381(mac12, SECRET)


@pytest.fixture(scope="module", params=SHIMS)
def served(request, tmp_path_factory):
    if request.param != "python" and (why := edge_missing()):
        pytest.skip(why)
    repo = populate_example(Repo(tmp_path_factory.mktemp("clients") / "repo"))
    repo.firmware("fw_2.0.0.bin", size=6000)
    repo.write("fleet/clients.yaml", CLIENTS_YAML)
    repo.set_config(checkin_log="state/checkins.jsonl", base_url=BASE_URL)
    build_site(repo.config())
    server = Served(repo) if request.param == "python" else WorkerServed(repo, request.param.removeprefix("worker-"))
    server.kind = request.param
    yield server
    server.stop()


def exchange(served, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a request exactly as given; read the status, headers and the body (to Content-Length)."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            top, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                status = int(top.split(b" ", 2)[1])
                length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", top)
                if status == 304 or head.startswith(b"HEAD ") or (length and len(body) >= int(length[1])):
                    break
            if not chunk:
                break
    lines = top.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    assert "chunked" not in headers.get("transfer-encoding", ""), "HTTPUpdate's HTTP/1.0 reader cannot de-chunk"
    return int(lines[0].split(" ", 2)[1]), headers, body


def esp32_update(served, mac: str, version: str | None = "1.0.0", *, path: str = "/api/httpupdate",
                 basic: str | None = None, auth: str | None = None, free: int = 1310720, mode: str = "sketch",
                 sketch_md5: str = "d41d8cd98f00b204e9800998ecf8427e", sta_mac: str | None = None) -> bytes:
    """HTTPUpdate::handleUpdate's request on Arduino-ESP32 (header order and spelling as sent)."""
    lines = [f"GET {path} HTTP/1.0", f"Host: 127.0.0.1:{served.port}", "User-Agent: ESP32-http-Update",
             "Connection: keep-alive"]
    if basic is not None:  # httpUpdate.setAuthorization(user, password)
        lines.append("Authorization: Basic " + base64.b64encode(basic.encode()).decode())
    lines += ["Cache-Control: no-cache", f"x-ESP32-STA-MAC: {sta_mac if sta_mac is not None else mac}",
              "x-ESP32-AP-MAC: " + mac[:-1] + "1", f"x-ESP32-free-space: {free}", "x-ESP32-sketch-size: 3000",
              f"x-ESP32-sketch-md5: {sketch_md5}", "x-ESP32-sketch-sha256: " + "AB" * 32,
              "x-ESP32-chip-size: 4194304", "x-ESP32-sdk-version: v5.1.4", f"x-ESP32-mode: {mode}"]
    if version:
        lines.append(f"x-ESP32-version: {version}")
    if auth is not None:  # added by the request callback (HTTPUpdateRequestCB)
        lines.append(f"X-Device-Auth: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def esp8266_update(served, mac: str, version: str | None = "1.0.0", *, path: str = "/api/httpupdate",
                   basic: str | None = None, free: int = 1000000, mode: str = "sketch") -> bytes:
    """ESP8266HTTPUpdate::handleUpdate's / getAvailableVersion's request (ESP8266HTTPClient framing)."""
    lines = [f"GET {path} HTTP/1.0", f"Host: 127.0.0.1:{served.port}", "User-Agent: ESP8266-http-Update"]
    if basic is not None:
        lines.append("Authorization: Basic " + base64.b64encode(basic.encode()).decode())
    lines += ["Connection: keep-alive", "x-ESP8266-Chip-ID: 1234567", f"x-ESP8266-STA-MAC: {mac}",
              "x-ESP8266-AP-MAC: " + mac[:-1] + "1", f"x-ESP8266-free-space: {free}", "x-ESP8266-sketch-size: 300000",
              "x-ESP8266-sketch-md5: 0123456789abcdef0123456789abcdef", "x-ESP8266-chip-size: 4194304",
              "x-ESP8266-sdk-version: 2.2.2-dev(38a443e)", f"x-ESP8266-mode: {mode}"]
    if version:
        lines.append(f"x-ESP8266-version: {version}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_httpupdate_installs(status: int, headers: dict, body: bytes, free: int, fw: bytes) -> None:
    """What HTTPUpdate::handleUpdate and runUpdate check before and while flashing."""
    assert status == 200
    length = int(headers["content-length"])
    assert 0 < length <= free and length == len(body)  # http.getSize(), FreeSketchSpace
    assert body[0] == 0xE9  # tcp->peek() != 0xE9: "Magic header does not start with 0xE9"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-md5"])  # Update.setMD5 takes 32 hex digits
    assert hashlib.md5(body).hexdigest() == headers["x-md5"] and body == fw


def firmware_bytes(served) -> bytes:
    return (served.repo.root / FW).read_bytes()


# -- Arduino HTTPUpdate (ESP32) and ESP8266httpUpdate ------------------------------------------------

@pytest.mark.parametrize("how", ["basic", "header", "path"])
def test_httpupdate_esp32_gets_the_image(served, how):
    t = token("AABBCC000020")
    kwargs = {"basic": {"basic": f"AABBCC000020:{t}"}, "header": {"auth": t.lower()},
              "path": {"path": f"/api/httpupdate/{t}"}}[how]
    status, headers, body = exchange(served, esp32_update(served, "AA:BB:CC:00:00:20", "1.0.0", **kwargs))
    assert_httpupdate_installs(status, headers, body, 1310720, firmware_bytes(served))
    assert headers["x-version"] == "2.0.0" and headers["cache-control"] == "no-store"
    entry = served.checkins()[-1]
    assert (entry["client"], entry["mac"], entry["version"], entry["target"], entry["decision"], entry["status"]) == \
        ("httpupdate", "AA:BB:CC:00:00:20", "1.0.0", "2.0.0", "update_offered", 200)
    assert t not in json.dumps(entry)


def test_httpupdate_nothing_newer_is_304(served):
    t = token("AABBCC000020")
    for version in ("2.0.0", "2.0", "2.1.0"):
        status, headers, body = exchange(served, esp32_update(served, "AA:BB:CC:00:00:20", version, auth=t))
        assert (status, body) == (304, b""), version
    assert served.checkins()[-1]["decision"] == "up_to_date"


def test_httpupdate_without_version_compares_the_sketch_md5(served):
    t = token("AABBCC000020")
    fw = digest_file(served.repo.root / FW)
    status, _, _ = exchange(served, esp32_update(served, "AA:BB:CC:00:00:20", None, auth=t, sketch_md5=fw.md5))
    assert status == 304
    status, headers, body = exchange(served, esp32_update(served, "AA:BB:CC:00:00:20", None, auth=t))
    assert_httpupdate_installs(status, headers, body, 1310720, firmware_bytes(served))


def test_httpupdate_device_without_target_is_304_and_spiffs_is_304(served):
    status, _, body = exchange(served, esp32_update(served, "AA:BB:CC:00:00:26", auth=token("AABBCC000026")))
    assert (status, body) == (304, b"")
    assert served.checkins()[-1]["decision"] == "no_target"
    status, _, _ = exchange(served, esp32_update(served, "AA:BB:CC:00:00:20", auth=token("AABBCC000020"),
                                                 mode="spiffs"))
    assert status == 304


def test_httpupdate_esp8266(served):
    t = token("AABBCC000021")
    status, headers, body = exchange(served, esp8266_update(served, "AA:BB:CC:00:00:21", "1.9.9",
                                                            basic=f"otapub:{t}"))
    assert_httpupdate_installs(status, headers, body, 1000000, firmware_bytes(served))
    # getAvailableVersion: x-ESP8266-mode: version, answered by x-version (and x-MD5)
    status, headers, _ = exchange(served, esp8266_update(served, "AA:BB:CC:00:00:21", "1.9.9",
                                                         path=f"/api/httpupdate/{t}", mode="version"))
    assert status == 200 and headers["x-version"] == "2.0.0"
    assert headers["x-md5"] == digest_file(served.repo.root / FW).md5
    status, _, _ = exchange(served, esp8266_update(served, "AA:BB:CC:00:00:21", "2.0.0", basic=f"otapub:{t}"))
    assert status == 304


@pytest.mark.parametrize("case,status,error,decision", [
    ("no MAC header", 400, "Missing x-ESP32-STA-MAC (or x-ESP8266-STA-MAC) header", "bad_request"),
    ("bad MAC header", 400, "Invalid MAC address format in x-ESP32-STA-MAC", "bad_request"),
    ("MAC of another device", 401, "Authentication failed", "auth_failed"),
    ("wrong token", 401, "Authentication failed", "auth_failed"),
    ("no token", 401, "Authentication failed", "auth_failed"),
    ("free space too small", 409, "Firmware 2.0.0 is {size} bytes, more than the 5000 bytes of free space the "
                                  "device reports (x-ESP32-free-space)", "no_space"),
    ("unknown mode", 400, "Unsupported x-ESP32-mode (known: sketch, spiffs, version)", "bad_request"),
    ("bad version", 400, "Invalid version format in x-ESP32-version", "bad_request"),
    ("device not declared for httpupdate", 403, "Device is not declared for client httpupdate (fleet YAML "
                                                "`client:`)", "client_not_declared"),
])
def test_httpupdate_bad_input_is_a_clear_4xx_and_logged(served, case, status, error, decision):
    t = token("AABBCC000020")
    mac = "AA:BB:CC:00:00:20"
    request = {
        "no MAC header": lambda: esp32_update(served, mac, auth=t).replace(f"x-ESP32-STA-MAC: {mac}\r\n".encode(), b""),
        "bad MAC header": lambda: esp32_update(served, mac, auth=t, sta_mac="AA:BB:CC:00:00"),
        "MAC of another device": lambda: esp32_update(served, "AA:BB:CC:00:00:22", auth=t),
        "wrong token": lambda: esp32_update(served, mac, auth="DEADBEEF"),
        "no token": lambda: esp32_update(served, mac),
        "free space too small": lambda: esp32_update(served, mac, auth=t, free=5000),
        "unknown mode": lambda: esp32_update(served, mac, auth=t, mode="firmware"),
        "bad version": lambda: esp32_update(served, mac, "2.0-rc1", auth=t),
        "device not declared for httpupdate": lambda: esp32_update(served, "AA:BB:CC:00:00:24",
                                                                  auth=token("AABBCC000024")),
    }[case]()
    got, headers, body = exchange(served, request)
    size = digest_file(served.repo.root / FW).size
    assert got == status and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": error.format(size=size)}
    entry = served.checkins()[-1]
    assert entry["client"] == "httpupdate" and entry["decision"] == decision and entry["status"] == status


def test_seed_protocol_refuses_a_device_not_declared_for_it(served):
    t = token("AABBCC000020")
    status, body = served.json("/api/firmware?device_id=x&hardware=y&version=1.0.0&mac=AA:BB:CC:00:00:20",
                               {"X-Device-Auth": t})
    assert status == 403 and body == {"error": "Device is not declared for client seed (fleet YAML `client:`)"}
    # a device declaring both protocols is answered by both
    t = token("AABBCC000021")
    status, body = served.json("/api/firmware?device_id=x&hardware=y&version=1.0.0&mac=AA:BB:CC:00:00:21",
                               {"X-Device-Auth": t})
    assert status == 200 and body["update_available"] is True and body["firmware_version"] == "2.0.0"
    assert served.checkins()[-1]["client"] == "seed"


# -- esp32FOTA ---------------------------------------------------------------------------------------

def esp32_get(served, path: str, user_agent: str = "ESP32HTTPClient", extra: str = "") -> bytes:
    """An Arduino-ESP32 HTTPClient GET (HTTP/1.1: Accept-Encoding after Connection)."""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nUser-Agent: {user_agent}\r\n"
            "Connection: keep-alive\r\nAccept-Encoding: identity;q=1,chunked;q=0.1,*;q=0\r\n" + extra
            + "\r\n").encode()


def local(served, url: str) -> str:
    """The path on the shim of a URL under base_url."""
    assert url.startswith(BASE_URL + "/"), url
    return url.removeprefix(BASE_URL)


def semver_newer(payload: str, current: str) -> bool:
    """esp32FOTA: semver_compare(payload, current) == 1."""
    return tuple(map(int, payload.split("."))) > tuple(map(int, current.split(".")))


def test_esp32fota_manifest_and_download(served):
    t = token("AABBCC000022")
    status, headers, body = exchange(served, esp32_get(served, f"/d/{t}/AABBCC000022/esp32fota.json"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert len(body) < 2048  # DynamicJsonDocument JSONResult(JSON_FW_BUFF_SIZE = 2048)
    doc = json.loads(body)  # deserializeJson; an object: checkJSONManifest(doc)
    assert isinstance(doc, dict)
    assert isinstance(doc["type"], str) and doc["type"] == "panic-fota"  # strcmp with the firmware's type
    assert isinstance(doc["version"], str) and re.fullmatch(r"\d+\.\d+\.\d+", doc["version"])
    assert doc["version"] == "2.0.0" and semver_newer(doc["version"], "1.3.7")
    assert not semver_newer(doc["version"], "2.0.0")  # the device itself decides: no re-flash
    assert isinstance(doc["url"], str) and doc["url"].startswith("https://")  # has_url: used as is
    status, headers, fw = exchange(served, esp32_get(served, local(served, doc["url"])))
    assert status == 200 and int(headers["content-length"]) == len(fw) > 0  # getHTTPStream: updateSize > 0
    assert headers["accept-ranges"] == "bytes" and fw[0] == 0xE9 and fw == firmware_bytes(served)
    entry = served.checkins()[-1]
    assert (entry["client"], entry["mac"], entry["target"], entry["decision"]) == \
        ("esp32fota", "AA:BB:CC:00:00:22", "2.0.0", "manifest_served")


def test_esp32fota_without_target_is_an_empty_array(served):
    t = token("AABBCC000025")
    status, _, body = exchange(served, esp32_get(served, f"/d/{t}/AABBCC000025/esp32fota.json"))
    assert status == 200 and json.loads(body) == []  # JsonArray: no entry matches, no update


def test_manifests_need_the_token_in_the_path(served):
    assert exchange(served, esp32_get(served, "/d/DEADBEEF/AABBCC000022/esp32fota.json"))[0] == 404
    t = token("AABBCC000020")  # a device that does not speak esp32FOTA has no manifest
    assert exchange(served, esp32_get(served, f"/d/{t}/AABBCC000020/esp32fota.json"))[0] == 404


def test_manifest_checkin_names_the_target_from_the_manifest_alone(repo):
    """Serving a manifest reads the manifest only: the check-in's target is the one it names."""
    repo.firmware("fw_2.0.0.bin", size=6000)
    repo.write("fleet/clients.yaml", CLIENTS_YAML)
    repo.set_config(checkin_log="state/checkins.jsonl", base_url=BASE_URL)
    build_site(repo.config())
    for mac12 in ("AABBCC000022", "AABBCC000023", "AABBCC000025"):
        (repo.site / "d" / token(mac12) / f"{mac12}.json").unlink()  # the answer is not read
    served = Served(repo)
    try:
        for mac12, client, target in [("AABBCC000022", "esp32fota", "2.0.0"), ("AABBCC000023", "esphome", "2.0.0"),
                                      ("AABBCC000025", "esp32fota", None), ("AABBCC000025", "esphome", None)]:
            assert exchange(served, esp32_get(served, f"/d/{token(mac12)}/{mac12}/{client}.json"))[0] == 200
            entry = served.checkins()[-1]
            assert (entry["client"], entry["target"], entry["decision"]) == (client, target, "manifest_served")
    finally:
        served.stop()


# -- ESPHome -----------------------------------------------------------------------------------------

def esphome_resolve(source_url: str, path: str) -> str:
    """HttpRequestUpdate::update(): how ESPHome merges source_url and ota.path."""
    if "http" in path:
        return path
    if path.startswith("/"):
        return source_url[: source_url.find("/", 8)] + path
    return source_url[: source_url.rfind("/") + 1] + path


def test_esphome_manifest_and_download(served):
    t = token("AABBCC000023")
    source = f"{BASE_URL}/d/{t}/AABBCC000023/esphome.json"
    status, headers, body = exchange(served, esp32_get(served, local(served, source), "ESPHome"))
    assert status == 200 and int(headers["content-length"]) == len(body)  # allocates content_length
    doc = json.loads(body)
    assert {"name", "version", "builds"} <= set(doc)
    assert doc["name"] == "kitchen" and doc["version"] == "2.0.0"  # compared with its project version by !=
    (build,) = doc["builds"]  # the device's target only: ESPHome offers any version that differs
    assert build["chipFamily"] == "ESP32-C6"  # == ESPHOME_VARIANT
    ota = build["ota"]
    assert isinstance(ota["path"], str) and re.fullmatch(r"[0-9a-f]{32}", ota["md5"])
    assert ota["summary"] == "fw-2.0.0 2.0.0" and ota["release_url"] == "https://example.com/releases/2.0.0"
    url = esphome_resolve(source, ota["path"])
    status, headers, fw = exchange(served, esp32_get(served, local(served, url), "ESPHome"))
    assert status == 200 and int(headers["content-length"]) == len(fw) > 0  # backend->begin(content_length)
    assert hashlib.md5(fw).hexdigest() == ota["md5"]  # "Aborting due to MD5 mismatch" otherwise
    assert served.checkins()[-1]["client"] == "esphome"


def test_esphome_without_target_names_no_build(served):
    t = token("AABBCC000025")
    status, _, body = exchange(served, esp32_get(served, f"/d/{t}/AABBCC000025/esphome.json", "ESPHome"))
    assert status == 200 and json.loads(body) == {"name": "lab-1", "version": "", "builds": []}


# -- ESP-IDF esp_https_ota: the exact request sequence -------------------------------------------------

def idf_request(served, method: str, path: str, *extra: str) -> bytes:
    """esp_http_client's request: User-Agent and Host (set in esp_http_client_init), then the headers
    set since (Range by esp_https_ota, X-Device-Auth by the app's http_client_init_cb)."""
    lines = [f"{method} {path} HTTP/1.1", "User-Agent: ESP32 HTTP Client/1.0", f"Host: 127.0.0.1:{served.port}",
             *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_idf_https_ota_replay(served):
    """The token-gated answer read, then esp_https_ota_begin/perform with partial_http_download,
    max_http_request_size 2048 and the ota_resumption paths, request by request."""
    t = token("AABBCC000024")
    auth = f"X-Device-Auth: {t}"
    # 1. the app reads its answer (token-gated) and compares versions itself (esp_app_get_description)
    assert exchange(served, idf_request(served, "GET", f"/d/{t}/AABBCC000024.json"))[0] == 401
    assert exchange(served, idf_request(served, "GET", f"/d/{t}/AABBCC000024.json", "X-Device-Auth: 00000000"))[0] \
        == 401
    status, _, body = exchange(served, idf_request(served, "GET", f"/d/{t}/AABBCC000024.json", auth))
    answer = json.loads(body)
    assert status == 200 and answer["firmware_version"] == "2.0.0" and answer["clients"] == ["idf"]
    assert served.checkins()[-1]["client"] == "idf" and served.checkins()[-1]["decision"] == "answer_served"
    fw = firmware_bytes(served)
    # the content-addressed URL the answer names, and the seed's /firmware/<name> (ETag from mtime)
    for path in (local(served, answer["firmware_url"]), "/firmware/fw_2.0.0.bin"):
        idf_download(served, path, fw, auth)


def idf_download(served, path: str, fw: bytes, auth: str) -> None:
    """esp_https_ota_begin / perform against one firmware URL, request by request."""
    size = len(fw)
    # 2. partial_http_download: HEAD for the image length (the token header rides along)
    status, headers, body = exchange(served, idf_request(served, "HEAD", path, auth))
    assert status == 200 and int(headers["content-length"]) == size and body == b""
    # 3. the first window bytes=0-2047, then bytes=N-N+2047, then the rest bytes=N- (esp_https_ota_perform)
    received = b""
    start = 0
    while start < size:
        spec = f"bytes={start}-{start + 2047}" if size - start > 2048 else f"bytes={start}-"
        status, headers, body = exchange(served, idf_request(served, "GET", path, f"Range: {spec}", auth))
        end = min(start + 2047, size - 1)
        assert status == 206 and headers["content-range"] == f"bytes {start}-{end}/{size}", spec
        assert int(headers["content-length"]) == len(body) == end - start + 1
        received += body
        start = end + 1
    assert received == fw and received[0] == 0xE9
    # 4. HEAD refused by some hosts: the ranged GET fallback bytes=0-0, length from Content-Range
    status, headers, body = exchange(served, idf_request(served, "GET", path, "Range: bytes=0-0", auth))
    assert status == 206 and headers["content-range"] == f"bytes 0-0/{size}" and body == fw[:1]
    # 5. a window whose end lies past the image (range_end = image_length): clamped
    status, headers, body = exchange(served, idf_request(served, "GET", path, f"Range: bytes={size - 100}-{size}"))
    assert status == 206 and headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}" and body == fw[-100:]
    # 6. ota_resumption: bytes=0- and bytes=N- must be 206 ("Server ignored the requested Range header")
    for offset in (0, 4096):
        status, headers, body = exchange(served, idf_request(served, "GET", path, f"Range: bytes={offset}-", auth))
        assert status == 206 and body == fw[offset:]
    # 7. an offset saved before the image changed, past its end: 416, and the client restarts from 0
    status, headers, _ = exchange(served, idf_request(served, "GET", path, f"Range: bytes={size}-", auth))
    assert status == 416 and headers["content-range"] == f"bytes */{size}"
    status, headers, body = exchange(served, idf_request(served, "GET", path, auth))
    assert status == 200 and int(headers["content-length"]) == size and body == fw


# -- byte for byte: the Worker answers the new routes as the Python shim does ------------------------

def corpus() -> list[tuple[str, str, dict]]:
    t20, t22, t23 = token("AABBCC000020"), token("AABBCC000022"), token("AABBCC000023")
    hu = {"x-ESP32-STA-MAC": "AA:BB:CC:00:00:20", "x-ESP32-free-space": "1310720", "x-ESP32-mode": "sketch",
          "x-ESP32-version": "1.0.0"}
    return [
        ("GET", "/api/httpupdate", {**hu, "X-Device-Auth": t20}),
        ("HEAD", "/api/httpupdate", {**hu, "X-Device-Auth": t20}),
        ("GET", f"/api/httpupdate/{t20.lower()}", hu),
        ("GET", "/api/httpupdate", {**hu, "Authorization": "Basic " + base64.b64encode(f"u:{t20}".encode()).decode()}),
        ("GET", "/api/httpupdate", {**hu, "x-ESP32-version": "2.0.0", "X-Device-Auth": t20}),
        ("GET", "/api/httpupdate", {**hu, "x-ESP32-free-space": "12", "X-Device-Auth": t20}),
        ("GET", "/api/httpupdate", {**hu, "x-ESP32-mode": "x", "X-Device-Auth": t20}),
        ("GET", "/api/httpupdate", {"X-Device-Auth": t20}),
        ("GET", "/api/httpupdate", {**hu, "X-Device-Auth": "DEADBEEF"}),
        ("GET", "/api/httpupdate", {**hu, "Authorization": "Basic !!"}),
        ("GET", "/api/httpupdate/xyz", hu),
        ("GET", "/api/httpupdate/", hu),
        ("POST", "/api/httpupdate", hu),
        ("GET", f"/d/{t22}/AABBCC000022/esp32fota.json", {}),
        ("HEAD", f"/d/{t23}/AABBCC000023/esphome.json", {}),
        ("GET", f"/d/{t23}/AABBCC000023/esphome.json", {}),
        ("GET", f"/d/{t23}/AABBCC000023/other.json", {}),
        ("GET", f"/d/{t22}/AABBCC000023/esphome.json", {}),
        ("DELETE", f"/d/{t22}/AABBCC000022/esp32fota.json", {}),
    ]


def test_new_routes_same_bytes_as_the_python_shim(served):
    for method, target, headers in corpus():
        status, got_headers, body = served.request(target, headers, method=method)
        want_status, want_headers, want_body = reference(served, method, target, headers)
        assert (status, body) == (want_status, want_body), (method, target)
        for name in (*COMPARED, "x-md5", "x-version"):
            if status == 304 and name == "content-length":
                continue
            assert got_headers.get(name) == want_headers.get(name), (name, method, target)


# -- the fleet YAML and the build ---------------------------------------------------------------------

def test_build_writes_manifests_only_for_the_clients_declared(served):
    site = served.repo.site
    manifests = sorted(str(p.relative_to(site)) for p in site.glob("d/*/*/*.json"))
    assert manifests == sorted([f"d/{token('AABBCC000022')}/AABBCC000022/esp32fota.json",
                                f"d/{token('AABBCC000023')}/AABBCC000023/esphome.json",
                                f"d/{token('AABBCC000025')}/AABBCC000025/esp32fota.json",
                                f"d/{token('AABBCC000025')}/AABBCC000025/esphome.json"])
    assert not [p for p in site.rglob("*") if p.name.startswith(".")]


@pytest.mark.parametrize("yaml,message", [
    ('"AA:BB:CC:00:00:30": {client: esp32fota, release: fw}',
     "devices.AA:BB:CC:00:00:30.client: client esp32fota needs `firmware_type:`"),
    ('"AA:BB:CC:00:00:30": {client: [seed, ota]}', "devices.AA:BB:CC:00:00:30.client: unknown client 'ota'"),
    ('"AA:BB:CC:00:00:30": {client: [seed, seed]}', "a client is listed twice"),
    ('"AA:BB:CC:00:00:30": {client: esp32fota, firmware_type: "a b"}', "firmware_type: expected an esp32FOTA"),
    ('"AA:BB:CC:00:00:30": {client: [seed, idf], firmware_type: t}',
     "devices.AA:BB:CC:00:00:30.firmware_type: only client esp32fota reads `firmware_type:`, and this device speaks "
     "seed, idf: add esp32fota to its `client:`, or remove `firmware_type:`"),
    ('"AA:BB:CC:00:00:30": {client: esp32fota, firmware_type: t, release: fw4}',
     "esp32FOTA reads versions as X.Y.Z: release 'fw4' has version 1.2.3.4"),
    ('"AA:BB:CC:00:00:30": {client: httpupdate, release: remote}',
     "client httpupdate is sent the image by the shim itself: release 'remote' must be a `file:` release"),
    ('"AA:BB:CC:00:00:30": {client: esphome, release: remote}',
     "ESPHome's manifest names the chip: release 'remote' has no known chip"),
])
def test_client_mistakes_name_file_line_and_field(repo, yaml, message):
    repo.firmware("fw.bin", version="1.0.0")
    repo.firmware("fw4.bin", version="1.2.3.4")
    repo.write("fleet/fleet.yaml", f"""\
        releases:
          fw: {{version: "1.0.0", file: firmware/fw.bin}}
          fw4: {{version: "1.2.3.4", file: firmware/fw4.bin}}
          remote: {{version: "1.0.0", url: "https://cdn.example.com/x.bin", md5: "{'0' * 32}", sha256: "{'0' * 64}",
                    size: 10}}
        devices:
          {yaml}
        """)
    repo.set_config(base_url=BASE_URL)
    result = repo.cli("check")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert re.search(r"fleet/fleet\.yaml:\d+:\d+: ", result.output) and message in result.output, result.output


def test_esp32fota_needs_an_absolute_url(repo):
    repo.firmware("fw.bin", version="1.0.0")
    repo.write("fleet/fleet.yaml", """\
        releases:
          fw: {version: "1.0.0", file: firmware/fw.bin}
        devices:
          "AA:BB:CC:00:00:30": {client: esp32fota, firmware_type: t, release: fw}
        """)
    result = repo.cli("check")
    assert result.exit_code != 0 and "esp32FOTA needs an absolute firmware URL" in result.output
    assert "set base_url" in result.output


def test_esphome_path_taken_for_a_url_is_refused_without_base_url(repo):
    repo.firmware("http_fw_1.0.0.bin", version="1.0.0")
    repo.firmware("fw_1.0.0.bin", version="1.0.0")
    repo.write("fleet/fleet.yaml", """\
        releases:
          fw: {version: "1.0.0", file: firmware/http_fw_1.0.0.bin}
          plain: {version: "1.0.0", file: firmware/fw_1.0.0.bin}
        devices:
          "AA:BB:CC:00:00:30": {client: esphome, release: fw}
          "AA:BB:CC:00:00:31": {client: esphome, release: plain}
        """)
    result = repo.cli("check")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert re.search(r"fleet/fleet\.yaml:5:\d+: devices\.AA:BB:CC:00:00:30\.client: ESPHome takes a path "
                     r"containing 'http' as a URL: /f/[0-9a-f]{64}/http_fw_1\.0\.0\.bin", result.output), result.output
    assert "AA:BB:CC:00:00:31" not in result.output  # /f/<sha256>/fw_1.0.0.bin: on the manifest's host
    repo.set_config(base_url=BASE_URL)
    assert repo.cli("check").exit_code == 0


def test_semver3():
    assert [semver3(v) for v in ("1", "1.2", "1.2.3", "v1.2.3", "1.2.3.0", "1.2.3.4")] == \
        ["1.0.0", "1.2.0", "1.2.3", "1.2.3", "1.2.3", None]


def test_explain_plan_and_audit_show_the_clients(example):
    from tests.test_plan import git

    example.firmware("fw_2.0.0.bin", size=6000)
    example.set_config(base_url=BASE_URL)
    git(example, "init", "-q", "-b", "main")
    git(example, "add", "-A")
    git(example, "commit", "-qm", "base")
    example.write("fleet/clients.yaml", CLIENTS_YAML)
    result = example.cli("explain", "AA:BB:CC:00:00:25")
    assert result.exit_code == 0 and "clients: esp32fota, esphome (from group lab); esp32FOTA firmware type lab-fota" \
        in result.output, result.output
    assert "clients: seed\n" in example.cli("explain", "AA:BB:CC:DD:EE:FF").output
    view = json.loads(example.cli("device", "get", "AA:BB:CC:00:00:25", "--json").output)
    assert view["clients"] == ["esp32fota", "esphome"]
    result = example.cli("plan", "--format", "json", env={"OTA_SERVER_SHARED_SECRET_KEY": ""})
    data = json.loads(result.output)
    assert data["clients"] == {"esp32fota": 2, "esphome": 2, "httpupdate": 3, "idf": 1, "seed": 4}
    assert "clients: esp32fota 2, esphome 2, httpupdate 3, idf 1, seed 4" in example.cli("plan").output
    # a device that changes client is a change the plan shows
    git(example, "add", "-A")
    git(example, "commit", "-qm", "clients")
    example.write("fleet/clients.yaml", CLIENTS_YAML.replace("client: idf", "client: [idf, seed]"))
    text = example.cli("plan").output
    assert "1 device client idf -> idf, seed" in text
    assert "client idf → idf, seed | 1 device" in example.cli("plan", "--format", "markdown").output
    result = example.cli("audit", "--format", "json")
    facts = json.loads(result.output)["facts"]
    assert facts["clients"] == {"esp32fota": 2, "esphome": 2, "httpupdate": 3, "idf": 1, "seed": 5}


def test_token_urls_point_each_client_at_its_url(served):
    repo = served.repo
    result = repo.cli("token", "AA:BB:CC:00:00:25", "--urls")
    t = token("AABBCC000025")
    assert result.exit_code == 0 and result.output.splitlines() == [
        f"esp32fota:  {BASE_URL}/d/{t}/AABBCC000025/esp32fota.json (any static host)",
        f"esphome:    {BASE_URL}/d/{t}/AABBCC000025/esphome.json (any static host)"]
    output = repo.cli("token", "aa:bb:cc:00:00:20", "--urls").output
    assert f"httpupdate: {BASE_URL}/api/httpupdate/{token('AABBCC000020')} (shim;" in output
    # every URL printed is one the shim answers for that device
    for line in repo.cli("token", "AA:BB:CC:00:00:25", "--urls").output.splitlines():
        url = line.split()[1]
        assert served.request(local(served, url))[0] == 200


def test_token_urls_honours_scheme_and_refuses_canonical(repo):
    repo.write("fleet/clients.yaml", 'devices:\n  "AA:BB:CC:00:00:20": {client: httpupdate}\n')
    repo.set_config(base_url=BASE_URL)
    wire = repo.cli("token", "AA:BB:CC:00:00:20", "--scheme", "djb2-0").output.strip()
    canonical = repo.cli("token", "AA:BB:CC:00:00:20", "--scheme", "djb2-0", "--canonical").output.strip()
    result = repo.cli("token", "AA:BB:CC:00:00:20", "--urls", "--scheme", "djb2-0")
    assert result.exit_code == 0 and result.output.splitlines() == [
        f"httpupdate: {BASE_URL}/api/httpupdate/{canonical} (shim; or {BASE_URL}/api/httpupdate with Basic "
        f"password {wire} or X-Device-Auth: {wire})"]
    assert canonical != token("AABBCC000020")  # the scheme given, not the fleet's default
    result = repo.cli("token", "AA:BB:CC:00:00:20", "--urls", "--scheme", "nope")
    assert result.exit_code != 0 and "unknown token scheme 'nope'" in result.output
    result = repo.cli("token", "AA:BB:CC:00:00:20", "--urls", "--canonical")
    assert result.exit_code == 2 and "leave out --canonical" in result.output and "Traceback" not in result.output


def test_examples_use_the_urls_otapub_prints():
    """Each client example is configured with what `otapub token --urls` prints for its client."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples" / "clients"
    texts = {p.name: p.read_text() for p in examples.iterdir()}
    assert set(texts) == {"HTTPUpdateBasic.ino", "esp32FOTA.ino", "esphome.yaml", "idf_https_ota.c"}
    assert '"https://ota.example.com/api/httpupdate"' in texts["HTTPUpdateBasic.ino"]
    assert "httpUpdate.setAuthorization(" in texts["HTTPUpdateBasic.ino"]
    assert re.search(r'"https://ota\.example\.com/d/[0-9A-F]{8}/[0-9A-F]{12}/esp32fota\.json"', texts["esp32FOTA.ino"])
    assert re.search(r"https://ota\.example\.com/d/[0-9A-F]{8}/[0-9A-F]{12}/esphome\.json", texts["esphome.yaml"])
    assert "platform: http_request" in texts["esphome.yaml"]
    assert re.search(r'"https://ota\.example\.com/d/[0-9A-F]{8}/[0-9A-F]{12}\.json"', texts["idf_https_ota.c"])
    assert ".partial_http_download = true" in texts["idf_https_ota.c"]
    for name, text in texts.items():
        assert "otapub token" in text, name


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=70)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(["x-ESP32-STA-MAC", "x-ESP8266-STA-MAC", "x-ESP32-version",
                                               "x-ESP32-mode", "x-ESP32-free-space", "x-ESP32-sketch-md5",
                                               "x-ESP8266-mode", "X-Device-Auth", "Authorization"]),
                              st.one_of(_TEXT, st.just("AA:BB:CC:00:00:20"), st.just("Basic Og=="),
                                        st.just(token("AABBCC000020")), st.just("version"), st.just("0")),
                              max_size=6),
       tail=st.one_of(st.just(""), st.just("/" + token("AABBCC000020")), _TEXT.map(lambda t: "/" + t)))
def test_fuzz_httpupdate_never_5xx(served, values, tail):
    head = f"GET /api/httpupdate{tail.replace(' ', '%20').replace('#', '%23').replace('?', '%3F')} HTTP/1.0\r\n"
    head += f"Host: 127.0.0.1:{served.port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in values.items()) + "\r\n"
    status, _, body = exchange(served, head.encode())
    assert 200 <= status < 500, body[:300]


def test_signed_site_signs_answers_and_leaves_manifests_in_the_clients_format(example):
    from otapub.signing import generate_key

    example.firmware("fw_2.0.0.bin", size=6000)
    example.write("fleet/clients.yaml", CLIENTS_YAML)
    example.set_config(base_url=BASE_URL)
    example.env["OTA_SERVER_SIGNING_KEY"] = generate_key()[0]
    assert example.cli("build").exit_code == 0
    t = token("AABBCC000022")
    answer = json.loads((example.site / f"d/{t}/AABBCC000022.json").read_bytes())
    assert "signature" in answer and answer["clients"] == ["esp32fota"]
    manifest = json.loads((example.site / f"d/{t}/AABBCC000022/esp32fota.json").read_bytes())
    assert set(manifest) == {"type", "version", "url", "md5", "sha256", "size", "release", "firmware_version"}
    report = json.loads(example.cli("audit", "--format", "json").output)
    assert not [f for f in report["findings"] if f["check"] == "published" and f["severity"] != "ok"], report


def test_esp8266_release_served_to_esp8266httpupdate(repo):
    """A real ESP8266 image (esptool's test image) as a `chip: esp8266` release, sent to ESP8266httpUpdate."""
    from tests.conftest import FIXTURES

    data = (FIXTURES / "esp8266_deepsleep.bin").read_bytes()
    repo.firmware("deepsleep.bin", data)
    repo.firmware("esp32.bin", version="1.0.0")
    repo.write("fleet/fleet.yaml", """\
        releases:
          sleep: {version: "1.1.0", file: firmware/deepsleep.bin, chip: esp8266, version_source: declared}
        devices:
          "AA:BB:CC:00:00:40": {client: httpupdate, chip: esp8266, release: sleep}
        """)
    assert repo.cli("build").exit_code == 0
    server = Served(repo)
    try:
        status, headers, body = exchange(server, esp8266_update(server, "AA:BB:CC:00:00:40", "1.0.0",
                                                                basic=f"u:{token('AABBCC000040')}"))
        assert_httpupdate_installs(status, headers, body, 1000000, data)
    finally:
        server.stop()
    # the image's kind is checked, and an ESP8266 image carries no version to check
    for release, message in [
        ("{version: '1.1.0', file: firmware/deepsleep.bin, chip: esp8266}", "has no app descriptor"),
        ("{version: '1.0.0', file: firmware/esp32.bin, chip: esp8266, version_source: declared}",
         "firmware/esp32.bin is not an ESP8266 image"),
        ("{version: '1.1.0', file: firmware/deepsleep.bin, version_source: declared}",
         "is not an ESP32 application image: ESP8266 image"),
    ]:
        repo.write("fleet/fleet.yaml", f"releases:\n  sleep: {release}\n")
        result = repo.cli("check")
        assert result.exit_code != 0 and message in result.output, result.output
