"""The validated fleet: plain data, no I/O. YAML → model → site."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from otapub.yamlsource import Pos


@dataclass
class Release:
    name: str
    version: str
    pos: Pos
    file: Path | None = None  # absolute, inside the repository
    file_text: str | None = None  # as written in the YAML
    url: str | None = None
    md5: str | None = None  # declared (lower case); verified for files
    sha256: str | None = None
    size: int | None = None
    hardware: tuple[str, ...] | None = None  # None: any board
    field_pos: dict[str, Pos] = field(default_factory=dict)

    def where(self, name: str) -> Pos:
        return self.field_pos.get(name, self.pos)

    def fits_hardware(self, hardware: str | None) -> bool:
        return self.hardware is None or (hardware is not None and hardware in self.hardware)


@dataclass
class Device:
    mac: str  # AA:BB:CC:DD:EE:FF
    mac12: str  # AABBCCDDEEFF
    pos: Pos
    device_id: str | None = None
    hardware: str | None = None
    release: str | None = None  # pinned release name (resolved from target_version if needed)
    target_version: str | None = None  # seed-style pin, as written
    token_scheme: str | None = None  # None: the config's default
    field_pos: dict[str, Pos] = field(default_factory=dict)

    def where(self, name: str) -> Pos:
        return self.field_pos.get(name, self.pos)


@dataclass
class Fleet:
    releases: dict[str, Release]
    devices: dict[str, Device]  # by normalised MAC
    files: list[Path]
