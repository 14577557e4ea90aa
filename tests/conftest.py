"""Shared fixtures: real fleet repositories in tmp_path, built and served for real."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from otapub.cli import main
from otapub.config import load_config
from otapub.firmware import digest_bytes

SECRET = "s3cret-for-tests-only-9f2c"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "esp32"


class Repo:
    """A fleet repository on disk: config.json, fleet/, firmware/."""

    def __init__(self, root: Path):
        self.root = root
        self.site = root / "site"
        self.config_file = root / "config.json"
        root.mkdir(parents=True, exist_ok=True)
        self.settings: dict = {}
        self.env = {"OTA_SERVER_SHARED_SECRET_KEY": SECRET}
        self.set_config()

    def set_config(self, **settings) -> None:
        self.settings.update(settings)
        self.config_file.write_text(json.dumps(self.settings, indent=2))

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def firmware(self, name: str, data: bytes | None = None, size: int = 2048):
        data = data if data is not None else (name.encode() * (size // len(name) + 1))[:size]
        path = self.root / "firmware" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return digest_bytes(data)

    def config(self, **env):
        environ = {**self.env, **env}
        return load_config(self.config_file, environ=environ)

    def cli(self, *args: str, env: dict | None = None):
        runner = CliRunner()
        return runner.invoke(main, ["--config", str(self.config_file), *args],
                             env={**self.env, **(env or {})}, catch_exceptions=False)

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Every file below site/ with its bytes and mtime."""
        result = {}
        for dirpath, _dirs, files in os.walk(self.site):
            for name in files:
                path = Path(dirpath) / name
                result[str(path.relative_to(self.site))] = (path.read_bytes(), path.stat().st_mtime_ns)
        return result


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTA_SERVER_") or name == "OTAPUB_CONFIG":
            monkeypatch.delenv(name)


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path / "repo")


@pytest.fixture
def example(repo) -> Repo:
    return populate_example(repo)


def populate_example(repo: Repo) -> Repo:
    """A small valid fleet: two releases, three devices."""
    repo.firmware("panic_1.3.7.bin", size=3000)
    repo.firmware("panic_1.3.8.bin", size=4000)
    repo.write("fleet/releases.yaml", """\
        releases:
          panic-1.3.7:
            version: "1.3.7"
            file: firmware/panic_1.3.7.bin
          panic-1.3.8:
            version: "1.3.8"
            file: firmware/panic_1.3.8.bin
            hardware: ["FireBeetle 2 ESP32-C6"]
        """)
    repo.write("fleet/devices.yaml", """\
        devices:
          "AA:BB:CC:DD:EE:FF":
            device_id: PanicAlarm_EEFF
            hardware: FireBeetle 2 ESP32-C6
            release: panic-1.3.8
          "11:22:33:44:55:66":
            device_id: PanicAlarm_5566
            target_version: "1.3.7"
            token_scheme: djb2-0
          aa-bb-cc-00-00-01:
            device_id: spare
        """)
    return repo


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """`otapub serve` running for real (gunicorn) on a loopback port."""

    def __init__(self, repo: Repo, workers: int = 2, env: dict | None = None):
        import subprocess
        import sys
        import time
        import urllib.request

        self.repo = repo
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OTA_SERVER_")}
        environ.update(repo.env, **(env or {}))
        self.log = repo.root / "serve.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otapub", "--config", str(repo.config_file), "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers)],
            env=environ, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.base + "/status", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("shim did not start:\n" + self.log.read_text()) from None
                time.sleep(0.05)

    def request(self, path: str, headers: dict | None = None, method: str = "GET"):
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()

    def json(self, path: str, headers: dict | None = None):
        status, _headers, body = self.request(path, headers)
        return status, json.loads(body)

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
