"""Render a checked fleet into what the site will hold, in memory: one JSON answer per device.

Each answer is encoded once, here: the release's part of an answer is encoded once per
release, and each device adds three strings (``AnswerEncoder``). When the answers are signed
(otapub.secure_build), the signed form is encoded from the same pieces, never by decoding
an answer and encoding it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from otapub.check import Checked, check_fleet
from otapub.clients import DEFAULT_CLIENTS, ManifestTarget, device_manifests
from otapub.config import Config
from otapub.errors import Problem, ValidationError
from otapub.firmware import DigestCache, Digests, firmware_site_path, firmware_url
from otapub.inspection import ImageCache, ImageFacts, answer_fields
from otapub.layout import answer_path
from otapub.model import Fleet
from otapub.signing import SIGNED_FIELDS
from otapub.targets import Target
from otapub.tokens import DeviceTokens

Encode = Callable[[Any, Any, str], bytes]  # (device_id, hardware, mac) -> the answer's bytes


@dataclass
class Plan:
    """Everything a build would publish, in memory."""

    checked: Checked
    answers: dict[str, bytes]  # site path -> JSON bytes
    firmware: dict[str, Path]  # site path -> source file
    release_fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # release -> its answer fields
    # Kept only when the answers are to be signed: site path -> the answer's encoder and device fields.
    signable: dict[str, tuple[AnswerEncoder, Any, Any, str]] = field(default_factory=dict)
    # Set when the answers are signed (otapub.secure_build): the highest version issued so far.
    manifest_version: int | None = None

    @property
    def fleet(self) -> Fleet:
        return self.checked.fleet

    @property
    def digests(self) -> dict[str, Digests]:
        return self.checked.digests

    @property
    def images(self) -> dict[str, ImageFacts]:
        return self.checked.images

    @property
    def targets(self) -> dict[str, Target]:
        return self.checked.targets

    @property
    def releases(self) -> int:
        """Releases some device is meant to get."""
        return len(self.release_fields)

    @property
    def valid_from(self) -> datetime | None:
        return self.checked.valid_from

    @property
    def valid_until(self) -> datetime | None:
        return self.checked.valid_until


def answer_secret(config: Config) -> str:
    """The secret answers are keyed under: refused when missing or a placeholder (any placeholder
    secret stops a build)."""
    config.refuse_placeholders()
    return config.secret("the answers' paths derive from it")


def release_fields(config: Config, checked: Checked, release_names: Iterable[str]) -> tuple[
        dict[str, dict[str, Any]], dict[str, Path]]:
    """Each release's part of an answer, and the firmware files the site must hold (site path -> source)."""
    fields_by_release: dict[str, dict[str, Any]] = {}
    firmware: dict[str, Path] = {}
    for name in release_names:
        release = checked.fleet.releases[name]
        d = checked.digests[name]
        url = firmware_url(config.base_url, release, d)
        if release.url is None and release.file is not None:
            firmware[firmware_site_path(d.sha256, release.file.name)] = release.file
        fields: dict[str, Any] = {
            "release": release.name, "firmware_version": release.version, "firmware_url": url,
            "checksum": d.md5, "md5": d.md5, "sha256": d.sha256, "size": d.size,
        }
        if release.hardware is not None:
            fields["release_hardware"] = list(release.hardware)
        fields.update(answer_fields(release, checked.images.get(release.name)))
        fields_by_release[release.name] = fields
    return fields_by_release, firmware


def render(config: Config, checked: Checked, signing: bool = False) -> Plan:
    """Every device's answer, keyed by its site path. ``signing``: keep what signing needs."""
    token = DeviceTokens(answer_secret(config), config.token_scheme).canonical
    targets = checked.targets
    # dict.fromkeys, not a set: the releases in the fleet's order, the same from build to build.
    names = dict.fromkeys(t.release.name for t in targets.values() if t.release is not None)
    fields_by_release, firmware = release_fields(config, checked, names)
    answers: dict[str, bytes] = {}
    signable: dict[str, tuple[AnswerEncoder, Any, Any, str]] = {}
    problems: list[Problem] = []
    encoders: dict[tuple[str | None, bool, tuple[str, ...]], AnswerEncoder] = {}
    encodes: dict[tuple[str | None, bool, tuple[str, ...]], Encode] = {}
    manifest_targets: dict[str, ManifestTarget] = {}  # by release: the same for every device it targets
    for mac, device in checked.fleet.devices.items():
        canonical = token(device)
        path = answer_path(canonical, device.mac12)
        if path in answers:  # cannot happen with distinct MACs; refuse rather than overwrite
            problems.append(device.pos.problem(f"devices.{mac}", f"answer path collision at {path}"))
            continue
        release = targets[mac].release
        # allow_downgrade: the shim then offers the release below the reported version too
        kind = (release.name if release is not None else None,
                release is not None and (release.allow_downgrade or device.allow_downgrade), device.clients)
        encode = encodes.get(kind)
        if encode is None:
            fields: dict[str, Any] = dict(fields_by_release[release.name]) if release is not None \
                else {"release": None}
            if kind[1]:
                fields["allow_downgrade"] = True
            if device.clients != DEFAULT_CLIENTS:  # the shim answers only the protocols a device declares
                fields["clients"] = list(device.clients)
            encoders[kind] = AnswerEncoder(fields)
            encode = encodes[kind] = encoders[kind].encode
        answers[path] = encode(device.device_id, device.hardware, mac)
        if signing:
            signable[path] = (encoders[kind], device.device_id, device.hardware, mac)
        if device.clients != DEFAULT_CLIENTS:  # checked by otapub.check: every client can be given the target
            target = None
            if release is not None:
                target = manifest_targets.get(release.name)
                if target is None:
                    of_release = fields_by_release[release.name]
                    target = manifest_targets[release.name] = ManifestTarget.of(
                        release, of_release["firmware_url"], checked.digests[release.name], of_release.get("chip"))
            answers.update(device_manifests(device, canonical, target))
    if problems:
        raise ValidationError(problems)
    return Plan(checked, answers, firmware, fields_by_release, signable)


def plan_site(config: Config, now: datetime | None = None, cache: DigestCache | None = None,
              images: ImageCache | None = None, fleet: Fleet | None = None, signing: bool = False) -> Plan:
    """Check the fleet (otapub.check) and render it; write nothing.

    ``fleet``: check this one instead of loading it (an edit checked before it is written).
    """
    checked = check_fleet(config, now, cache, images, fleet)
    return render(config, checked, signing)


DEVICE_FIELDS = ("device_id", "hardware", "mac")  # an answer's own fields, in key order


class AnswerEncoder:
    """``canonical_json({device_id, hardware, mac, **fields})`` as a function of the device's fields.

    Keys are sorted and separated without spaces (signing.canonical_json), so an answer is a
    fixed sequence of ``"key":value`` items: the release's are encoded once here, and each
    device costs three string encodings and a join instead of a JSON encoding of the whole
    answer. ``signed`` encodes the same answer with the fields signing adds.
    """

    _dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode

    def __init__(self, fields: dict[str, Any]):
        if any(name in fields for name in SIGNED_FIELDS):
            raise ValueError("an answer field has the name of one that signing adds")
        self.fields = fields
        self.encode = self._fast(self._pieces(DEVICE_FIELDS))
        self._signed: tuple[list[str], str] | None = None

    def _pieces(self, holes: tuple[str, ...]) -> tuple[list[str], str]:
        """The text before each hole's value, in key order, and the closing text."""
        dumps = self._dumps
        pieces: list[str] = []
        text = "{"
        for index, key in enumerate(sorted([*self.fields, *holes])):
            text += "," if index else ""
            if key in holes:
                pieces.append(text + dumps(key) + ":")
                text = ""
            else:
                text += f"{dumps(key)}:{dumps(self.fields[key])}"
        return pieces, text + "}"

    def _fast(self, layout: tuple[list[str], str]) -> Encode:
        (first, second, third), last = layout
        dumps = self._dumps
        string = json.encoder.encode_basestring  # what dumps does with a str (ensure_ascii=False), minus its checks

        def encode(device_id: Any, hardware: Any, mac: str) -> bytes:
            return "".join((first, string(device_id) if type(device_id) is str else dumps(device_id),
                            second, string(hardware) if type(hardware) is str else dumps(hardware),
                            third, string(mac), last)).encode("utf-8")

        return encode

    def signed(self, device_id: Any, hardware: Any, mac: str, expires: str, manifest_version: int) -> bytes:
        """The answer with ``expires`` and ``manifest_version``: the bytes a signature covers."""
        if self._signed is None:
            self._signed = self._pieces(DEVICE_FIELDS + SIGNED_FIELDS)
        pieces, last = self._signed
        values = {"device_id": device_id, "hardware": hardware, "mac": mac, "expires": expires,
                  "manifest_version": manifest_version}
        dumps = self._dumps
        text = "".join(piece + dumps(values[key]) for piece, key in zip(pieces, sorted(values), strict=True))
        return (text + last).encode("utf-8")
