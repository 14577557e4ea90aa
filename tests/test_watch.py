"""`otapub watch`: live rebuilds served through the shim, last good site kept on errors."""

import threading
import time

import pytest

from otapub.tokens import djb2_5381
from otapub.watch import Watcher
from tests.conftest import SECRET

EEFF = djb2_5381("AABBCCDDEEFF", SECRET)


def check(url: str, version: str = "1.0") -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{url}/api/firmware?device_id=x&hardware=FireBeetle+2+ESP32-C6&version={version}&mac=AA:BB:CC:DD:EE:FF",
        headers={"X-Device-Auth": EEFF})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture(params=[False, True], ids=["events", "poll"])
def watching(example, monkeypatch, request):
    monkeypatch.setenv("OTA_SERVER_SHARED_SECRET_KEY", SECRET)
    lines: list[str] = []
    watcher = Watcher(str(example.config_file), "127.0.0.1", 0, poll=request.param, echo=lines.append)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    wait_for(lambda: any(line.startswith("serving") for line in lines))
    yield example, watcher, lines
    watcher.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_edit_is_served_after_rebuild_and_errors_keep_last_good_site(watching):
    repo, watcher, lines = watching
    assert check(watcher.url)["firmware_version"] == "1.3.8"
    devices = repo.root / "fleet/devices.yaml"
    good = devices.read_text()
    # a broken edit: the error is printed and the last good site stays up
    devices.write_text(good.replace("release: panic-1.3.8", "release: panic-9"))
    wait_for(lambda: any("rebuild failed" in line for line in lines))
    failure = next(line for line in lines if "rebuild failed" in line)
    assert "fleet/devices.yaml:5:" in failure and "unknown release 'panic-9'" in failure
    assert check(watcher.url)["firmware_version"] == "1.3.8"
    # the next good edit recovers
    repo.write("fleet/releases.yaml", (repo.root / "fleet/releases.yaml").read_text()
               .replace("hardware: [\"FireBeetle 2 ESP32-C6\"]", ""))
    devices.write_text(good.replace("release: panic-1.3.8", "release: panic-1.3.7"))
    wait_for(lambda: check(watcher.url).get("firmware_version") == "1.3.7")
    rebuilt = wait_for(lambda: [line for line in lines if line.startswith("rebuilt (") and "changed" in line])
    assert "fleet/devices.yaml" in rebuilt[-1] and "written" in rebuilt[-1]
