"""`otapub init`: a new fleet repository from the skeleton shipped inside the package.

otapub/skeleton/ holds the files as they land, but for two spellings: a path part ``dot-x``
lands as ``.x`` (package-data globs skip dotfiles, so `.github` would be missing from a wheel),
and ``@@key@@`` in a file's text is replaced by a value computed here. The example
release's firmware is generated (otapub.imagegen), so the new fleet passes `otapub check` and
builds at once.

Nothing is overwritten and nothing is left half-written: every target is checked before the
first file is created, and a failure while writing removes what this run created.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING

from otapub.errors import OtapubError
from otapub.firmware import digest_bytes
from otapub.fsutil import write_new
from otapub.imagegen import make_app_image

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

EXAMPLE_CHIP = "esp32c6"
EXAMPLE_FIRMWARE = "firmware/example-1.0.0.bin"
_PLACEHOLDER = re.compile(r"@@([a-z0-9_]+)@@")
_OTAPUB = re.compile(r"otapub(?![A-Za-z0-9._-])", re.IGNORECASE)  # a requirement naming otapub (PEP 508)


class ScaffoldError(OtapubError):
    exit_code = 2


@dataclass(frozen=True)
class Scaffolded:
    root: Path
    files: tuple[str, ...]  # relative to root, in the order written
    requirement: str


def installed_requirement() -> str | None:
    """A pip requirement for exactly the otapub running now, for CI; None when pip recorded none usable."""
    try:
        dist = metadata.distribution("otapub")
    except metadata.PackageNotFoundError:
        return None
    return requirement_from_direct_url(dist.read_text("direct_url.json"), dist.version)


def requirement_from_direct_url(text: str | None, version: str) -> str | None:
    """The requirement for an install whose PEP 610 record (direct_url.json) is ``text``.

    A git URL is pinned to the installed commit, an https archive to its hash; a package from an
    index (no record) to its version. A local clone, folder or wheel file cannot be reached from CI.
    """
    if text is None:
        return f"otapub=={version}"
    try:
        info = json.loads(text)
    except ValueError:
        return None
    url = str(info.get("url", "")) if isinstance(info, dict) else ""
    if not url.startswith("https://"):
        return None
    vcs = info.get("vcs_info") or {}
    if vcs.get("vcs") == "git" and vcs.get("commit_id"):
        return f"otapub @ git+{url}@{vcs['commit_id']}"
    if "archive_info" in info:
        hashes = info["archive_info"].get("hashes") or {}
        return f"otapub @ {url}" + (f"#sha256={hashes['sha256']}" if "sha256" in hashes else "")
    return None


def _skeleton(folder: Traversable, prefix: str = "") -> list[tuple[str, bytes]]:
    files = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        name = prefix + ("." + entry.name[4:] if entry.name.startswith("dot-") else entry.name)
        if entry.is_dir():
            files.extend(_skeleton(entry, name + "/"))
        else:
            files.append((name, entry.read_bytes()))
    return files


def render(root: Path, requirement: str) -> dict[str, bytes]:
    """Every file of the new repository (relative path → bytes), computed before anything is written."""
    image = make_app_image(chip=EXAMPLE_CHIP, version="1.0.0", project_name="example", size=8192)
    values = {"requirement": requirement, "chip": EXAMPLE_CHIP, "sha256": digest_bytes(image).sha256,
              "name": root.resolve().name or "fleet"}
    files = {}
    for name, data in _skeleton(resources.files("otapub") / "skeleton"):
        text = _PLACEHOLDER.sub(lambda m: values[m[1]], data.decode("utf-8"))
        files[name] = text.encode("utf-8")
    files[EXAMPLE_FIRMWARE] = image
    return files


def _check_requirement(requirement: str) -> str:
    requirement = requirement.strip()
    if len(requirement.splitlines()) != 1 or not _OTAPUB.match(requirement):
        raise ScaffoldError(f"--package {requirement!r}: expected one pip requirement for otapub, e.g. "
                            "'otapub @ git+https://github.com/OWNER/otapub@v0.1.0' or 'otapub==0.1.0'")
    return requirement


def _blocked(root: Path, files: dict[str, bytes]) -> list[str]:
    """Why each target cannot be created: it exists, or a folder on its way is a file."""
    problems = []
    if root.exists() and not root.is_dir():
        return [f"{root} exists and is not a folder"]
    for name in files:
        path = root / name
        if path.exists() or path.is_symlink():
            problems.append(f"{name} exists")
            continue
        for parent in path.relative_to(root).parents:
            if parent != Path(".") and (root / parent).exists() and not (root / parent).is_dir():
                problems.append(f"{parent} is a file, not a folder")
                break
    return sorted(set(problems))


def init_repository(root: Path, requirement: str | None) -> Scaffolded:
    """Scaffold a fleet repository in ``root`` (created if missing); refuse to overwrite anything."""
    if requirement is None:
        raise ScaffoldError("cannot tell where this otapub was installed from (a local clone, folder or wheel "
                            "file, which CI cannot reach): give --package with the pip requirement CI should "
                            "install, e.g. --package 'otapub @ git+https://github.com/OWNER/otapub@v0.1.0'")
    requirement = _check_requirement(requirement)
    files = render(root, requirement)
    problems = _blocked(root, files)
    if problems:
        raise ScaffoldError(f"{root}: refusing to overwrite; nothing was written:\n  " + "\n  ".join(problems))
    created_dirs: list[Path] = []
    written: list[Path] = []
    try:
        for name, data in files.items():
            path = root / name
            missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
            for folder in reversed(missing):
                folder.mkdir()
                created_dirs.append(folder)
            write_new(str(path), data)
            written.append(path)
    except OSError as exc:  # no permission, a file on the way to root, a read-only file system ...
        for path in reversed(written):
            path.unlink(missing_ok=True)
        for folder in reversed(created_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ScaffoldError(f"{root}: cannot create the repository there: {exc.filename or root}: "
                            f"{exc.strerror or exc}; nothing was written") from None
    log.debug("scaffolded %d files in %s", len(written), root)
    return Scaffolded(root, tuple(files), requirement)
