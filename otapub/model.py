"""The validated fleet: plain data, no I/O. YAML → model → site."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from otapub.located import Pos


class _Located:
    """Where a declaration stands: ``pos``, and in ``field_pos`` the 1-based (line, column) of
    each field's value in the same file (plain pairs: a Pos is made only when one is reported)."""

    pos: Pos  # declared by each dataclass below (annotations of a plain base are not fields)
    field_pos: dict[str, tuple[int, int]]

    def where(self, name: str) -> Pos:
        found = self.field_pos.get(name)
        return Pos(self.pos.file, *found) if found else self.pos


@dataclass
class Release(_Located):
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
    chip: str | None = None  # declared, esptool's name (esp32c6); checked against the image
    version_source: str = "image"  # "image": the app descriptor must carry `version`; "declared"
    allow_downgrade: bool = False  # may be offered to devices that report a newer version
    secure_version: int | None = None  # declared anti-rollback counter; checked against the image
    allow_secure_version_rollback: bool = False  # may replace a target with a higher secure_version
    release_url: str | None = None  # release notes, named in an ESPHome manifest
    field_pos: dict[str, tuple[int, int]] = field(default_factory=dict)

    def fits_hardware(self, hardware: str | None) -> bool:
        return self.hardware is None or (hardware is not None and hardware in self.hardware)


DEFAULT_CLIENTS = ("seed",)  # the seed's protocol (otapub.clients)


@dataclass
class Device(_Located):
    mac: str  # AA:BB:CC:DD:EE:FF
    mac12: str  # AABBCCDDEEFF
    pos: Pos
    device_id: str | None = None
    hardware: str | None = None
    release: str | None = None  # pinned release name (resolved from target_version if needed)
    target_version: str | None = None  # seed-style pin, as written
    token_scheme: str | None = None  # None: the config's default
    channel: str | None = None  # None: the default channel (stable)
    chip: str | None = None  # declared; its target release must be for this chip
    allow_downgrade: bool = False  # may be offered a release older than it reports
    allow_secure_version_rollback: bool = False  # its target may move to a lower secure_version
    # The update clients it speaks (otapub.clients), as declared on the device, else on a group, else
    # the default; ``client_from`` says where it came from (a group's name; None: the device or default).
    clients: tuple[str, ...] = DEFAULT_CLIENTS
    client_from: str | None = None
    firmware_type: str | None = None  # esp32FOTA's firmware type (its manifest's `type`)
    field_pos: dict[str, tuple[int, int]] = field(default_factory=dict)


DEFAULT_CHANNEL = "stable"


@dataclass
class Group(_Located):
    """A named set of devices: explicit members and/or a selector on device fields."""

    name: str
    pos: Pos
    members: tuple[str, ...] = ()  # normalised MACs
    selector: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field -> patterns (any of)
    clients: tuple[str, ...] | None = None  # assigned to its members that declare none themselves
    firmware_type: str | None = None  # likewise
    field_pos: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Channel:
    """A named release track; a device is on one channel. Several releases: one per board/chip."""

    name: str
    releases: tuple[str, ...]
    pos: Pos


@dataclass(frozen=True)
class Stage:
    percent: int  # cumulative share of the audience, 1-100
    not_before: datetime | None  # UTC; None: no earlier than the previous stage
    pos: Pos


@dataclass(frozen=True)
class HaltGate:
    """`halt_if`: the rollout halts when this share of a stage's offered devices failed."""

    failed_percent: float
    min_devices: int = 20  # fewer offered devices than this never trip the gate
    grace_hours: float = 1.0  # an offered device reporting its old version later than this failed
    silent_hours: float = 48.0  # an offered device not heard of for this long failed


@dataclass(frozen=True)
class AdvanceGate:
    """`advance_after`: the next stage may open when this share of the open stage updated."""

    updated_percent: float


@dataclass
class Rollout(_Located):
    """Which release a share of an audience gets, in stages that open at given times."""

    name: str
    release: str
    pos: Pos
    to_all: bool = False
    groups: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = ()
    paused: bool = False
    priority: int = 0
    halt_if: HaltGate | None = None
    advance_after: AdvanceGate | None = None
    halted: str | None = None  # why a health gate halted it (`halted:`); offers nothing, like paused
    field_pos: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        """Paused or halted: offers its release to nobody."""
        return self.paused or self.halted is not None


@dataclass
class Fleet:
    releases: dict[str, Release]
    devices: dict[str, Device]  # by normalised MAC
    files: list[Path]
    groups: dict[str, Group] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
