"""`otapub init`: a newcomer's own fleet repository that checks, builds and lints at once.

The last tests install otapub from a wheel into a fresh virtual environment, as a newcomer
does, and run `otapub init` and the README's walk-through from it (about 10 s: one wheel build).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from otapub.cli import main
from otapub.scaffold import init_repository, requirement_from_direct_url
from tests.conftest import ROOT, SECRET, git

PACKAGE = "otapub @ git+https://github.com/OWNER/otapub@v0.1.0"
EXPECTED = [".github/workflows/pr-comment.yml", ".github/workflows/pr.yml", ".github/workflows/publish.yml",
            ".github/zizmor.yml", ".gitignore", "README.md", "config.json", "firmware/README.md",
            "firmware/example-1.0.0.bin", "fleet/devices.yaml", "fleet/releases.yaml", "requirements.txt"]


def init(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["init", *args], env=env, catch_exceptions=False)


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git/" not in f"{p}/")


def lint_commands() -> list[list[str]]:
    """The workflow linters exactly as scripts/lint runs them."""
    text = (ROOT / "scripts/lint").read_text().replace("\\\n", " ")
    commands = [shlex.split(m[1]) for m in re.finditer(r"^run (?:actionlint|zizmor) (.*)$", text, re.M)]
    assert [c[0] for c in commands] == ["actionlint", "zizmor"]
    return commands


def test_init_scaffolds_a_fleet_that_checks_builds_plans_and_lints(tmp_path):
    target = tmp_path / "my-fleet"
    result = init(str(target), "--package", PACKAGE)
    assert result.exit_code == 0, result.output
    assert files_below(target) == EXPECTED
    assert (target / "requirements.txt").read_text().splitlines()[-1] == PACKAGE
    assert "OTA_SERVER_" not in (target / "config.json").read_text()  # no secret, and nothing to leak
    config = ["--config", str(target / "config.json")]
    checked = CliRunner().invoke(main, [*config, "check"], catch_exceptions=False)
    assert checked.exit_code == 0 and "1 devices, 1 releases" in checked.output, checked.output
    # the workflows' commands: a pull request's plan against its base, then the publish build
    git(target, "init", "-q", "-b", "main")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "otapub init")
    assert "site/" not in git(target, "ls-files")
    planned = CliRunner().invoke(main, [*config, "plan", "--base", "HEAD", "--format", "markdown"])
    assert planned.exit_code == 0, planned.output
    built = CliRunner().invoke(main, [*config, "build"], env={"OTA_SERVER_SHARED_SECRET_KEY": SECRET})
    assert built.exit_code == 0 and len(list((target / "site/d").glob("*/020000000001.json"))) == 1, built.output
    assert git(target, "status", "--porcelain") == ""  # .gitignore keeps site/ and .otapub/ out of git
    tools = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's, first
    for command in lint_commands():
        done = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PATH": tools})
        assert done.returncode == 0, (command, done.stdout + done.stderr)


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path):
    target = tmp_path / "existing"
    target.mkdir()
    (target / "README.md").write_text("ours\n")
    (target / "fleet").write_text("a file where a folder goes\n")
    result = init(str(target), "--package", PACKAGE)
    assert result.exit_code == 2 and "refusing to overwrite; nothing was written" in result.output
    assert "README.md exists" in result.output and "fleet is a file, not a folder" in result.output
    assert files_below(target) == ["README.md", "fleet"] and (target / "README.md").read_text() == "ours\n"
    (target / "fleet").unlink()
    (target / "README.md").unlink()
    assert init(str(target), "--package", PACKAGE).exit_code == 0  # an empty folder is fine, and so is "."
    again = init(str(target), "--package", PACKAGE)
    assert again.exit_code == 2 and again.output.count(" exists") == len(EXPECTED) and "Traceback" not in again.output


def test_init_next_step_can_be_pasted_into_a_shell(tmp_path):
    target = tmp_path / "my fleet"
    result = init(str(target), "--package", PACKAGE)
    assert result.exit_code == 0 and f"next: cd '{target}' && git init" in result.output, result.output


def test_init_where_no_folder_can_be_made_says_so_and_leaves_nothing(tmp_path):
    (tmp_path / "a-file").write_text("x\n")
    result = init(str(tmp_path / "a-file/fleet"), "--package", PACKAGE)
    assert result.exit_code == 2 and "a-file/fleet: cannot create the repository there" in result.output
    assert "nothing was written" in result.output and "check the paths in the config" not in result.output
    assert (tmp_path / "a-file").read_text() == "x\n"


def test_init_asks_for_a_package_ci_can_install(tmp_path):
    for bad in ("", "  ", "otapub\nevil-package", "# comment", "-e .", "--index-url=https://example.com",
                "requests==2.0", "otapubx", "not a requirement"):
        result = init(str(tmp_path / "a"), "--package", bad)
        assert result.exit_code == 2 and "expected one pip requirement for otapub" in result.output, bad
    for good in ("otapub==0.1.0", "OtaPub[extra] @ https://example.com/otapub.whl", "otapub>=0.1; python_version>'3'"):
        assert init(str(tmp_path / "good"), "--package", good).exit_code == 0, good
        assert (tmp_path / "good/requirements.txt").read_text().splitlines()[-1] == good
        shutil.rmtree(tmp_path / "good")
    from otapub.errors import OtapubError

    with pytest.raises(OtapubError, match="give --package"):
        init_repository(tmp_path / "b", None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(("record", "expected"), [
    (None, "otapub==1.2.3"),  # from an index
    ({"url": "https://github.com/o/otapub.git", "vcs_info": {"vcs": "git", "commit_id": "ab12", "requested_revision":
                                                               "v1"}}, "otapub @ git+https://github.com/o/otapub.git@ab12"),
    ({"url": "https://example.com/otapub-1.2.3-py3-none-any.whl", "archive_info": {"hashes": {"sha256": "ff"}}},
     "otapub @ https://example.com/otapub-1.2.3-py3-none-any.whl#sha256=ff"),
    ({"url": "file:///home/me/otapub", "dir_info": {"editable": True}}, None),  # a clone: CI cannot reach it
    ({"url": "file:///tmp/otapub-1.2.3-py3-none-any.whl", "archive_info": {}}, None),
    ({"url": "ssh://git@host/otapub.git", "vcs_info": {"vcs": "git", "commit_id": "ab12"}}, None),
])
def test_the_requirement_ci_installs_pins_what_pip_recorded(record, expected):
    text = None if record is None else json.dumps(record)
    assert requirement_from_direct_url(text, "1.2.3") == expected
    assert requirement_from_direct_url("not json", "1.2.3") is None


def _steps(job: dict) -> dict[str, dict]:
    return {step.get("name") or step["uses"]: step for step in job["steps"]}


def test_skeleton_workflows_follow_the_repository_workflows():
    """The scaffold's workflows are otapub's own minus what needs otapub's sources (tests, the Worker)."""
    skeleton = ROOT / "otapub/skeleton/dot-github"
    for name in ("workflows/pr-comment.yml", "zizmor.yml"):
        assert (skeleton / name).read_text() == (ROOT / ".github" / name).read_text(), name
    for name in ("pr.yml", "publish.yml"):
        ours = yaml.safe_load((skeleton / "workflows" / name).read_text())
        theirs = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
        assert ours[True] == theirs[True] and ours["permissions"] == theirs["permissions"], name
        for job_name, job in ours["jobs"].items():
            their_job = theirs["jobs"][job_name]
            assert {k: v for k, v in job.items() if k not in ("name", "steps")} == \
                {k: v for k, v in their_job.items() if k not in ("name", "steps")}, (name, job_name)
            their_steps = _steps(their_job)
            for key, step in _steps(job).items():
                if key.startswith("Install"):
                    assert step["run"] == "python -m pip install -r requirements.txt", name
                else:  # .github/workflows changed: bring otapub/skeleton/dot-github/workflows along
                    assert step == their_steps.get(key), (name, key)


# -- from a wheel, as a newcomer installs it ---------------------------------------------------------
@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with otapub installed from a wheel built from this checkout.

    The wheel is built from a copy of the sources (an in-tree build would leave build/ behind);
    its dependencies come from the test environment through a .pth file instead of the network.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "otapub", source / "otapub", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(work / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((work / "dist").glob("otapub-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([str(python), "-c", "import otapub; print(otapub.__file__)"], check=True,
                           capture_output=True, text=True, cwd=work).stdout
    assert where.startswith(str(venv)), where  # the wheel's otapub, not this checkout's
    return venv


def venv_environment(venv: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTA_SERVER_", "OTAPUB_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", HOME=str(home), GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return env


def test_the_wheel_carries_the_skeleton_and_asks_where_ci_gets_otapub(wheel_venv, tmp_path):
    env = venv_environment(wheel_venv, tmp_path)
    otapub = str(wheel_venv / "bin" / "otapub")
    # installed from a wheel file, which CI cannot reach: init asks for --package and writes nothing
    asked = subprocess.run([otapub, "init", "fleet"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert asked.returncode == 2 and "give --package" in asked.stderr and not (tmp_path / "fleet").exists()
    done = subprocess.run([otapub, "init", "fleet", "--package", PACKAGE], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert files_below(tmp_path / "fleet") == EXPECTED
    checked = subprocess.run([otapub, "check"], cwd=tmp_path / "fleet", env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_readme_own_fleet_walk_through_runs_from_the_wheel(wheel_venv, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Your own fleet repository"): readme.index("## Walk-through")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)], cwd=tmp_path,
                          env=venv_environment(wheel_venv, tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: 1 devices, 1 releases" in done.stdout and "by pin" in done.stdout
    assert list((tmp_path / "my-fleet/site/d").glob("*/020000000001.json"))
