"""The git commands otapub runs: one helper for running them, and the questions it asks of a repository.

`otapub plan` compares the fleet with the one at a base ref, a build records the commit it was
built from, a build without state reads the fleet of the live site's commit, and the admin API
commits its edits.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from otapub.errors import OtapubError


def run_git(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``git -C root args``, whatever its exit status; OSError (no git) and TimeoutExpired propagate."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=timeout, check=False)


def git(root: Path, *args: str) -> str:
    """The output of a git command that must succeed; OtapubError (with git's message) otherwise."""
    return git_bytes(root, *args).decode().strip()


def git_bytes(root: Path, *args: str) -> bytes:
    try:
        done = run_git(root, *args)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OtapubError(f"git failed: {exc}") from None
    if done.returncode != 0:
        raise OtapubError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def head_commit(root: Path) -> str | None:
    """The commit checked out at root; None outside a git work tree (or without git)."""
    try:
        done = run_git(root, "rev-parse", "HEAD", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode().strip() if done.returncode == 0 else None


def work_tree_of(path: Path) -> Path | None:
    """The git work tree holding path (which need not exist yet), if any; git itself is not needed.

    Symlinks are resolved first, then every folder up to the root is looked at for a `.git` (a
    folder, or a file in linked worktrees and submodules): what git looks for.
    """
    real = Path(os.path.realpath(path))
    for folder in (real, *real.parents):
        if (folder / ".git").exists():
            return folder
    return None


def default_base(root: Path) -> str:
    """The merge base with origin/main when there is one, else HEAD."""
    try:
        return git(root, "merge-base", "HEAD", "origin/main")
    except OtapubError:
        git(root, "rev-parse", "--verify", "HEAD")  # raises a clear error outside a git repository
        return "HEAD"


@contextlib.contextmanager
def tree_at(root: Path, ref: str) -> Iterator[tuple[Path, str]]:
    """The repository as it was at a ref, extracted into a temporary folder: (the folder that
    corresponds to ``root`` there, the commit). Removed on exit."""
    commit = git(root, "rev-parse", "--verify", f"{ref}^{{commit}}")
    prefix = git(root, "rev-parse", "--show-prefix")
    data = git_bytes(root, "archive", "--format=tar", commit, "--", ".")
    with tempfile.TemporaryDirectory(prefix="otapub-git-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(tmp, filter="data")
        base_root = Path(tmp) / prefix if prefix else Path(tmp)
        base_root.mkdir(parents=True, exist_ok=True)
        yield base_root.resolve(), commit
