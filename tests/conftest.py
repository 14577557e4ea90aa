"""Shared fixtures: real fleet repositories in tmp_path, built and served for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from otapub.cli import main
from otapub.config import load_config
from otapub.firmware import digest_bytes
from otapub.imagegen import make_app_image

SECRET = "s3cret-for-tests-only-9f2c"
ROOT = Path(__file__).resolve().parents[1]  # the checkout
FIXTURES = ROOT / "tests" / "fixtures" / "esp32"


def esp32_image(name: str) -> Path:
    """A real ESP32 image of tests/fixtures/esp32 (a missing one fails the test, never skips it)."""
    path = FIXTURES / name
    assert path.is_file(), f"fixture {path} is missing (tests/fixtures/esp32/README.md)"
    return path


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

    def firmware(self, name: str, data: bytes | None = None, size: int = 2048, *, version: str | None = None,
                 chip: str = "esp32c6", seed: int | None = None, **image):
        """Write firmware/<name>; without ``data``, a valid app image (otapub.imagegen).

        Its descriptor version is ``version``, else the dotted number in the name (panic_1.3.7.bin),
        else 1.0.0; ``seed`` (default: from the name) varies the bytes; ``image`` goes to make_app_image.
        """
        if data is None:
            found = re.search(r"\d+(?:\.\d+)+", name)
            data = make_app_image(chip=chip, version=version or (found.group() if found else "1.0.0"),
                                  project_name="panic", size=size,
                                  seed=zlib.crc32(name.encode()) if seed is None else seed, **image)
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

    def git(self, *args: str) -> str:
        """Run git in the repository (a fixed identity, no user config); its output."""
        return git(self.root, *args)

    def answer(self, mac: str) -> dict:
        """The built answer of a device on the default token scheme (djb2-5381), read at its token path."""
        from otapub.tokens import djb2_5381

        mac12 = mac.replace(":", "")
        return json.loads((self.site / "d" / djb2_5381(mac12, SECRET) / f"{mac12}.json").read_bytes())

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        """Every file below site/ with its bytes and mtime."""
        result = {}
        for dirpath, _dirs, files in os.walk(self.site):
            for name in files:
                path = Path(dirpath) / name
                result[str(path.relative_to(self.site))] = (path.read_bytes(), path.stat().st_mtime_ns)
        return result


def git(where: Repo | Path, *args: str) -> str:
    """Run real git in a repository (a Repo or a folder) with a fixed identity; its standard output."""
    root = where if isinstance(where, Path) else where.root  # not isinstance(Repo): conftest loads twice
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def problems(repo: Repo, now: datetime | None = None) -> list[str]:
    """Every validation problem of repo's fleet (checking must fail), as the user reads them."""
    from otapub.errors import ValidationError
    from otapub.render import plan_site

    with pytest.raises(ValidationError) as err:
        plan_site(repo.config(), now=now)
    return [str(p) for p in err.value.problems]


def one(repo: Repo, needle: str, now: datetime | None = None) -> str:
    """The first problem that mentions needle."""
    found = [p for p in problems(repo, now) if needle in p]
    assert found, f"{needle!r} not in {problems(repo, now)}"
    return found[0]


def run_threads(target: Callable[[int], object], count: int) -> None:
    """target(0) ... target(count - 1), each in its own thread, all at once; returns when all are done.

    The first exception a thread raised (a failed assertion) is raised here: in a bare thread it
    would only be printed, and the test would pass.
    """
    import threading

    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # re-raised in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def gcc() -> str:
    """gcc, for the device-side C; a machine without it fails these tests (.ci/run installs it)."""
    import shutil

    found = shutil.which("gcc")
    if found is None:
        pytest.fail("gcc is not installed: bash .ci/run installs it (apt-get install gcc)")
    return found


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
    """`otapub serve` running for real (granian by default, or gunicorn) on a loopback port.

    The server runs in its own session (process group), so stop() can take down whatever of it
    is left, workers included, however the test ended; a test that never calls stop() has its
    servers stopped when it ends (_stop_servers_left_running).
    """

    running: set[Served] = set()

    def __init__(self, repo: Repo, workers: int = 2, env: dict | None = None, server: str = "granian",
                 wait: bool = True):
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
             "--port", str(self.port), "--workers", str(workers), "--server", server],
            env=environ, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        Served.running.add(self)
        deadline = time.monotonic() + 20
        while wait:
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

    def checkins(self) -> list[dict]:
        """Every check-in so far, oldest first (the repo's check-in log)."""
        path = self.repo.root / (self.repo.settings.get("checkin_log") or "state/checkins.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, as an operator stops a server; whatever of it still runs after timeout is killed."""
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.proc.pid)
        self.proc.wait()
        Served.running.discard(self)


def process_group(pgid: int) -> list[str]:
    """The processes of a process group that still run a thread (so may hold files and sockets),
    as "pid command"; a process whose threads all ended (a zombie) has let go of everything."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            if not stat or int(stat.rpartition(")")[2].split()[2]) != pgid:  # after "pid (comm)": state ppid pgrp
                continue
            states = [(task / "stat").read_text().rpartition(")")[2].split()[0] for task in (entry / "task").iterdir()]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if any(state not in "ZX" for state in states):
            members.append(f"{entry.name} {command.strip()}")
    return members


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a process group that still has one."""
    import signal

    if process_group(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def _stop_servers_left_running():
    yield
    for served in list(Served.running):
        served.stop()


EDGE = ROOT / "edge" / "cloudflare"


def edge_missing() -> str | None:
    """Why the Worker cannot be run here (None when it can): node and the pinned npm packages.

    The tests fail with this reason: a missing tool never skips a test (.ci/run installs them).
    """
    import shutil

    if shutil.which("node") is None:
        return "node is not installed (the Worker shim runs under Miniflare, an npm package): bash .ci/run installs it"
    if not (EDGE / "node_modules" / "miniflare").is_dir():
        return "edge/cloudflare's npm packages are not installed: run `bash edge/cloudflare/ci.sh install`"
    return None


def load_script(path: Path) -> ModuleType:
    """A Python file of the checkout that is not a package module (scripts/, edge/), imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"otapub_test_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class WorkerServed(Served):
    """The Cloudflare Worker shim under Miniflare (workerd) on a loopback port, serving repo.site.

    mode "assets": the site staged as static assets; "r2": the site published into an R2 bucket.
    The Worker's log (check-in lines included) is captured in repo.root/<mode>.log.
    """

    def __init__(self, repo: Repo, mode: str, base_url: str | None = None):  # starts its own process
        import subprocess
        import time

        self.repo = repo
        self.mode = mode
        self.log = repo.root / f"worker-{mode}.log"
        extra = ["--base-url", base_url] if base_url else []
        for attempt in range(3):  # a port taken between free_port() and workerd's bind: try another
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                ["node", str(EDGE / "serve.mjs"), mode, str(repo.site), str(self.port), *extra],
                cwd=EDGE, stdin=subprocess.PIPE, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                start_new_session=True)
            Served.running.add(self)
            deadline = time.monotonic() + 60
            while b"otapub-edge ready" not in self.log.read_bytes():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    text = self.log.read_text(errors="replace")
                    if "ERR_ADDRESS_IN_USE" in text and attempt < 2:
                        break
                    raise RuntimeError(f"worker shim ({mode}) did not start:\n{text}")
                time.sleep(0.05)
            else:
                return

    def publish(self) -> str:
        """r2 mode: publish repo.site into the running bucket again (what a deploy does); its summary."""
        import time

        done = self.log.read_bytes().count(b"otapub-edge published")
        self.proc.stdin.write(b"publish\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + 60
        while (text := self.log.read_bytes()).count(b"otapub-edge published") == done:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("publish did not finish:\n" + text.decode(errors="replace")[-3000:])
            time.sleep(0.02)
        return text.decode(errors="replace").rsplit("otapub-edge published", 1)[1].splitlines()[0].strip()

    def checkins(self) -> list[dict]:
        """Check-ins parsed from the Worker's structured log lines (edge/cloudflare/checkins.py).

        Workers log asynchronously: a marker request is sent and waited for first, so every
        request answered before this call is in the list.
        """
        import time
        import uuid

        marker = f"otapub-sync-{uuid.uuid4().hex}"
        self.request(f"/api/firmware?device_id={marker}")
        parse = load_script(EDGE / "checkins.py").parse_lines
        deadline = time.monotonic() + 10
        while True:
            entries = list(parse(self.log.read_text(errors="replace").splitlines()))
            if any(e.get("device_id") == marker for e in entries) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return [e for e in entries if not str(e.get("device_id") or "").startswith("otapub-sync-")]
