"""Check each release's firmware file as an ESP32-family application image at build time.

A release's binary must be an app image (otapub.image), for the chip the release declares, of
the version it declares (unless ``version_source: declared``) and of the ``secure_version`` it
declares. Results are cached by (path, size, mtime) next to the digests in the build state, so a
no-op or one-device rebuild parses no image.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from otapub.chips import ESP8266
from otapub.errors import Problem
from otapub.firmware import Digests
from otapub.image import ImageError, ImageInfo, esp8266_image, inspect_image
from otapub.model import Fleet, Release
from otapub.versions import same_version

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the checks below change what an image's facts are


@dataclass(frozen=True)
class ImageFacts:
    """What a build needs to know about one firmware image."""

    chip: str
    version: str | None  # from the app descriptor; None without one
    project_name: str | None
    secure_version: int | None
    sha256: str  # of the bytes that were inspected


class ImageCache:
    """Inspection results keyed by (path, size, mtime_ns); a failure is remembered too."""

    def __init__(self, entries: dict[str, list] | None = None):
        self.entries: dict[str, list] = {k: v for k, v in (entries or {}).items()
                                         if isinstance(v, list) and len(v) == 4 and v[0] == CACHE_FORMAT}
        self.inspected: list[Path] = []  # files actually parsed in this run

    def get(self, path: Path) -> ImageFacts:
        """The image's facts; raise ImageError when it is not an app image, OSError when unreadable."""
        stat = path.stat()
        key = str(path)
        cached = self.entries.get(key)
        if cached and cached[1] == [stat.st_size, stat.st_mtime_ns]:
            if isinstance(cached[2], dict):
                return ImageFacts(**cached[2])
            raise ImageError(cached[3])
        data = path.read_bytes()
        self.inspected.append(path)
        stamp = [stat.st_size, stat.st_mtime_ns]
        try:
            info = inspect_image(data)
        except ImageError as exc:
            self.entries[key] = [CACHE_FORMAT, stamp, None, str(exc)]
            raise
        facts = facts_of(info, hashlib.sha256(data).hexdigest())
        self.entries[key] = [CACHE_FORMAT, stamp, asdict(facts), None]
        return facts


def facts_of(info: ImageInfo, sha256: str) -> ImageFacts:
    return ImageFacts(info.chip, info.version, info.project_name, info.secure_version, sha256)


def check_release(release: Release, facts: ImageFacts) -> list[Problem]:
    """Does the image fit what the release declares? (chip, version, secure_version)"""
    problems: list[Problem] = []
    field = f"releases.{release.name}"
    file = release.file_text
    if release.chip is not None and release.chip != facts.chip:
        problems.append(release.where("chip").problem(
            f"{field}.chip", f"declared chip {release.chip}, but {file} is an {facts.chip} image"))
    if release.version_source == "image" and release.version:
        hint = ("; fix `version:`, or set `version_source: declared` when the build does not stamp its own "
                "version (Arduino builds carry a library's version or none)")
        if facts.version is None:
            problems.append(release.where("version").problem(
                f"{field}.version", f"{file} has no app descriptor, so its version {release.version} cannot be "
                                    f"checked{hint}"))
        elif not same_version(facts.version, release.version):
            project = f" (project {facts.project_name})" if facts.project_name else ""
            problems.append(release.where("version").problem(
                f"{field}.version", f"declared version {release.version}, but the app descriptor of {file}"
                                    f"{project} says {facts.version!r}{hint}"))
    if release.secure_version is not None and release.secure_version != facts.secure_version:
        found = "has no app descriptor" if facts.secure_version is None else f"has {facts.secure_version}"
        problems.append(release.where("secure_version").problem(
            f"{field}.secure_version", f"declared secure_version {release.secure_version}, but {file} {found}"))
    return problems


def inspect_releases(fleet: Fleet, cache: ImageCache,
                     digests: Mapping[str, Digests] | None = None) -> tuple[dict[str, ImageFacts], list[Problem]]:
    """Inspect every local release file once; return facts by release name and all problems.

    Missing or unreadable files are left to the checksum verification, which reports them.
    """
    facts: dict[str, ImageFacts] = {}
    problems: list[Problem] = []
    for release in fleet.releases.values():
        if release.file is None:
            continue
        field = f"releases.{release.name}.file"
        try:
            found = _esp8266_facts(release) if release.chip == ESP8266 else cache.get(release.file)
        except ImageError as exc:
            kind = "an ESP8266 image" if release.chip == ESP8266 else "an ESP32 application image"
            problems.append(release.where("file").problem(field, f"{release.file_text} is not {kind}: {exc}"))
            continue
        except OSError:
            continue
        digest = (digests or {}).get(release.name)
        if digest is not None and digest.sha256 != found.sha256:
            problems.append(release.where("file").problem(
                field, f"{release.file_text} changed while the build read it; build again"))
            continue
        facts[release.name] = found
        problems.extend(check_release(release, found))
    return facts, problems


def _esp8266_facts(release: Release) -> ImageFacts:
    """An ESP8266 release (ESP8266httpUpdate, docs/clients.md): its image is recognised, not parsed.

    It carries no app descriptor, so its version is the declared one (`version_source: declared`).
    """
    assert release.file is not None  # noqa: S101 (checked by the caller)
    data = release.file.read_bytes()
    if not esp8266_image(data):
        raise ImageError("the release declares `chip: esp8266`, but the file does not start like one "
                         "(0xE9 and an ESP8266 segment, or 0xEA)")
    return ImageFacts(ESP8266, None, None, None, hashlib.sha256(data).hexdigest())


def release_chips(fleet: Fleet, facts: Mapping[str, ImageFacts]) -> dict[str, str | None]:
    """Each release's chip: declared, else the image's; None for a `url:` release that declares none."""
    return {name: release.chip or (facts[name].chip if name in facts else None)
            for name, release in fleet.releases.items()}


def answer_fields(release: Release, facts: ImageFacts | None) -> dict[str, Any]:
    """What the per-device answer says about the image, when known."""
    fields: dict[str, Any] = {}
    chip = release.chip or (facts.chip if facts else None)
    if chip:
        fields["chip"] = chip
    if facts is not None and facts.project_name:
        fields["project_name"] = facts.project_name
    secure = facts.secure_version if facts is not None else release.secure_version
    if secure is not None:
        fields["secure_version"] = secure
    return fields


def inspect_report(path: Path) -> tuple[ImageInfo | None, dict[str, Any]]:
    """`otapub inspect`: the parsed image (None when invalid) and a JSON-ready report."""
    try:
        info = inspect_image(path.read_bytes())
    except ImageError as exc:
        return None, {"file": str(path), "valid": False, "error": str(exc)}
    except OSError as exc:
        return None, {"file": str(path), "valid": False, "error": exc.strerror or str(exc)}
    return info, {"file": str(path), "valid": True, **info.to_dict()}


def describe(info: ImageInfo) -> list[str]:
    """Human-readable lines for `otapub inspect`."""
    lines = [
        f"chip:           {info.chip} (chip id {info.chip_id})",
        f"entry:          {info.entry:#010x}",
        f"size:           {info.size} bytes",
        f"checksum:       {'ok' if info.checksum_ok else 'BAD'}",
        f"sha256:         {'ok' if info.sha256_ok else 'none appended' if info.sha256_ok is None else 'BAD'}",
    ]
    if info.version is None:
        lines.append("app descriptor: none (declare the release's version and `version_source: declared`)")
    else:
        lines += [
            f"project_name:   {info.project_name}",
            f"version:        {info.version}",
            f"secure_version: {info.secure_version}",
            f"idf_ver:        {info.idf_ver}",
            f"built:          {info.date} {info.time}",
        ]
    lines.append(f"segments:       {len(info.segments)}")
    for i, seg in enumerate(info.segments):
        lines.append(f"  {i}: load {seg.load_addr:#010x}  length {seg.length:#x}  file offset {seg.offset:#x}")
    return lines
