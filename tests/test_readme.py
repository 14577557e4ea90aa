"""Every command in the README works: the quick start and the walk-through run for real."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_port

README = (ROOT / "README.md").read_text()


def copy_repo(tmp_path: Path) -> Path:
    target = tmp_path / "otapub"
    for name in ("fleet", "firmware", "scripts", "templates"):
        shutil.copytree(ROOT / name, target / name)
    return target


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_SERVER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_quick_start_demo_builds_the_example_fleet(tmp_path):
    repo = copy_repo(tmp_path)
    otapub = shutil.which("otapub", path=environment()["PATH"])
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/otapub").symlink_to(otapub)  # set up already: the test runs the rest of the script
    done = subprocess.run(["./scripts/demo"], cwd=repo, env=environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ok: " in done.stdout and "files written" in done.stdout
    assert list((repo / "site/d").glob("*/*.json")) and list((repo / "site/f").glob("*/*.bin"))


def test_quick_start_commands_are_the_scripts_ci_runs():
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", README, re.S)[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    assert "exec scripts/test" in (ROOT / ".ci/run").read_text()


def test_walk_through_runs(tmp_path):
    repo = copy_repo(tmp_path)
    walk = README[README.index("## Walk-through"): README.index("## The fleet YAML")]
    blocks = re.findall(r"```bash\n(.*?)```", walk, re.S)
    assert len(blocks) >= 5
    port = str(free_port())
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("5000", port)
    done = subprocess.run(["bash", "-c", script], cwd=repo, env=environment(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "md5:" in out and "sha256:" in out
    assert "site up to date" in out  # the second build is a no-op
    assert '"update_available": true' in out and '"firmware_version": "1.3.8"' in out
    assert re.search(r"24:6F:28:00:00:01\s+PanicAlarm_0001\s+1\.3\.8\s+1\.3\.7\s+update offered", out), out
