"""File-system helpers: atomic writes and a build lock.

Readers (the shim, a sync tool) must never see a half-written file: every file is written to
a temporary name beside its target and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".otapub-tmp-"


def write_new(path: str, data: bytes, mode: int = 0o644, dir_fd: int | None = None) -> None:
    """Create ``path`` (it must not exist: O_EXCL never writes through a planted symlink) with ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write: regular files only do that as the disk fills up
            written += os.write(fd, memoryview(data)[written:])
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, dir_fd: int | None = None) -> None:
    """Write data to path atomically (temp file in the same folder + rename).

    Raw ``os`` calls on a string path: a build writes 100,000 answers through here, and the
    pathlib and file-object layers cost more than the system calls themselves. ``dir_fd``: a
    folder ``path`` is relative to (the kernel then walks only the path below it).
    """
    path = os.fspath(path)
    tmp = f"{path}{TMP_MARK}{os.getpid()}"
    try:
        try:
            write_new(tmp, data, mode, dir_fd)
        except FileExistsError:  # left by a crashed writer that had our process id
            os.unlink(tmp, dir_fd=dir_fd)
            write_new(tmp, data, mode, dir_fd)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def is_temp(name: str) -> bool:
    return TMP_MARK in name


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on path (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def content_digest(data: bytes) -> str:
    """The short digest build state keeps of an output's bytes (not a security check: a change detector)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


RACY_NS = 2_000_000_000  # mtimes this close to now may not yet tell two edits apart


def fleet_files(fleet_dir: Path) -> list[Path]:
    """All *.yaml / *.yml files below fleet_dir, any depth, in a stable order.

    A symlink of that name counts even when it leads nowhere: reading it then reports the
    problem, instead of the devices in it silently going missing.
    """
    files = [p for p in fleet_dir.rglob("*") if p.suffix in (".yaml", ".yml") and (p.is_file() or p.is_symlink())]
    return sorted(files)


def stat_fingerprint(parts: list[Any], paths: Iterable[Path]) -> tuple[str, int]:
    """A hash of ``parts`` and each path's size and mtime, and the newest mtime (ns; 0 for none).

    What says, without reading them, that files may have changed since the hash was taken
    (the build's no-op path, the check-in store's cached targets).
    """
    parts = list(parts)
    newest = 0
    for path in paths:
        try:
            stat = path.stat()
            parts.append([str(path), stat.st_size, stat.st_mtime_ns])
            newest = max(newest, stat.st_mtime_ns)
        except OSError:
            parts.append([str(path), None])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest(), newest
