"""Firmware files: digests (cached by path, size and mtime) and content-addressed site paths."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from otapub.errors import OtapubError
from otapub.model import Release

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Digests:
    md5: str
    sha256: str
    size: int


def digest_bytes(data: bytes) -> Digests:
    return Digests(hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).hexdigest(), len(data))


def digest_file(path: Path) -> Digests:
    """MD5, SHA-256 and size of a file, read once."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return Digests(md5.hexdigest(), sha.hexdigest(), size)


class DigestCache:
    """Digests keyed by (path, size, mtime_ns): a firmware file is hashed once, not every build."""

    def __init__(self, entries: dict[str, list] | None = None):
        self.entries: dict[str, list] = dict(entries or {})
        self.hashed: list[Path] = []  # files actually read in this run

    def get(self, path: Path) -> Digests:
        try:
            stat = path.stat()
        except OSError as exc:
            raise OtapubError(f"{path}: {exc.strerror}") from None
        key = str(path)
        cached = self.entries.get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return Digests(cached[2], cached[3], stat.st_size)
        digests = digest_file(path)
        self.hashed.append(path)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, digests.md5, digests.sha256]
        return digests

    def stamp(self, path: Path) -> list | None:
        """(size, mtime_ns) of a cached file as it is now, for the no-op fingerprint."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]


def site_name(original: str) -> str:
    """A human-readable, URL- and uploader-safe file name (never starting with a dot)."""
    name = _UNSAFE.sub("_", Path(original).name).lstrip(".") or "firmware.bin"
    return name[:100]


def firmware_site_path(sha256: str, original: str) -> str:
    """Content-addressed path: immutable, so it can be cached forever."""
    return f"f/{sha256}/{site_name(original)}"


def firmware_url(base_url: str | None, release: Release, digests: Digests | None) -> str | None:
    """Where a device downloads a release: its own ``url``, else its file in the site (None: not hashed)."""
    if release.url is not None:
        return release.url
    if digests is None or release.file is None:
        return None
    return f"{base_url or ''}/{firmware_site_path(digests.sha256, release.file.name)}"
