"""`otapub serve` under both production servers; the shim's query parsing matches parse_qs."""

import json
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otapub.build import build_site
from otapub.shim import _REQUIRED, _fields
from otapub.tokens import djb2_5381
from tests.conftest import SECRET, Served, run_threads


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_both_servers_answer_the_protocol_and_log_every_check(example, server):
    example.set_config(checkin_log="state/checkins.jsonl")
    build_site(example.config())
    served = Served(example, workers=2, server=server)
    try:
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
