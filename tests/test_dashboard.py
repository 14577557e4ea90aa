"""The fleet dashboard: static export, the admin-only page of `otapub serve`, and a real browser.

The browser test starts `otapub serve`, loads /admin/dashboard in Debian's headless Chromium
(with the admin key as the HTTP Basic password, as a person's browser would send it), asserts on
the DOM after the page's script ran, and keeps a screenshot in test-artifacts/ (CI uploads it).
"""

import base64
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import Served, free_port  # noqa: F401 (free_port: the server's port helper)

from otapub.checkins import CheckinLog

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "otapub" / "dashboard_assets"
ARTIFACTS = ROOT / "test-artifacts"
ADMIN_KEY = "dash-admin-key-7c1e"  # noqa: S105 (a test key)
CHROMIUM = os.environ.get("OTAPUB_CHROMIUM") or "/usr/bin/chromium"  # Debian's; CI on GitHub: Chrome
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--font-render-hinting=none"]


def with_checkins(repo):
    """The example fleet with a rollout, a few days of check-ins, a stranger and auth failures."""
    repo.write("fleet/rollouts.yaml", """\
        rollouts:
          panic-1.3.7:
            release: panic-1.3.7
            to: all
            halt_if: {failed_percent: 50, min_devices: 1}
            advance_after: {updated_percent: 90}
            stages:
              - {percent: 100}
        """)
    log = CheckinLog(repo.root / "state/checkins.jsonl")
    for day in range(1, 6):
        new = "1.3.0" if day < 3 else "1.3.7"
        for mac, version, target in (("AA:BB:CC:DD:EE:FF", "1.3.8", "1.3.8"), ("AA:BB:CC:00:00:01", new, "1.3.7"),
                                     ("11:22:33:44:55:66", "2.0.0", "1.3.7")):
            log.append({"time": f"2026-11-0{day}T08:00:00.000000Z", "mac": mac, "version": version,
                        "target": target, "decision": "update_offered" if version == "1.3.0" else "up_to_date",
                        "status": 200, "client": "192.0.2.4", "device_id": "<b>x</b>"})
    log.append({"time": "2026-11-05T09:00:00.000000Z", "mac": "DE:AD:BE:EF:00:01", "version": "9.9.9",
                "decision": "auth_failed", "status": 401, "client": "198.51.100.7"})
    log.append({"time": "2026-11-05T09:01:00.000000Z", "mac": "<img src=x onerror=alert(1)>", "decision": "bad_request",
                "status": 400, "client": "198.51.100.8"})
    log.append({"time": "2026-11-05T09:02:00.000000Z", "mac": "<img src=x onerror=alert(1)>",
                "decision": "auth_failed", "status": 401, "client": "198.51.100.8"})
    return repo


def test_vendored_uplot_is_the_recorded_release():
    notes = (ASSETS / "VENDORED.md").read_text()
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in notes
    assert "1.6.32" in notes and "MIT" in (ASSETS / "uPlot.LICENSE").read_text()


def test_export_is_one_offline_page_outside_the_site(example, tmp_path):
    with_checkins(example)
    out = tmp_path / "artifact"
    result = example.cli("dashboard", "--out", str(out), "--now", "2026-11-06T00:00:00Z")
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing is fetched
    assert "uPlot" in page and '"AA:BB:CC:DD:EE:FF"' in page and "<img" not in page  # data is JSON, escaped
    inside = example.cli("dashboard", "--out", str(example.site / "dash"))
    assert inside.exit_code != 0 and "inside the public site" in inside.output
    assert not (example.site / "dash").exists()
    (tmp_path / "taken" / "index.html").mkdir(parents=True)
    taken = example.cli("dashboard", "--out", str(tmp_path / "taken"))
    assert taken.exit_code == 1 and "index.html: cannot write the dashboard: Is a directory" in taken.output


def test_served_page_needs_the_admin_key(example):
    with_checkins(example)
    example.set_config(admin_api_key=ADMIN_KEY)
    assert example.cli("build").exit_code == 0
    served = Served(example)
    try:
        status, headers, body = served.request("/admin/dashboard")
        assert status == 401 and headers["www-authenticate"].startswith("Basic") and b"uPlot" not in body
        wrong = base64.b64encode(b"admin:nope").decode()
        assert served.request("/admin/dashboard", {"Authorization": f"Basic {wrong}"})[0] == 401
        assert served.request("/admin/dashboard", {"Authorization": "Basic !!!"})[0] == 401
        status, headers, body = served.request("/admin/dashboard", {"X-Admin-API-Key": ADMIN_KEY})
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in headers["content-security-policy"] and headers["cache-control"] == "no-store"
        assert b"DE:AD:BE:EF:00:01" in body
        assert served.request("/admin/dashboard", {"X-Admin-API-Key": ADMIN_KEY}, method="POST")[0] == 405
    finally:
        served.stop()


def test_an_unusable_store_is_a_clean_error_for_the_page_and_the_api(example, tmp_path):
    with_checkins(example)
    example.set_config(admin_api_key=ADMIN_KEY)
    assert example.cli("build").exit_code == 0
    (example.root / "state/checkins.sqlite").write_bytes(b"not sqlite at all" * 300)
    out = tmp_path / "artifact"
    result = example.cli("dashboard", "--out", str(out))
    assert result.exit_code != 0 and "not a usable check-in store" in result.output and not out.exists()
    served = Served(example)
    try:
        for path in ("/admin/dashboard", "/admin/devices", "/admin/devices/AA:BB:CC:DD:EE:FF"):
            status, _, body = served.request(path, {"X-Admin-API-Key": ADMIN_KEY})
            assert status == 503 and b"not a usable check-in store" in body, (path, status, body)
    finally:
        served.stop()


def test_dashboard_in_headless_chromium(example, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    with_checkins(example)
    example.set_config(admin_api_key=ADMIN_KEY)
    assert example.cli("build").exit_code == 0
    served = Served(example)
    profile = tmp_path / "chromium-profile"
    url = f"http://admin:{ADMIN_KEY}@127.0.0.1:{served.port}/admin/dashboard"
    try:
        dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                        "--window-size=1280,1600", f"--screenshot={shot}", url],
                       capture_output=True, timeout=120, check=False)
    finally:
        served.stop()
    html = dom.stdout
    assert 'data-ready="1"' in html, dom.stderr[-2000:]
    rows = re.search(r'<table id="devices-table">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    assert rows.count("<tr>") == 5 and "AA:BB:CC:DD:EE:FF" in rows and "DE:AD:BE:EF:00:01" in rows
    assert "&lt;img src=x onerror=alert(1)&gt;" in rows and "<img" not in html  # what a device sent is text
    assert re.search(r'id="versions-chart".*?<canvas', html, re.S)  # uPlot drew the chart
    assert 'data-rollout="panic-1.3.7"' in html and '<div class="halt">' not in html
    unknown = re.search(r'<table id="unknown-table">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    assert "<td>2.0.0</td><td>1</td>" in unknown
    assert "page 1 of 1 (5 devices)" in html
    auth = re.search(r'<table id="auth-table">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    assert "DE:AD:BE:EF:00:01" in auth and "198.51.100.7" in auth
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000


