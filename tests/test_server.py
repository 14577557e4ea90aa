"""`otapub serve` under both production servers; the shim's query parsing matches parse_qs."""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otapub.build import build_site
from otapub.server import FOLDER_NAME, check_listen
from otapub.shim import _REQUIRED, _fields
from otapub.tokens import djb2_5381
from tests.conftest import SECRET, Served, process_group, run_threads


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_both_servers_answer_the_protocol_and_log_every_check(example, server):
    example.set_config(checkin_log="state/checkins.jsonl", checkin_fold_seconds=0)  # 0: the log only
    build_site(example.config())
    served = Served(example, workers=2, server=server)
    try:
        assert _folders(served) == []
        query = ("/api/firmware?device_id=PanicAlarm_EEFF&hardware=FireBeetle+2+ESP32-C6&version=1.3.7"
                 "&mac=AA:BB:CC:DD:EE:FF")
        headers = {"X-Device-Auth": djb2_5381("AABBCCDDEEFF", SECRET)}
        status, body = served.json(query, headers)
        assert status == 200 and body["update_available"] is True
        url = body["firmware_url"]
        assert url.startswith(served.base + "/f/")
        status, response_headers, data = served.request(url.removeprefix(served.base))
        assert status == 200 and len(data) == body["size"] == int(response_headers["content-length"])

        def burst(_thread: int) -> None:
            for _ in range(25):
                assert served.request(query, headers)[0] == 200

        run_threads(burst, 4)
        lines = (example.root / "state/checkins.jsonl").read_text().splitlines()
        assert len(lines) == 101 and all(json.loads(line)["status"] == 200 for line in lines)
        assert not (example.root / "state/checkins.sqlite").exists()
    finally:
        served.stop()


_QUERY = "/api/firmware?device_id=PanicAlarm_EEFF&hardware=FireBeetle+2+ESP32-C6&version={}&mac={}"


def _folders(served: Served) -> list[str]:
    """The server's folding processes (otapub.server names them), as process_group lists them."""
    found = []
    for member in process_group(served.proc.pid):
        with contextlib.suppress(OSError):  # ended meanwhile
            if Path(f"/proc/{member.split()[0]}/comm").read_bytes().strip() == FOLDER_NAME:
                found.append(member)
    return found


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_serve_folds_the_checkin_log_into_the_store_as_it_serves(example, server):
    """Check-ins reach the store while the server runs, with no reader (`status`...) folding them: one
    folding process does, and it ends with the server."""
    example.set_config(checkin_fold_seconds=1)
    build_site(example.config())
    served = Served(example, workers=1, server=server)
    store = example.root / "state/checkins.sqlite"

    def devices() -> dict:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
                return {row[0]: row[1:] for row in db.execute("SELECT mac, checks, auth_failures, last_version "
                                                              "FROM devices")}
        except sqlite3.OperationalError:  # not made yet
            return {}

    try:
        assert len(_folders(served)) == 1
        token = {"X-Device-Auth": djb2_5381("AABBCCDDEEFF", SECRET)}
        for version in ("1.3.6", "1.3.7"):
            assert served.request(_QUERY.format(version, "AA:BB:CC:DD:EE:FF"), token)[0] == 200
        assert served.request(_QUERY.format("1.0.0", "11:22:33:44:55:66"), token)[0] == 401  # another's token
        _until(lambda: devices() == {"AA:BB:CC:DD:EE:FF": (2, 0, "1.3.7"), "11:22:33:44:55:66": (1, 1, None)},
               f"the check-ins were not folded: {devices()}", served)
    finally:
        served.stop()
    assert process_group(served.proc.pid) == [], served.log.read_text()


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_sighup_reloads_the_workers_and_leaves_the_folding_process_folding(example, server):
    """The SIGHUP that logrotate sends reloads the workers; the folding process neither reloads nor ends."""
    example.set_config(checkin_fold_seconds=1)
    build_site(example.config())
    served = Served(example, workers=1, server=server)
    store = example.root / "state/checkins.sqlite"
    token = {"X-Device-Auth": djb2_5381("AABBCCDDEEFF", SECRET)}

    def checks() -> int:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
                return sum(n for (n,) in db.execute("SELECT checks FROM devices"))
        except sqlite3.OperationalError:  # not made yet
            return 0

    try:
        [folder] = _folders(served)
        workers = {m for m in process_group(served.proc.pid) if m != folder and m.split()[0] != str(served.proc.pid)}
        served.proc.send_signal(signal.SIGHUP)
        _until(lambda: not workers & set(process_group(served.proc.pid)), "the workers were not reloaded", served)
        assert _folders(served) == [folder]
        _until(lambda: served.request(_QUERY.format("1.3.7", "AA:BB:CC:DD:EE:FF"), token)[0] == 200,
               "the reloaded workers do not answer", served)
        _until(lambda: checks() >= 1, "nothing was folded after the reload", served)
        assert _folders(served) == [folder]
    finally:
        served.stop()


def _admin_served(example, server: str, wait: bool) -> Served:
    example.env["OTA_SERVER_ADMIN_API_KEY"] = "admin-key-for-tests-5b0e"  # noqa: S105 (the admin API is loaded too)
    build_site(example.config())
    return Served(example, workers=2, server=server, wait=wait)


def _until(done, what: str, served: Served) -> None:
    deadline = time.monotonic() + 30  # a bound on a hang, not a measurement
    while not done():
        assert time.monotonic() < deadline, f"{what}: {process_group(served.proc.pid)}\n{served.log.read_text()}"
        time.sleep(0.02)


def test_a_gunicorn_worker_ending_leaves_the_folding_process_alone(example):
    """gunicorn forks its workers deep inside `otapub serve`, so a worker that ends unwinds through serve's
    own way out: only the server's main process may stop the folding process there."""
    served = Served(example, workers=1, server="gunicorn")
    try:
        [folder] = _folders(served)

        def others() -> list[str]:  # the workers
            return [m for m in process_group(served.proc.pid) if m != folder and m.split()[0] != str(served.proc.pid)]

        [worker] = others()
        os.kill(int(worker.split()[0]), signal.SIGTERM)  # ends it gracefully; gunicorn starts another
        _until(lambda: others() not in ([], [worker]), "no new worker was started", served)
        assert _folders(served) == [folder]
    finally:
        served.stop()


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("moment", ["starting", "serving"])
def test_a_signal_stops_the_server_and_every_worker(example, server, signum, moment):
    """SIGTERM/SIGINT ends `otapub serve` completely and frees its port, also while workers still load the app."""
    served = _admin_served(example, server, wait=moment == "serving")
    try:
        if moment == "starting":  # both workers forked, loading the app (granian used to lose the signal)
            _until(lambda: len(process_group(served.proc.pid)) >= 4, "the workers were not started", served)  # + folder
        else:
            assert served.request("/admin/devices")[0] == 401  # the admin API is up in a worker
        os.kill(served.proc.pid, signum)
        _until(lambda: served.proc.poll() is not None, "the server did not stop", served)
        assert process_group(served.proc.pid) == [], served.log.read_text()
        check_listen("127.0.0.1", served.port)  # raises while anything still listens there
    finally:
        served.stop()


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_workers_die_with_their_main_process(example, server):
    """A server whose main process is killed outright leaves no worker serving and holding the port, and
    no folding process."""
    served = _admin_served(example, server, wait=True)
    try:
        _until(lambda: len(process_group(served.proc.pid)) >= 4, "the workers were not started", served)
        assert len(_folders(served)) == 1  # the check-in folding process dies with it too
        served.proc.kill()
        served.proc.wait()
        _until(lambda: process_group(served.proc.pid) == [], "workers outlived their main process", served)
        check_listen("127.0.0.1", served.port)
    finally:
        served.stop()


_PIECES = st.sampled_from(["mac", "version", "hardware", "device_id", "ma%63", "x", "=", "&", "+", "%", "%2B",
                           "%26", "%3D", "%ff", "%e2%82%ac", "AA:BB", "1.2", "a b", ";", ""])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_field_parsing_matches_parse_qs(query):
    from urllib.parse import parse_qs

    try:
        params = parse_qs(query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        params = {}
    expected = {name: (params.get(name) or [""])[0][:128] for name in _REQUIRED}
    assert _fields(query) == expected


@pytest.mark.parametrize("args", [["serve"], ["serve", "--server", "gunicorn"], ["watch"]])
def test_a_port_in_use_is_one_clean_error(example, args):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a subprocess with a deadline: should the check ever go, the server must not hang the suite
        done = subprocess.run([sys.executable, "-m", "otapub", "--config", str(example.config_file), *args,
                               "--host", "127.0.0.1", "--port", str(port)], env={**os.environ, **example.env},
                              capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_port_out_of_range_is_refused_by_the_cli(example):
    result = example.cli("serve", "--port", "99999")
    assert result.exit_code == 2 and "99999 is not in the range 1<=x<=65535" in result.output
