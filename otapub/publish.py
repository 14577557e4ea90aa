"""Publish a rendered plan into the site folder, safely for its readers, and remember what was published.

Order of operations (design.md §4, style.md): copy firmware before any answer names it; write
each file atomically and only when its bytes changed; prune answers of removed devices
afterwards; prune firmware no answer references only after a grace period of time and at
least one further build; the build record (otapub.record) last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from otapub.config import Config
from otapub.errors import OtapubError
from otapub.firmware import digest_file
from otapub.fsutil import TMP_MARK, atomic_write, content_digest, is_temp, write_new
from otapub.record import RECORD, write_record
from otapub.render import Plan

ANSWERS_STAGING = f"d{TMP_MARK}"  # + pid: a fresh site's answers, renamed to d/ when complete
STATE_FORMAT = 3  # 2: image inspection cache and the time span a build is valid for; 3: outputs apart
OUTPUTS_FILE = "outputs.json"  # in state_dir, beside state.json


@dataclass
class BuildResult:
    devices: int = 0
    releases: int = 0
    written: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    hashed: int = 0
    inspected: int = 0  # firmware images parsed (not answered from the cache)
    noop: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        if self.noop:
            return f"site up to date ({self.devices} devices); nothing written [{self.seconds:.2f}s]"
        return (f"{self.devices} devices, {self.releases} releases: {len(self.written)} files written, "
                f"{len(self.pruned)} pruned, {self.hashed} firmware hashed [{self.seconds:.2f}s]")


class BuildState:
    """What the last build wrote (in state_dir, never published: it names token paths).

    The digest of every published file goes to a file of its own, read only when a build
    publishes: a no-op build need not parse 100,000 entries.
    """

    def __init__(self, path: Path):
        self.path = path
        self.outputs_path = path.with_name(OUTPUTS_FILE)
        data: dict[str, Any] = {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if data.get("format") != STATE_FORMAT:
            data = {}
        self.fingerprint: str | None = data.get("fingerprint")
        self.digests: dict[str, list] = data.get("digests", {})
        self.answers: int = data.get("answers", 0)  # answers (d/...) among the outputs
        self.firmware: dict[str, list | None] = data.get("firmware", {})
        self.sequence: int = data.get("sequence", 0)
        self.record: str | None = data.get("record")
        self.inputs: list[str] = data.get("inputs", [])
        self.images: dict[str, list] = data.get("images", {})
        self.valid_from: str | None = data.get("valid_from")
        self.valid_until: str | None = data.get("valid_until")
        self._outputs: dict[str, str] | None = None
        self._outputs_read = not data  # no state: no outputs either

    @property
    def outputs(self) -> dict[str, str] | None:
        """Site path -> digest of every file the last build published (None: not known)."""
        if not self._outputs_read:
            self._outputs_read = True
            try:
                data = json.loads(self.outputs_path.read_bytes())
            except (OSError, ValueError):
                data = None
            # Written just before state.json: from another build (a crash in between), it is not used.
            if isinstance(data, dict) and data.get("sequence") == self.sequence:
                self._outputs = data.get("outputs")
        return self._outputs

    @outputs.setter
    def outputs(self, value: dict[str, str]) -> None:
        self._outputs, self._outputs_read = value, True
        self.answers = sum(1 for path in value if path.startswith("d/"))

    def valid_at(self, now: datetime) -> bool:
        """Is ``now`` inside the span the last build's rollout stages hold for?"""
        try:
            start = datetime.fromisoformat(self.valid_from) if self.valid_from else None
            until = datetime.fromisoformat(self.valid_until) if self.valid_until else None
        except ValueError:
            return False
        return (start is None or start <= now) and (until is None or now < until)

    def site_as_left(self, site: Path) -> bool:
        """Is the site as the last build left it? Its record is, and so is d/ when it had answers
        (a wiped d/ is written anew; `build --force` compares every file)."""
        record = site / RECORD
        return self.record is not None and record.is_file() and content_digest(record.read_bytes()) == self.record \
            and ((site / "d").is_dir() or not self.answers)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.outputs_path, json.dumps({"sequence": self.sequence, "outputs": self.outputs},
                                                   separators=(",", ":")).encode(), mode=0o600)
        data = {"format": STATE_FORMAT, "fingerprint": self.fingerprint, "digests": self.digests,
                "answers": self.answers, "firmware": self.firmware, "sequence": self.sequence,
                "record": self.record, "inputs": self.inputs, "images": self.images,
                "valid_from": self.valid_from, "valid_until": self.valid_until}
        atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode(), mode=0o600)



def _scan(site: Path) -> tuple[dict[str, str], list[str]]:
    """Existing answers and firmware of a site we have no state for (state dir lost)."""
    answers: dict[str, str] = {}
    firmware: list[str] = []
    for top in ("d", "f"):
        for dirpath, _dirs, names in os.walk(site / top):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), site)
                if is_temp(name):
                    continue
                if top == "d":
                    answers[rel] = ""  # unknown digest: compared by content
                else:
                    firmware.append(rel)
    return answers, firmware


def publish(config: Config, site: Path, plan: Plan, state: BuildState, trust_state: bool,
            source_commit: Callable[[], str | None]) -> BuildResult:
    """Write the plan into the site; update ``state`` with what the site now holds.

    ``source_commit`` gives the commit the build record names (asked only when the site changed).
    """
    result = BuildResult(devices=len(plan.fleet.devices), releases=plan.releases)
    site.mkdir(parents=True, exist_ok=True)
    if trust_state and state.outputs is not None:
        previous = dict(state.outputs)
        known_firmware = dict(state.firmware)
    else:
        previous, found = _scan(site)
        known_firmware = {path: state.firmware.get(path) for path in found}
    # 1. Firmware first: no answer may name a file that is not there yet.
    for path, source in plan.firmware.items():
        target = site / path
        if not target.is_file():
            _copy_verified(source, target, path.split("/")[1])
            result.written.append(path)
        known_firmware[path] = None
    # 2. Answers, only when their bytes changed. String paths relative to the site folder and raw
    #    os calls: this loop runs once per device, and pathlib's joins, mkdir(parents=True) and
    #    the kernel's walk of the whole path each time cost more than the writes.
    #    A site without d/ (the first build, or d/ removed) gets its answers in a new tree that
    #    is renamed to d/ when complete: no reader can see it before, so each answer is written
    #    in place, without a temporary file and a rename of its own (100,000 renames fewer).
    outputs: dict[str, str] = {}
    made_dirs: set[str] = set()
    root = os.fspath(site)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _remove_staging(root)
        staging = None if os.path.lexists(f"{root}/d") else f"{ANSWERS_STAGING}{os.getpid()}"
        if staging is not None:
            os.mkdir(staging, dir_fd=root_fd)
            previous = {path: digest for path, digest in previous.items() if not path.startswith("d/")}
        for path, data in plan.answers.items():
            digest = content_digest(data)
            outputs[path] = digest
            old = previous.get(path)
            if old == digest:
                continue
            if old == "" and _same_bytes(f"{root}/{path}", data):
                continue
            parent = path.rpartition("/")[0]  # "" for a top-level file (keys.json)
            if staging is not None and parent.startswith("d/"):
                if parent not in made_dirs:
                    os.mkdir(staging + parent[1:], dir_fd=root_fd)
                    made_dirs.add(parent)
                write_new(staging + path[1:], data, dir_fd=root_fd)
            else:
                if parent not in made_dirs:
                    _make_dir(root, parent, root_fd)
                    made_dirs.add(parent)
                atomic_write(path, data, dir_fd=root_fd)
            result.written.append(path)
        if staging is not None:
            os.rename(staging, "d", src_dir_fd=root_fd, dst_dir_fd=root_fd)
    finally:
        os.close(root_fd)
    # 3. Prune answers of devices that are gone (after the new ones are in place).
    for path in previous.keys() - outputs.keys():
        _remove(site, path)
        result.pruned.append(path)
    # 4. Firmware no answer references: keep for a grace period and at least one more build.
    state.sequence += 1
    now = time.time()
    grace = config.firmware_grace_seconds
    for path, since in list(known_firmware.items()):
        if path in plan.firmware:
            continue
        if since is None:
            known_firmware[path] = [state.sequence, now]
        elif state.sequence > since[0] and now - since[1] >= grace:
            _remove(site, path)
            result.pruned.append(path)
            del known_firmware[path]
    # 5. The build record last, and only when something changed.
    changed = bool(result.written or result.pruned) or not (site / RECORD).is_file()
    if changed:
        data = write_record(site, source_commit(), result.devices, plan.releases, len(plan.firmware),
                            plan.manifest_version)
        result.written.append(RECORD)
        state.record = content_digest(data)
    state.outputs = outputs
    state.firmware = known_firmware
    return result


def _remove_staging(root: str) -> None:
    """Remove answer trees a crashed build left unfinished (builds hold the lock: none is running)."""
    for name in os.listdir(root):
        if name.startswith(ANSWERS_STAGING):
            shutil.rmtree(f"{root}/{name}", ignore_errors=True)


def _same_bytes(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read() == data
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False


def _make_dir(root: str, path: str, root_fd: int) -> None:
    """Create an answer directory: one mkdir for the usual d/<TOKEN> whose parent d/ exists."""
    if not path:
        return  # the site folder itself
    try:
        os.mkdir(path, dir_fd=root_fd)
    except FileExistsError:
        pass
    except FileNotFoundError:  # d/ itself is missing (the first answer of a fresh site)
        os.makedirs(f"{root}/{path}", exist_ok=True)


def _copy_verified(source: Path, target: Path, sha256: str) -> None:
    """Copy firmware into the site, checking the copy is the bytes that were verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        if digest_file(tmp).sha256 != sha256:
            raise OtapubError(f"{source}: changed while the site was being built; build again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove(site: Path, path: str) -> None:
    target = site / path
    try:
        target.unlink()
    except FileNotFoundError:
        pass
    parent = target.parent
    while parent != site:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
