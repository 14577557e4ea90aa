"""The Docker files and helper scripts agree with each other and with otapub's settings.

No Docker engine is needed: docker-compose.yml and the Dockerfile are parsed, the image's
HEALTHCHECK command is run on the host against a small local HTTP server, and start.sh /
manage-devices.sh run in a temporary copy with a fake `docker` that records its arguments.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SERVICES = ("otapub", "watch")
# The settings the brief names; .env.example may hold more, never fewer.
REQUIRED_SETTINGS = {
    "SHARED_SECRET_KEY", "SERVER_PORT", "SERVER_HOST", "DEBUG_MODE", "LOG_LEVEL",
    "FIRMWARE_DIRECTORY", "ADMIN_API_KEY", "FLEET_DIR", "SITE_DIR", "BASE_URL",
    "TOKEN_SCHEME", "CHECKIN_LOG", "ADMIN_GIT_COMMIT",
}  # fmt: skip
SECRET_SETTINGS = ("OTA_SERVER_SHARED_SECRET_KEY", "OTA_SERVER_ADMIN_API_KEY")
SEED_PLACEHOLDERS = {
    "your-device-secret-key", "change-admin-api-key-in-production", "change-this-key-in-production",
}  # fmt: skip


# --- helpers -------------------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    """KEY=VALUE lines of .env.example, in order (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f".env.example:{number}: not KEY=VALUE: {line!r}"
        assert key not in values, f".env.example:{number}: {key} set twice"
        values[key] = value
    return values


def ota_settings() -> dict[str, str]:
    return {k: v for k, v in env_example().items() if k.startswith("OTA_SERVER_")}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), arguments
    return argv


def image_cmd() -> list[str]:
    cmds = [rest for word, rest in final_stage() if word == "CMD"]
    assert cmds, "the final stage of the Dockerfile has no CMD"
    return exec_form(cmds[-1])


def healthcheck_argv() -> list[str]:
    checks = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    assert len(checks) == 1, "the image needs exactly one HEALTHCHECK"
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[0])
    assert match, f"HEALTHCHECK must use the exec form CMD [...]: {checks[0]}"
    return exec_form(match.group(1))


def project_scripts() -> dict[str, str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli, a test dependency there
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"].get("scripts", {})


# --- docker-compose.yml and .env.example ---------------------------------------------------------


def test_env_example_has_every_setting():
    keys = {k.removeprefix("OTA_SERVER_") for k in ota_settings()}
    assert REQUIRED_SETTINGS <= keys, f"missing from .env.example: {sorted(REQUIRED_SETTINGS - keys)}"


@pytest.mark.parametrize("name", SERVICES)
def test_every_env_example_setting_is_passed_to_the_service(name):
    environment = service(name).get("environment")
    assert isinstance(environment, dict), f"service {name}: environment must be a mapping"
    for key in ota_settings():
        assert key in environment, f"service {name} does not pass {key}"
        # The value must come from .env (interpolation of the same name), not be hard-coded.
        assert re.match(r"\$\{" + key + r"(?:[:?\-}])", str(environment[key])), (
            f"service {name}: {key} is {environment[key]!r}, not taken from .env"
        )


@pytest.mark.parametrize("name", SERVICES)
def test_service_passes_no_setting_missing_from_env_example(name):
    # otapub rejects unknown OTA_SERVER_* names, and a setting users cannot see is a trap.
    passed = {k for k in service(name)["environment"] if k.startswith("OTA_SERVER_")}
    assert passed <= set(ota_settings()), sorted(passed - set(ota_settings()))


def test_env_example_is_accepted_by_otapub_config(tmp_path, monkeypatch):
    from otapub.config import load_config

    monkeypatch.chdir(tmp_path)  # no stray config.json
    config = load_config(environ=ota_settings())
    assert config.server_port == 5000
    assert config.debug_mode is False


def test_env_example_secrets_are_marked_placeholders():
    values = env_example()
    for key in SECRET_SETTINGS:
        assert "REPLACE-ME" in values[key], f"{key} must be a REPLACE-ME placeholder"
        assert values[key] not in SEED_PLACEHOLDERS
    assert values["OTA_SERVER_DEBUG_MODE"].lower() == "false"


@pytest.mark.parametrize("key", SECRET_SETTINGS)
def test_compose_refuses_to_run_without_secrets(key):
    # ${VAR:?message}: docker compose stops with the message instead of starting keyless.
    assert re.fullmatch(r"\$\{" + key + r":\?.+\}", service("otapub")["environment"][key])


@pytest.mark.parametrize("name", SERVICES)
def test_paths_point_into_mounted_volumes(name):
    svc = service(name)
    mounts = {}
    for volume in svc["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = mode
    values = env_example()
    writable = {
        "OTA_SERVER_FLEET_DIR", "OTA_SERVER_DEFAULT_DEVICE_FILE", "OTA_SERVER_SITE_DIR",
        "OTA_SERVER_STATE_DIR", "OTA_SERVER_CHECKIN_LOG",
    }  # fmt: skip
    for key in writable | {"OTA_SERVER_FIRMWARE_DIRECTORY"}:
        path = values[key]
        target = next((t for t in mounts if path == t or path.startswith(t + "/")), None)
        assert target, f"{key}={path} is not inside a volume of service {name}"
        if key in writable:
            assert "ro" not in mounts[target], f"{key}={path} must be writable, {target} is read-only"
        # The compose default (when .env lacks the key) must agree with .env.example.
        assert svc["environment"][key] == "${" + key + ":-" + path + "}"


@pytest.mark.parametrize("name", SERVICES)
def test_published_port_is_the_server_port(name):
    ports = service(name)["ports"]
    assert len(ports) == 1
    # HOST:CONTAINER, where either side may be a ${VAR:-default} (which holds a colon itself).
    container = re.search(r":(\$\{[^}]*\}|\d+)$", ports[0])
    assert container and container.group(1) == "${OTA_SERVER_SERVER_PORT:-5000}", ports[0]
    assert env_example()["OTA_SERVER_SERVER_PORT"] == "5000"


def test_watch_is_an_opt_in_profile():
    assert service("watch")["profiles"] == ["watch"]
    assert service("watch")["command"][:2] == ["otapub", "watch"]
    assert "profiles" not in service("otapub")


# --- Dockerfile ----------------------------------------------------------------------------------


def test_cmd_runs_otapub_serve():
    assert image_cmd()[:2] == ["otapub", "serve"]
    # The compose service runs the same command.
    assert service("otapub")["command"][:2] == ["otapub", "serve"]


def test_cmd_program_is_installed_by_the_package():
    assert "otapub" in project_scripts(), "pyproject.toml [project.scripts] does not install `otapub`"
    assert not [word for word, _ in final_stage() if word == "ENTRYPOINT"], "an ENTRYPOINT would wrap CMD"


@pytest.mark.parametrize(
    "argv",
    [["serve"], ["build"], ["watch", "--poll"], ["device", "list"]],
    ids=lambda argv: " ".join(argv),
)
def test_commands_used_by_the_container_files_exist(argv):
    # CMD, docker-compose.yml, start.sh and manage-devices.sh call these subcommands, with these options.
    def otapub(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "otapub", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    listing = otapub("--help")
    assert listing.returncode == 0 and re.search(rf"^\s+{argv[0]}\b", listing.stdout, re.M), listing.stderr
    result = otapub(*argv, "--help")
    assert result.returncode == 0, f"`otapub {' '.join(argv)} --help` failed:\n{result.stderr}"
    for option in (a for a in argv if a.startswith("--")):
        assert option in result.stdout


def test_image_runs_as_non_root_from_a_pinned_base():
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            image = rest.split()[0]
            assert re.fullmatch(r"python:3\.12\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    assert ("EXPOSE", "5000") in stage


def test_no_secret_is_baked_into_the_image():
    for word, rest in dockerfile_instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"SECRET|API_KEY|PASSWORD|TOKEN", rest, re.I), f"{word} {rest}"
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore should allow-list the build context"
    for name in (".env", ".git", "site", "state", "fleet", "firmware"):
        assert not any(p.startswith("!") and fnmatch.fnmatch(name, p[1:].rstrip("/")) for p in patterns), name


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b'{"status": "ok"}')

    def do_GET(self):  # noqa: N802 (http.server's naming)
        code, body = self.answer if self.path == "/status" else (404, b'{"error": "not found"}')
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> int:
    argv = healthcheck_argv()
    assert argv[0] == "python", "the slim image has python, not curl or wget"
    env = {**os.environ, "OTA_SERVER_SERVER_PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize(
    ("code", "body", "healthy"),
    [
        (200, b'{"status": "ok", "site": "abc"}', True),
        (200, b'{"status": "starting"}', False),
        (503, b'{"status": "ok"}', False),
        (200, b"<html>not json</html>", False),
    ],
)
def test_healthcheck_asks_status(status_server, monkeypatch, code, body, healthy):
    monkeypatch.setattr(_StatusHandler, "answer", (code, body))
    rc = run_healthcheck(status_server.server_address[1])
    assert (rc == 0) is healthy


def test_healthcheck_fails_when_nothing_listens(status_server):
    port = status_server.server_address[1]
    status_server.shutdown()
    status_server.server_close()
    assert run_healthcheck(port) != 0


# --- start.sh and manage-devices.sh --------------------------------------------------------------

FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$*" >> "$DOCKER_LOG"
case "$*" in
    "compose ps"*) printf '%s' "$FAKE_PS" ;;
esac
exit 0
"""


@pytest.fixture
def project(tmp_path):
    """A copy of the files the scripts use, and a PATH whose `docker` only records its calls."""
    work = tmp_path / "project"
    work.mkdir()
    for name in ("start.sh", "manage-devices.sh", ".env.example", "docker-compose.yml"):
        shutil.copy2(ROOT / name, work / name)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    docker = fake_bin / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    env = {
        "PATH": f"{fake_bin}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "DOCKER_LOG": str(log),
        "FAKE_PS": "",
    }
    return work, env, log


def run_script(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args], cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
    )


def docker_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def fill_in_env(work: Path) -> None:
    text = (work / ".env").read_text()
    text = re.sub(r"^(OTA_SERVER_SHARED_SECRET_KEY)=.*$", r"\1=s3cret-from-firmware", text, flags=re.M)
    text = re.sub(r"^(OTA_SERVER_ADMIN_API_KEY)=.*$", r"\1=admin-9f8e7d6c5b4a", text, flags=re.M)
    text = re.sub(r"^(OTA_SERVER_BASE_URL)=.*$", r"\1=http://192.168.1.20:5000", text, flags=re.M)
    (work / ".env").write_text(text)


def test_start_without_env_creates_it_and_stops(project):
    work, env, log = project
    result = run_script(work, env, "start.sh")
    assert result.returncode != 0
    assert (work / ".env").is_file()
    # The same settings (only OTA_UID/OTA_GID may be filled in with the caller's ids).
    created = (work / ".env").read_text().splitlines()
    example = (work / ".env.example").read_text().splitlines()
    assert [line.split("=")[0] for line in created] == [line.split("=")[0] for line in example]
    assert stat.S_IMODE((work / ".env").stat().st_mode) == 0o600, ".env holds secrets"
    assert "REPLACE-ME" in result.stderr and ".env" in result.stderr and "start.sh" in result.stderr
    assert docker_calls(log) == [], "start.sh must stop before using docker"
    assert not (work / "site").exists()


def test_start_refuses_placeholders_without_printing_values(project):
    work, env, log = project
    run_script(work, env, "start.sh")
    text = (work / ".env").read_text()
    (work / ".env").write_text(
        re.sub(r"^OTA_SERVER_SHARED_SECRET_KEY=.*$", "OTA_SERVER_SHARED_SECRET_KEY=real-secret-value", text, flags=re.M)
    )
    result = run_script(work, env, "start.sh")
    assert result.returncode != 0
    assert "OTA_SERVER_ADMIN_API_KEY" in result.stderr and "OTA_SERVER_BASE_URL" in result.stderr
    assert "OTA_SERVER_SHARED_SECRET_KEY" not in result.stderr
    assert "real-secret-value" not in result.stderr + result.stdout
    assert docker_calls(log) == []


def test_start_refuses_the_seeds_placeholders(project):
    work, env, log = project
    run_script(work, env, "start.sh")
    fill_in_env(work)
    with open(work / ".env", "a") as fh:
        fh.write("OTA_SERVER_SHARED_SECRET_KEY=your-device-secret-key\n")
    result = run_script(work, env, "start.sh")
    assert result.returncode != 0 and "OTA_SERVER_SHARED_SECRET_KEY" in result.stderr
    assert docker_calls(log) == []


def test_start_builds_the_site_then_starts(project):
    work, env, log = project
    run_script(work, env, "start.sh")
    fill_in_env(work)
    result = run_script(work, env, "start.sh")
    assert result.returncode == 0, result.stderr
    calls = docker_calls(log)
    assert "compose run --rm otapub otapub build" in calls
    assert calls[-1] == "compose up -d otapub"
    assert calls.index("compose build") < calls.index("compose run --rm otapub otapub build")
    for folder in ("fleet", "firmware", "site", "state"):
        assert (work / folder).is_dir()


def test_start_without_docker_says_so(project, tmp_path):
    work, env, log = project
    run_script(work, env, "start.sh")
    fill_in_env(work)
    # Every command of /usr/bin and /bin but docker, so a machine that has docker runs this too.
    no_docker = tmp_path / "no-docker-bin"
    no_docker.mkdir()
    for folder in (Path("/usr/bin"), Path("/bin")):
        for tool in folder.iterdir():
            if tool.name != "docker" and not (no_docker / tool.name).exists():
                (no_docker / tool.name).symlink_to(tool)
    env = {**env, "PATH": str(no_docker)}
    result = run_script(work, env, "start.sh")
    assert result.returncode != 0 and "docker is not installed" in result.stderr


def test_manage_devices_without_arguments_prints_usage(project):
    work, env, log = project
    result = run_script(work, env, "manage-devices.sh")
    assert result.returncode != 0
    assert "Usage:" in result.stderr and "otapub device" in result.stderr
    assert docker_calls(log) == []


def test_manage_devices_forwards_to_otapub_device(project):
    work, env, log = project
    env = {**env, "FAKE_PS": "0123456789ab\n"}
    result = run_script(work, env, "manage-devices.sh", "add", "AA:BB:CC:DD:EE:FF", "--version", "1.2.1")
    assert result.returncode == 0, result.stderr
    assert docker_calls(log)[-1] == "compose exec -T otapub otapub device add AA:BB:CC:DD:EE:FF --version 1.2.1"


def test_manage_devices_needs_the_running_container(project):
    work, env, log = project
    result = run_script(work, env, "manage-devices.sh", "list")
    assert result.returncode != 0 and "not running" in result.stderr and "start.sh" in result.stderr
    assert not any(call.startswith("compose exec") for call in docker_calls(log))


def test_container_command_serves_and_passes_its_healthcheck(tmp_path):
    """The image's CMD and HEALTHCHECK, run directly on the host (no Docker engine here)."""
    import time

    from tests.conftest import SECRET, Repo, free_port, populate_example

    repo = populate_example(Repo(tmp_path / "data"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_SERVER_")}
    env.update(OTA_SERVER_SHARED_SECRET_KEY=SECRET, OTA_SERVER_SERVER_PORT=str(port),
               OTA_SERVER_SERVER_HOST="127.0.0.1", OTA_SERVER_CHECKIN_LOG="state/checkins.jsonl")
    subprocess.run(["otapub", "build"], cwd=repo.root, env=env, check=True, capture_output=True, timeout=60)
    proc = subprocess.Popen(image_cmd(), cwd=repo.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while run_healthcheck(port) != 0:
            assert proc.poll() is None, "the container command exited"
            assert time.monotonic() < deadline, "the healthcheck never passed"
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
