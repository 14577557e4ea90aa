"""Fleet files libyaml parsed in earlier builds, kept in state_dir so that a build re-parses
only the ones that changed.

Files in the plain ``key: value`` subset that otapub.fastyaml reads are not kept: reading them
again takes about as long as unpickling them (0.5 s vs 0.3 s for 100,000 devices), and storing
them cost a full build 0.3 s. Everything else (flow style, lists, anchors ...) takes libyaml
three times as long and is kept: one pickle per YAML file, reused while the file's path, size
and mtime and the otapub version are the same.

The state dir is local and private: entries are written atomically with mode 0600, and one
that is not ours (another owner, readable or writable by others, e.g. checked into git),
corrupt, or stale is ignored and replaced. Files changed in the last seconds are
not stored: a second edit within the file system's timestamp granularity would keep the same
size and mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

from otapub import __version__
from otapub.fastyaml import fast_load
from otapub.fsutil import RACY_NS, atomic_write
from otapub.yamlsource import libyaml_load, read_source, read_yaml

SUFFIX = ".pickle"


class ParseCache:
    """``read`` has the contract of ``yamlsource.read_yaml``; ``prune`` drops unused entries."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.used: set[str] = set()  # entry file names read or written in this run

    def read(self, path: Path, name: str) -> Any:
        try:
            stat = path.stat()
        except OSError:
            return read_yaml(path, name)  # it reports why the file cannot be read
        key = (__version__, str(path), name, stat.st_size, stat.st_mtime_ns)
        entry = self.folder / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + SUFFIX)
        found = self._load(entry)
        if isinstance(found, tuple) and len(found) == 2 and found[0] == key:
            self.used.add(entry.name)
            return found[1]
        data = read_source(path, name)
        doc = fast_load(data, name)
        if doc is not None:
            return doc
        doc = libyaml_load(data, name)
        self.used.add(entry.name)
        if time.time_ns() - stat.st_mtime_ns >= RACY_NS:
            with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
                self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                atomic_write(entry, pickle.dumps((key, doc), protocol=pickle.HIGHEST_PROTOCOL), mode=0o600)
        return doc

    @staticmethod
    def _load(entry: Path) -> Any:
        try:
            with open(entry, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
                    return None  # not written by a build of ours: never unpickle it
                return pickle.load(handle)  # noqa: S301 - our own private file (checked just above)
        except Exception:  # missing, truncated, another version's classes ...: parse the file again
            return None

    def prune(self) -> None:
        """Remove what this run did not use: entries of deleted files, a crashed write's temp file.

        Runs under the build lock, so no other build is writing here.
        """
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            if name not in self.used:
                with contextlib.suppress(OSError):
                    os.unlink(self.folder / name)
