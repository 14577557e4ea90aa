"""The seed's admin REST API over real HTTP: every route, every error, writes that reach the site."""

import http.client
import json
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from otapub.admin import MAX_BODY, AdminApp
from otapub.build import build_site
from otapub.errors import OtapubError
from otapub.firmware import digest_file
from otapub.server import make_app
from otapub.tokens import djb2_5381
from tests.conftest import SECRET, Served, git, run_threads

KEY = "admin-key-for-tests-7d1e"
NEW = "02:00:00:00:00:01"


class _Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class Api:
    """A WSGI app on 127.0.0.1 (port 0), driven over real HTTP."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, server_class=_Threaded, handler_class=_Quiet)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def call(self, method: str, path: str, body=None, key: str | None = KEY, raw: bytes | None = None,
             headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            sent = dict(headers or {})
            if key is not None:
                sent["X-Admin-API-Key"] = key
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            if data is not None:
                sent["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
        finally:
            conn.close()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def admin(example):
    """The shim (which mounts the admin API) for the example fleet, with an admin key."""
    example.env["OTA_SERVER_ADMIN_API_KEY"] = KEY
    example.set_config(checkin_log="state/checkins.jsonl")
    build_site(example.config())
    api = Api(make_app(example.config()))
    api.repo = example
    yield api
    api.stop()


def seed_payload(repo, **changes):
    fw = digest_file(repo.root / "firmware/panic_1.3.7.bin")
    body = {"mac_address": NEW, "device_id": "panic_button_01", "hardware_version": "FireBeetle 2 ESP32-C6",
            "target_version": "1.3.7", "firmware_url": "http://example.com/firmware/panic_1.3.7.bin",
            "checksum": fw.md5}
    body.update(changes)
    return body


def device_check(api, mac12: str, version: str = "1.0.0"):
    mac = ":".join(mac12[i:i + 2] for i in range(0, 12, 2))
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("GET", f"/api/firmware?device_id=x&hardware=FireBeetle+2+ESP32-C6&version={version}&mac={mac}",
                 headers={"X-Device-Auth": djb2_5381(mac12, SECRET)})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def fleet_bytes(repo) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in (repo.root / "fleet").rglob("*") if p.is_file()}


# -- authentication ------------------------------------------------------------------------
def test_without_an_admin_key_the_routes_do_not_exist(example):
    for app in (make_app(example.config()), AdminApp(example.config())):
        api = Api(app)
        try:
            for method, path in (("GET", "/admin/devices"), ("DELETE", f"/admin/devices/{NEW}")):
                status, body = api.call(method, path)
                assert status == 404 and "error" in body
        finally:
            api.stop()


@pytest.mark.parametrize("key", [None, "", "wrong", KEY + "x", KEY.upper()])
def test_a_missing_or_wrong_key_is_401(admin, key):
    before = fleet_bytes(admin.repo)
    for method, path, body in (("GET", "/admin/devices", None), ("POST", "/admin/devices", {"mac_address": NEW}),
                               ("DELETE", "/admin/devices/AA:BB:CC:DD:EE:FF", None)):
        status, answer = admin.call(method, path, body, key=key)
        assert status == 401 and "error" in answer
    assert fleet_bytes(admin.repo) == before


# -- reads ---------------------------------------------------------------------------------
def test_list_is_keyed_by_mac_with_the_check_in_log(admin):
    status, _ = device_check(admin, "AABBCCDDEEFF", "1.3.7")
    assert status == 200
    status, body = admin.call("GET", "/admin/devices")
    assert status == 200
    assert set(body) == {"AA:BB:CC:DD:EE:FF", "11:22:33:44:55:66", "AA:BB:CC:00:00:01"}
    eeff = body["AA:BB:CC:DD:EE:FF"]
    fw = digest_file(admin.repo.root / "firmware/panic_1.3.8.bin")
    assert eeff["device_id"] == "PanicAlarm_EEFF" and eeff["hardware_version"] == "FireBeetle 2 ESP32-C6"
    assert eeff["target_version"] == "1.3.8" and eeff["checksum"] == fw.md5
    assert eeff["firmware_url"].endswith(f"/f/{fw.sha256}/panic_1.3.8.bin")
    assert eeff["last_check"] is not None and eeff["last_version"] == "1.3.7"
    assert "last_update" in eeff and body["11:22:33:44:55:66"]["last_check"] is None


@pytest.mark.parametrize("spelling", ["AA:BB:CC:DD:EE:FF", "aa-bb-cc-dd-ee-ff", "aabbccddeeff", "AABB.CCDD.EEFF"])
def test_get_one_in_any_spelling(admin, spelling):
    status, body = admin.call("GET", f"/admin/devices/{spelling}")
    assert status == 200 and body["mac_address"] == "AA:BB:CC:DD:EE:FF" and body["release"] == "panic-1.3.8"


def test_get_unknown_is_404_and_a_bad_mac_400(admin):
    assert admin.call("GET", f"/admin/devices/{NEW}")[0] == 404
    status, body = admin.call("GET", "/admin/devices/not-a-mac")
    assert status == 400 and body["error"] == "Invalid MAC address format"


# -- writes --------------------------------------------------------------------------------
def test_post_a_seed_payload_adds_the_device_and_the_shim_serves_it_at_once(admin):
    assert device_check(admin, "020000000001")[0] == 401  # not a device yet
    status, body = admin.call("POST", "/admin/devices", seed_payload(admin.repo))
    assert status == 201, body
    device = body["device"]
    assert device["mac_address"] == NEW and device["release"] == "panic-1.3.7"
    assert device["target_version"] == "1.3.7" and device["hardware_version"] == "FireBeetle 2 ESP32-C6"
    assert "last_check" in device and device["last_update"] is None  # the 401 above was a check-in
    assert body["site"]["rebuilt"] is True
    assert '"02:00:00:00:00:01":\n    device_id: panic_button_01\n' in \
        (admin.repo.root / "fleet/devices.yaml").read_text()
    status, answer = device_check(admin, "020000000001", "1.3.6")
    assert status == 200 and answer["update_available"] is True and answer["firmware_version"] == "1.3.7"


def test_post_with_a_release_field(admin):
    status, body = admin.call("POST", "/admin/devices", {"mac_address": "020000000002", "release": "panic-1.3.7"})
    assert status == 201 and body["device"]["mac_address"] == "02:00:00:00:00:02"


def test_post_an_existing_device_is_409(admin):
    before = fleet_bytes(admin.repo)
    status, body = admin.call("POST", "/admin/devices", {"mac_address": "aa-bb-cc-dd-ee-ff"})
    assert status == 409 and "error" in body
    assert fleet_bytes(admin.repo) == before


def test_a_checksum_that_is_not_the_releases_md5_is_400(admin):
    before = fleet_bytes(admin.repo)
    wrong = seed_payload(admin.repo, checksum="5f4dcc3b5aa765d61d8327deb882cf99")
    status, body = admin.call("POST", "/admin/devices", wrong)
    assert status == 400 and "MD5" in body["error"]
    assert fleet_bytes(admin.repo) == before


def test_a_change_that_does_not_validate_is_400_with_the_problems(admin):
    before = fleet_bytes(admin.repo)
    status, body = admin.call("PUT", "/admin/devices/11:22:33:44:55:66", {"target_version": "7.7.7"})
    assert status == 400 and "nothing was written" in body["error"]
    assert any("no release has version 7.7.7" in p for p in body["problems"])
    assert fleet_bytes(admin.repo) == before


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b"", "JSON object is required"),
    (b"[" * 5000 + b"]" * 5000, "malformed JSON"),
    (json.dumps({"mac_address": NEW, "device_id": 5}).encode(), "device_id: expected a string"),
    (json.dumps({"mac_address": ["AA"]}).encode(), "mac_address: expected a string"),
    (json.dumps({"mac_address": NEW, "colour": "red"}).encode(), "unknown field"),
    (json.dumps({"mac_address": NEW, "checksum": "abc"}).encode(), "checksum"),
    (json.dumps({"device_id": "no mac"}).encode(), "MAC address is required"),
    (json.dumps({"mac_address": "AA:BB"}).encode(), "Invalid MAC address format"),
    (json.dumps({"mac_address": NEW, "device_id": "x" * (MAX_BODY + 1)}).encode(), "too large"),
    (b"\xff\xfe\x00garbage", "malformed JSON"),
])
def test_bad_bodies_are_400_never_500(admin, raw, message):
    before = fleet_bytes(admin.repo)
    status, body = admin.call("POST", "/admin/devices", raw=raw)
    assert status == 400 and message in body["error"], body
    assert fleet_bytes(admin.repo) == before


def test_put_updates_in_place(admin):
    status, body = admin.call("PUT", "/admin/devices/11-22-33-44-55-66",
                              {"device_id": "renamed", "target_version": "1.3.7", "last_check": None})
    assert status == 200 and body["device"]["device_id"] == "renamed"
    text = (admin.repo.root / "fleet/devices.yaml").read_text()
    assert '"11:22:33:44:55:66":\n    device_id: renamed\n    target_version: "1.3.7"\n' in text


def test_put_back_what_get_returned_changes_nothing(admin):
    before = fleet_bytes(admin.repo)
    _, device = admin.call("GET", "/admin/devices/AA:BB:CC:DD:EE:FF")
    status, body = admin.call("PUT", "/admin/devices/AA:BB:CC:DD:EE:FF", device)
    assert status == 200 and body["changed"] == []
    assert fleet_bytes(admin.repo) == before


def test_put_release_null_unpins_the_device(admin):
    status, body = admin.call("PUT", "/admin/devices/AA:BB:CC:DD:EE:FF", {"release": None})
    assert status == 200 and body["device"]["release"] is None
    assert device_check(admin, "AABBCCDDEEFF")[1] == {"update_available": False}


def test_put_errors(admin):
    assert admin.call("PUT", f"/admin/devices/{NEW}", {"device_id": "x"})[0] == 404
    status, body = admin.call("PUT", "/admin/devices/AA:BB:CC:DD:EE:FF", {"mac_address": NEW})
    assert status == 400 and "differs" in body["error"]
    status, body = admin.call("PUT", "/admin/devices/AA:BB:CC:DD:EE:FF", {"release": "nope"})
    assert status == 400 and "nope" in body["error"]


def test_delete_then_404_and_the_answer_is_gone(admin):
    assert device_check(admin, "AABBCCDDEEFF")[0] == 200
    status, body = admin.call("DELETE", "/admin/devices/aabbccddeeff")
    assert status == 200 and body["mac_address"] == "AA:BB:CC:DD:EE:FF"
    assert "AA:BB:CC:DD:EE:FF" not in (admin.repo.root / "fleet/devices.yaml").read_text()
    assert device_check(admin, "AABBCCDDEEFF")[0] == 401
    assert admin.call("DELETE", "/admin/devices/aabbccddeeff")[0] == 404


def test_wrong_methods_are_405_and_unknown_admin_paths_404(admin):
    assert admin.call("PATCH", "/admin/devices/AA:BB:CC:DD:EE:FF", {})[0] == 405
    assert admin.call("DELETE", "/admin/devices")[0] == 405
    assert admin.call("GET", "/admin/other")[0] == 404


def test_concurrent_posts_lose_nothing(admin):
    results = []

    def post(i):
        results.append(admin.call("POST", "/admin/devices", {"mac_address": f"02:00:00:00:01:{i:02X}",
                                                             "target_version": "1.3.7"})[0])

    run_threads(post, 6)
    assert results == [201] * 6
    _, body = admin.call("GET", "/admin/devices")
    assert {f"02:00:00:00:01:{i:02X}" for i in range(6)} <= set(body)


# -- git ------------------------------------------------------------------------------------
def test_each_change_is_a_git_commit_naming_verb_mac_and_client(admin):
    repo = admin.repo
    git(repo, "init", "-q")
    git(repo, "add", "fleet", "firmware", "config.json")
    git(repo, "commit", "-qm", "initial")
    repo.set_config(admin_git_commit=True)
    git(repo, "commit", "-qam", "enable commits")
    api = Api(make_app(repo.config()))
    try:
        status, body = api.call("POST", "/admin/devices", {"mac_address": NEW, "target_version": "1.3.7"})
        assert status == 201 and body["git"]["committed"] is True, body
        assert git(repo, "log", "-1", "--format=%s").strip() == f"otapub admin: add {NEW} (from 127.0.0.1)"
        assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["fleet/devices.yaml"]
        assert api.call("DELETE", f"/admin/devices/{NEW}")[0] == 200
        assert "delete 02:00:00:00:00:01" in git(repo, "log", "-1", "--format=%s")
        assert git(repo, "status", "--porcelain", "fleet") == ""
    finally:
        api.stop()


# -- secrets --------------------------------------------------------------------------------
def test_placeholder_admin_key_is_refused_unless_debug_mode(example):
    example.env["OTA_SERVER_ADMIN_API_KEY"] = "change-admin-api-key-in-production"
    with pytest.raises(OtapubError, match="placeholder"):
        AdminApp(example.config())
    result = example.cli("serve", "--port", "1")
    assert result.exit_code != 0 and "admin_api_key" in result.output and "placeholder" in result.output
    placeholder = "change-admin-api-key-in-production"
    api = Api(AdminApp(example.config(OTA_SERVER_DEBUG_MODE="true")))  # debug mode: a local experiment
    try:
        assert api.call("GET", "/admin/devices", key=placeholder)[0] == 200
        assert api.call("GET", "/admin/devices", key=KEY)[0] == 401
    finally:
        api.stop()


# -- the production server ------------------------------------------------------------------
def test_admin_api_under_the_production_shim(example):
    example.env["OTA_SERVER_ADMIN_API_KEY"] = KEY
    build_site(example.config())
    served = Served(example, workers=2)
    try:
        api = Api.__new__(Api)
        api.port = served.port
        status, body = api.call("POST", "/admin/devices", {"mac_address": NEW, "target_version": "1.3.7"})
        assert status == 201, body
        for _ in range(4):  # whichever worker answers, the change is served
            status, answer = device_check(api, "020000000001", "1.3.6")
            assert status == 200 and answer["firmware_version"] == "1.3.7"
    finally:
        served.stop()
