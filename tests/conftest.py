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
