"""Load and validate the fleet YAML into the model; every problem is collected and reported.

All ``*.yaml``/``*.yml`` files under the fleet folder are merged: a large fleet can be split
over many files, but a release name or a MAC may be declared only once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from otapub.chips import KNOWN_CHIPS, known_chip
from otapub.clients import CLIENTS, ESP32FOTA
from otapub.errors import Problem, ValidationError
from otapub.fsutil import fleet_files
from otapub.located import Map, Pos, Seq
from otapub.mac import mac12 as to_mac12
from otapub.model import DEFAULT_CHANNEL, AdvanceGate, Channel, Device, Fleet, Group, HaltGate, Release, Rollout, Stage
from otapub.rollout import SELECTOR_FIELDS, audience, group_members, rank
from otapub.tokens import SCHEMES
from otapub.versions import parse_version
from otapub.yamlsource import YAMLProblem, load_yaml, read_yaml

TOP_LEVEL = ("releases", "devices", "groups", "channels", "rollouts")
RESERVED: tuple[str, ...] = ()
RELEASE_KEYS = ("version", "file", "url", "md5", "sha256", "size", "hardware", "chip", "version_source",
                "allow_downgrade", "secure_version", "allow_secure_version_rollback", "release_url")
# Set on a device, or on a group for its members (these two are assignments, not selectors).
CLIENT_KEYS = ("client", "firmware_type")
DEVICE_KEYS = ("device_id", "hardware", "release", "target_version", "token_scheme", "channel", "chip",
               "allow_downgrade", "allow_secure_version_rollback", *CLIENT_KEYS)
GROUP_KEYS = ("members", *SELECTOR_FIELDS, *CLIENT_KEYS)
ROLLOUT_KEYS = ("release", "to", "stages", "paused", "priority", "halt_if", "advance_after", "halted")
HALT_KEYS = ("failed_percent", "min_devices", "grace_hours", "silent_hours")
ADVANCE_KEYS = ("updated_percent",)
MAX_GATE_HOURS = 24 * 366 * 100  # a century: a gate's durations stay computable (not .inf, not 1e12)
STAGE_KEYS = ("percent", "not_before")
VERSION_SOURCES = ("image", "declared")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_URL = re.compile(r"https?://[^\s/]+/\S*")
_FIRMWARE_TYPE = re.compile(r"[!-~]{1,64}")
_CANONICAL_MAC = re.compile(r"(?:[0-9A-F]{2}:){5}[0-9A-F]{2}")
_DEVICE_KEY_SET = frozenset(DEVICE_KEYS)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, pos: Pos, field: str, message: str) -> None:
        self.problems.append(pos.problem(field, message))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _text(value: Any, pos: Pos, field: str, out: _Collector, pattern: re.Pattern | None = None,
          expected: str = "a string") -> str | None:
    if not isinstance(value, str) or not value.strip():
        hint = " (YAML read it as a number: quote it)" if isinstance(value, (int, float)) else ""
        out.add(pos, field, f"expected {expected}, found {value!r}{hint}")
        return None
    if pattern is not None and not pattern.fullmatch(value):
        out.add(pos, field, f"expected {expected}, found {value!r}")
        return None
    return value


def _version(value: Any, pos: Pos, field: str, out: _Collector) -> str | None:
    if isinstance(value, float):
        out.add(pos, field, f"{value!r} is a number in YAML (1.10 would read as 1.1): quote it, e.g. \"{value}\"")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        out.add(pos, field, f"expected a version of dotted numbers (e.g. \"1.3.8\"), found {value!r}")
        return None
    try:
        parse_version(value)
    except ValueError as exc:
        out.add(pos, field, str(exc))
        return None
    return value.strip()


def _choice(entry: Map, key: str, field: str, choices: Iterable[str], out: _Collector) -> str | None:
    """entry[key] when it is one of ``choices``; else a problem naming them."""
    value = entry[key]
    if value in choices:
        return value
    out.add(entry.where(key), f"{field}.{key}", f"unknown {key.replace('_', ' ')} {value!r} "
            f"(known: {', '.join(choices)})")
    return None


def _check_keys(entry: Map, allowed: Iterable[str], what: str, out: _Collector) -> None:
    for key in entry:
        if key not in allowed:
            out.add(entry.key_where(key), str(key), f"unknown key in {what} (allowed: {', '.join(allowed)})")


def _parse_release(name: str, entry: Any, pos: Pos, root: Path, out: _Collector) -> Release | None:
    if not isinstance(entry, Map):
        out.add(pos, f"releases.{name}", "expected a mapping of release fields")
        return None
    field = f"releases.{name}"
    _check_keys(entry, RELEASE_KEYS, f"release {name!r}", out)
    release = Release(name=name, version="", pos=pos, field_pos=dict(entry.value_pos))
    if "version" not in entry:
        out.add(entry.pos, f"{field}.version", "missing required field")
    else:
        release.version = _version(entry["version"], entry.where("version"), f"{field}.version", out) or ""
    has_file, has_url = "file" in entry, "url" in entry
    if has_file == has_url:
        out.add(entry.pos, field, "needs exactly one of `file:` (in the repository) or `url:`")
    if has_file:
        text = _text(entry["file"], entry.where("file"), f"{field}.file", out, expected="a file path")
        if text is not None:
            release.file_text = text
            release.file = _inside(root, text, entry.where("file"), f"{field}.file", out)
    if has_url:
        release.url = _text(entry["url"], entry.where("url"), f"{field}.url", out, _URL,
                            "an absolute http(s):// URL")
        for required in ("md5", "sha256", "size"):
            if required not in entry:
                out.add(entry.pos, f"{field}.{required}",
                        "required for a `url:` release (the file cannot be checked at build time, and "
                        "devices verify the MD5)")
    if "md5" in entry:
        md5 = _text(entry["md5"], entry.where("md5"), f"{field}.md5", out, _MD5, "32 hex digits (MD5)")
        release.md5 = md5.lower() if md5 else None
    if "sha256" in entry:
        sha = _text(entry["sha256"], entry.where("sha256"), f"{field}.sha256", out, _SHA256,
                    "64 hex digits (SHA-256)")
        release.sha256 = sha.lower() if sha else None
    if "size" in entry:
        size = entry["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            out.add(entry.where("size"), f"{field}.size", f"expected a positive number of bytes, found {size!r}")
        else:
            release.size = size
    if "hardware" in entry:
        release.hardware = _hardware_list(entry["hardware"], entry.where("hardware"), f"{field}.hardware", out)
    if "chip" in entry:
        release.chip = _chip(entry["chip"], entry.where("chip"), f"{field}.chip", out)
    if "version_source" in entry:
        release.version_source = _choice(entry, "version_source", field, VERSION_SOURCES, out) or release.version_source
    if "allow_downgrade" in entry:
        release.allow_downgrade = _flag(entry["allow_downgrade"], entry.where("allow_downgrade"),
                                        f"{field}.allow_downgrade", out)
    if "secure_version" in entry:
        value = entry["secure_version"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            out.add(entry.where("secure_version"), f"{field}.secure_version",
                    f"expected a whole number 0..4294967295 (esp_app_desc_t.secure_version), found {value!r}")
        else:
            release.secure_version = value
    if "allow_secure_version_rollback" in entry:
        release.allow_secure_version_rollback = _flag(entry["allow_secure_version_rollback"],
                                                      entry.where("allow_secure_version_rollback"),
                                                      f"{field}.allow_secure_version_rollback", out)
    if "release_url" in entry:
        release.release_url = _text(entry["release_url"], entry.where("release_url"), f"{field}.release_url", out,
                                    _URL, "an absolute http(s):// URL")
    return release


def _chip(value: Any, pos: Pos, field: str, out: _Collector) -> str | None:
    try:
        if isinstance(value, str):
            return known_chip(value)
    except ValueError:
        pass
    out.add(pos, field, f"unknown chip {value!r} (known: {', '.join(KNOWN_CHIPS)})")
    return None


def _flag(value: Any, pos: Pos, field: str, out: _Collector) -> bool:
    if not isinstance(value, bool):
        out.add(pos, field, f"expected true or false, found {value!r}")
        return False
    return value


def _hardware_list(value: Any, pos: Pos, field: str, out: _Collector) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        out.add(pos, field, f"expected a list of board names, found {value!r}")
        return None
    return tuple(value)


def _inside(root: Path, text: str, pos: Pos, field: str, out: _Collector) -> Path | None:
    """Resolve a repository-relative path; refuse anything that leaves the repository."""
    candidate = Path(text)
    if candidate.is_absolute():
        out.add(pos, field, f"{text!r} is absolute: give a path relative to the repository ({root})")
        return None
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        out.add(pos, field, f"{text!r} leads outside the repository ({root}) (`..` or a symlink)")
        return None
    return resolved


def _entry_text(entry: Map, key: str, field: str, out: _Collector, pattern: re.Pattern | None = None,
                expected: str = "a string") -> str | None:
    """``_text`` of ``entry[key]`` (problems name ``field.key``), with the position and the field
    name made only when there is a problem to report: this runs for every field of every device."""
    value = entry[key]
    if type(value) is str and value.strip() and (pattern is None or pattern.fullmatch(value)):
        return value
    return _text(value, entry.where(key), f"{field}.{key}", out, pattern, expected)


def _parse_device(key: Any, entry: Any, pos: Pos, out: _Collector) -> Device | None:
    if type(key) is str and _CANONICAL_MAC.fullmatch(key):  # the usual spelling: nothing to normalise
        mac, digits = key, key.replace(":", "")
    else:
        try:
            digits = to_mac12(key if isinstance(key, str) else str(key))
        except ValueError as exc:
            out.add(pos, "devices", str(exc))
            return None
        mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    field = f"devices.{mac}"
    if entry is None:
        entry = Map.empty(pos)
    if not isinstance(entry, Map):
        out.add(pos, field, "expected a mapping of device fields")
        return None
    if not _DEVICE_KEY_SET.issuperset(entry):
        _check_keys(entry, DEVICE_KEYS, f"device {mac}", out)
    # The parsed document is not used after this: the device keeps its positions table.
    device = Device(mac=mac, mac12=digits, pos=pos, field_pos=entry.value_pos)
    if "device_id" in entry:
        device.device_id = _entry_text(entry, "device_id", field, out)
    if "hardware" in entry:
        device.hardware = _entry_text(entry, "hardware", field, out)
    if "release" in entry:
        device.release = _entry_text(entry, "release", field, out, expected="a release name")
    if "target_version" in entry:
        device.target_version = _version(entry["target_version"], entry.where("target_version"),
                                         f"{field}.target_version", out)
        if "release" in entry:
            out.add(entry.where("target_version"), f"{field}.target_version",
                    "give either `release:` or `target_version:`, not both")
    if "token_scheme" in entry:
        device.token_scheme = _choice(entry, "token_scheme", field, sorted(SCHEMES), out)
    if "channel" in entry:
        device.channel = _entry_text(entry, "channel", field, out, _NAME, "a channel name")
    if "chip" in entry:
        device.chip = _chip(entry["chip"], entry.where("chip"), f"{field}.chip", out)
    if "allow_downgrade" in entry:
        device.allow_downgrade = _flag(entry["allow_downgrade"], entry.where("allow_downgrade"),
                                       f"{field}.allow_downgrade", out)
    if "allow_secure_version_rollback" in entry:
        device.allow_secure_version_rollback = _flag(entry["allow_secure_version_rollback"],
                                                     entry.where("allow_secure_version_rollback"),
                                                     f"{field}.allow_secure_version_rollback", out)
    if "client" in entry:
        device.clients = _clients(entry["client"], entry.where("client"), f"{field}.client", out) or device.clients
    if "firmware_type" in entry:
        device.firmware_type = _entry_text(entry, "firmware_type", field, out, _FIRMWARE_TYPE,
                                           "an esp32FOTA firmware type (printable, no spaces)")
    return device


def _clients(value: Any, pos: Pos, field: str, out: _Collector) -> tuple[str, ...] | None:
    """`client: httpupdate` or `client: [seed, idf]`: known names, each once."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        out.add(pos, field, f"expected a client or a list of clients ({', '.join(CLIENTS)}), found {value!r}")
        return None
    unknown = [n for n in names if n not in CLIENTS]
    if unknown:
        out.add(pos, field, f"unknown client {unknown[0]!r} (known: {', '.join(CLIENTS)})")
        return None
    if len(set(names)) != len(names):
        out.add(pos, field, f"a client is listed twice: {value!r}")
        return None
    return tuple(names)


def _section(doc: Map, key: str, out: _Collector) -> Map | None:
    value = doc[key]
    if value is None:
        return None
    if not isinstance(value, Map):
        out.add(doc.where(key), key, f"expected a mapping, found {type(value).__name__}")
        return None
    return value


def _strings(value: Any, pos: Pos, field: str, out: _Collector, expected: str) -> tuple[str, ...] | None:
    """A string or a non-empty list of non-empty strings."""
    if isinstance(value, str) and value.strip():
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    out.add(pos, field, f"expected {expected}, found {value!r}")
    return None


def _is_pattern(text: str) -> bool:
    return bool(set(text) & set("*?["))


def _parse_group(name: str, entry: Any, pos: Pos, out: _Collector) -> Group | None:
    field = f"groups.{name}"
    group = Group(name=name, pos=pos)
    members: Any = None
    if isinstance(entry, Seq):
        members = entry
    elif isinstance(entry, Map):
        _check_keys(entry, GROUP_KEYS, f"group {name!r}", out)
        group.field_pos = dict(entry.value_pos)
        for key in SELECTOR_FIELDS:
            if key not in entry:
                continue
            patterns = _strings(entry[key], entry.where(key), f"{field}.{key}", out,
                                f"a {key} or a list of them (shell-style * and ? allowed)")
            if patterns and key == "chip":
                patterns = tuple(p if _is_pattern(p) else _chip(p, entry.where(key), f"{field}.chip", out) or p
                                 for p in patterns)
            if patterns:
                group.selector[key] = patterns
        if "client" in entry:
            group.clients = _clients(entry["client"], entry.where("client"), f"{field}.client", out)
        if "firmware_type" in entry:
            group.firmware_type = _entry_text(entry, "firmware_type", field, out, _FIRMWARE_TYPE,
                                              "an esp32FOTA firmware type (printable, no spaces)")
        members = entry.get("members")
        if "members" in entry and not isinstance(members, Seq):
            out.add(entry.where("members"), f"{field}.members", f"expected a list of MAC addresses, found {members!r}")
            members = None
    else:
        out.add(pos, field, "expected a list of MAC addresses, or a mapping with `members:` and/or a selector "
                            f"({', '.join(SELECTOR_FIELDS)})")
        return None
    macs: list[str] = []
    for index, item in enumerate(members or []):
        where = members.item_pos[index]
        try:
            digits = to_mac12(item if isinstance(item, str) else str(item))
        except ValueError as exc:
            out.add(where, f"{field}.members", str(exc))
            continue
        mac = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
        if mac not in macs:
            macs.append(mac)
            group.field_pos[f"members:{mac}"] = (where.line, where.column)
    group.members = tuple(macs)
    if not members and not group.selector:
        out.add(pos, field, "a group needs `members:` and/or a selector "
                            f"({', '.join(SELECTOR_FIELDS)}); to reach every device, a rollout says `to: all`")
    return group


def _parse_channel(name: str, entry: Any, pos: Pos, out: _Collector) -> Channel | None:
    names = _strings(entry, pos, f"channels.{name}", out,
                     "a release name, or a list of release names (one per board or chip)")
    return Channel(name=name, releases=names, pos=pos) if names else None


def _moment(value: Any, pos: Pos, field: str, out: _Collector) -> datetime | None:
    """A point in time; a time without an offset is UTC."""
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        out.add(pos, field, f"expected a UTC time such as 2026-12-01T09:00:00Z, found {value!r}")
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stages(value: Any, pos: Pos, field: str, out: _Collector, gated: bool = False) -> tuple[Stage, ...]:
    if not isinstance(value, Seq) or not value:
        out.add(pos, field, f"expected a list of stages such as `- {{percent: 5}}`, found {value!r}")
        return ()
    stages: list[Stage] = []
    previous: Stage | None = None
    for index, item in enumerate(value):
        name = f"{field}[{index}]"
        if not isinstance(item, Map):
            out.add(value.item_pos[index], name,
                    f"expected a mapping with `percent:` and optional `not_before:`, found {item!r}")
            continue
        _check_keys(item, STAGE_KEYS, f"stage {index + 1}", out)
        if "percent" not in item:
            out.add(item.pos, f"{name}.percent", "missing required field")
            continue
        percent = item["percent"]
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            out.add(item.where("percent"), f"{name}.percent",
                    f"expected a whole percentage 1..100 (cohorts are 1% buckets), found {percent!r}")
            continue
        moment = None
        if "not_before" in item:
            moment = _moment(item["not_before"], item.where("not_before"), f"{name}.not_before", out)
        if previous is not None:
            if percent <= previous.percent:
                out.add(item.where("percent"), f"{name}.percent",
                        f"percentages must increase (they are cumulative): {percent} after {previous.percent}")
            if "not_before" not in item and not gated:  # gated: it waits for `otapub health --write`
                out.add(item.pos, f"{name}.not_before",
                        f"stage {index + 1} has no start time, so it would open together with stage {index}: "
                        "give it `not_before:` (UTC)")
            elif moment is not None and previous.not_before is not None and moment <= previous.not_before:
                out.add(item.where("not_before"), f"{name}.not_before",
                        f"stage times must increase: {_when(moment)} is not after {_when(previous.not_before)}")
        stage = Stage(percent=percent, not_before=moment, pos=item.pos)
        stages.append(stage)
        previous = stage
    return tuple(stages)


def _parse_rollout(name: str, entry: Any, pos: Pos, out: _Collector) -> Rollout | None:
    field = f"rollouts.{name}"
    if not isinstance(entry, Map):
        out.add(pos, field, "expected a mapping with `release:`, `to:` and optional `stages:`")
        return None
    _check_keys(entry, ROLLOUT_KEYS, f"rollout {name!r}", out)
    rollout = Rollout(name=name, release="", pos=pos, field_pos=dict(entry.value_pos))
    if "release" not in entry:
        out.add(entry.pos, f"{field}.release", "missing required field")
    else:
        rollout.release = _text(entry["release"], entry.where("release"), f"{field}.release", out,
                                expected="a release name") or ""
    to = entry.get("to")
    if "to" not in entry:
        out.add(entry.pos, f"{field}.to", "missing required field: `all`, or `{groups: [...]}` and/or "
                                          "`{channels: [...]}`")
    elif to == "all":
        rollout.to_all = True
    elif isinstance(to, Map) and to and all(k in ("groups", "channels") for k in to):
        for key in ("groups", "channels"):
            if key in to:
                names = _strings(to[key], to.where(key), f"{field}.to.{key}", out, f"a list of {key}")
                setattr(rollout, key, names or ())
                rollout.field_pos[f"to.{key}"] = to.value_pos[key]
    else:
        out.add(entry.where("to"), f"{field}.to",
                f"expected `all`, or a mapping with `groups:` and/or `channels:`, found {to!r}")
    if "advance_after" in entry:
        rollout.advance_after = _parse_advance(entry["advance_after"], entry.where("advance_after"),
                                               f"{field}.advance_after", out)
    if "halt_if" in entry:
        rollout.halt_if = _parse_halt(entry["halt_if"], entry.where("halt_if"), f"{field}.halt_if", out)
    if "halted" in entry:
        halted = entry["halted"]
        if halted is True or (isinstance(halted, str) and halted.strip()):
            rollout.halted = "halted" if halted is True else halted.strip()
        elif halted is not False:
            out.add(entry.where("halted"), f"{field}.halted",
                    f"expected why it was halted (text) or true, found {halted!r}")
    if "stages" in entry:
        rollout.stages = _parse_stages(entry["stages"], entry.where("stages"), f"{field}.stages", out,
                                       gated=rollout.advance_after is not None)
    else:
        rollout.stages = (Stage(percent=100, not_before=None, pos=entry.pos),)
    if "paused" in entry:
        rollout.paused = _flag(entry["paused"], entry.where("paused"), f"{field}.paused", out)
    if "priority" in entry:
        priority = entry["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int):
            out.add(entry.where("priority"), f"{field}.priority", f"expected a whole number, found {priority!r}")
        else:
            rollout.priority = priority
    return rollout


def _gate_number(gate: Map, key: str, field: str, out: _Collector, low: float, high: float | None,
                 whole: bool = False) -> Any:
    value = gate[key]
    # `not low <= value` also refuses NaN (YAML's .nan), whose every comparison is false.
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or not low <= value or (
            high is not None and value > high):
        span = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
        out.add(gate.where(key), f"{field}.{key}",
                f"expected {'a whole number' if whole else 'a number'} {span}, found {value!r}")
        return None
    return value


def _parse_halt(value: Any, pos: Pos, field: str, out: _Collector) -> HaltGate | None:
    if not isinstance(value, Map) or "failed_percent" not in value:
        out.add(pos, field, f"expected a mapping such as `{{failed_percent: 5, min_devices: 20}}`, found {value!r}")
        return None
    _check_keys(value, HALT_KEYS, "halt_if", out)
    limits = {"failed_percent": (0, 100, False), "min_devices": (1, None, True),
              "grace_hours": (0, MAX_GATE_HOURS, False), "silent_hours": (0, MAX_GATE_HOURS, False)}
    found = {}
    for key in HALT_KEYS:
        if key in value:
            number = _gate_number(value, key, field, out, *limits[key])
            if number is None:
                return None
            found[key] = number
    return HaltGate(**found)


def _parse_advance(value: Any, pos: Pos, field: str, out: _Collector) -> AdvanceGate | None:
    if not isinstance(value, Map) or "updated_percent" not in value:
        out.add(pos, field, f"expected a mapping such as `{{updated_percent: 95}}`, found {value!r}")
        return None
    _check_keys(value, ADVANCE_KEYS, "advance_after", out)
    number = _gate_number(value, "updated_percent", field, out, 0, 100)
    return AdvanceGate(number) if number is not None else None


_RULE_SECTIONS: dict[str, tuple[str, Callable[..., Any]]] = {
    "groups": ("group", _parse_group),
    "channels": ("channel", _parse_channel),
    "rollouts": ("rollout", _parse_rollout),
}


def _parse_rules(doc: Map, fleet: Fleet, out: _Collector) -> None:
    """Merge a document's groups, channels and rollouts into the fleet (names unique across files)."""
    for key, (what, parse) in _RULE_SECTIONS.items():
        section = _section(doc, key, out) if key in doc else None
        store: dict[str, Any] = getattr(fleet, key)
        for name, entry in (section or {}).items():
            pos = section.key_where(name)
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                out.add(pos, key, f"{what} name {name!r}: use letters, digits, '.', '_', '+', '-'")
                continue
            if name in store:
                first = store[name].pos
                out.add(pos, f"{key}.{name}", f"duplicate {what} name (first declared at {first.file}:{first.line})")
                continue
            # A channel is one value: problems with it point at that value.
            parsed = parse(name, entry, section.where(name) if key == "channels" else pos, out)
            if parsed is not None:
                store[name] = parsed


def _check_rules(fleet: Fleet, out: _Collector) -> None:
    """References between rules, and rollouts that would compete for a device."""
    channels = dict.fromkeys([*fleet.channels, DEFAULT_CHANNEL])
    for group in fleet.groups.values():
        for mac in group.members:
            if mac not in fleet.devices:
                out.add(group.where(f"members:{mac}"), f"groups.{group.name}.members",
                        f"unknown device {mac} (not declared under `devices:`)")
        for name in group.selector.get("channel", ()):
            if not _is_pattern(name) and name not in channels:
                out.add(group.where("channel"), f"groups.{group.name}.channel",
                        f"unknown channel {name!r}" + _suggest(name, channels))
    for channel in fleet.channels.values():
        for name in channel.releases:
            if name not in fleet.releases:
                out.add(channel.pos, f"channels.{channel.name}",
                        f"unknown release {name!r}" + _suggest(name, fleet.releases))
    for device in fleet.devices.values():
        if device.channel is not None and device.channel not in channels:
            out.add(device.where("channel"), f"devices.{device.mac}.channel",
                    f"unknown channel {device.channel!r}" + _suggest(device.channel, channels))
    live: list[Rollout] = []
    for rollout in fleet.rollouts.values():
        field = f"rollouts.{rollout.name}"
        ok = bool(rollout.release) and bool(rollout.stages)
        if rollout.release and rollout.release not in fleet.releases:
            out.add(rollout.where("release"), f"{field}.release",
                    f"unknown release {rollout.release!r}" + _suggest(rollout.release, fleet.releases))
            ok = False
        for key, known in (("groups", fleet.groups), ("channels", channels)):
            for name in getattr(rollout, key):
                if name not in known:
                    out.add(rollout.where(f"to.{key}"), f"{field}.to.{key}",
                            f"unknown {key[:-1]} {name!r}" + _suggest(name, known))
                    ok = False
        if ok and not rollout.stopped:
            live.append(rollout)
    _check_overlaps(fleet, live, out)


def _or_everyone(scope: frozenset[str] | None, everyone: frozenset[str]) -> frozenset[str]:
    return everyone if scope is None else scope


def _check_overlaps(fleet: Fleet, rollouts: list[Rollout], out: _Collector) -> None:
    """Two rollouts may share a device only when precedence (priority, then version) orders them.

    Checked for every rollout that is not paused, whether or not its first stage has opened:
    a scheduled build must never start failing on its own.
    """
    if len(rollouts) < 2:
        return
    members = group_members(fleet)
    everyone = frozenset(fleet.devices)
    scopes = {r.name: _or_everyone(audience(r, fleet, members), everyone) for r in rollouts}
    for index, later in enumerate(rollouts):
        for earlier in rollouts[:index]:
            if rank(later, fleet) != rank(earlier, fleet):
                continue
            shared = scopes[later.name] & scopes[earlier.name]
            if not shared:
                continue
            version = fleet.releases[later.release].version
            out.add(later.pos, f"rollouts.{later.name}",
                    f"{len(shared)} device(s) (e.g. {min(shared)}) are also covered by rollout {earlier.name!r} "
                    f"({earlier.pos.file}:{earlier.pos.line}) with the same priority ({later.priority}) and "
                    f"release version ({version}): give them different `priority:` values, or disjoint audiences")


def parse_documents(docs: Iterable[tuple[Path, Any]], root: Path, out: _Collector) -> Fleet:
    """Merge parsed YAML documents into a Fleet, collecting problems into ``out``."""
    releases: dict[str, Release] = {}
    devices: dict[str, Device] = {}
    files: list[Path] = []
    rules = Fleet(releases=releases, devices=devices, files=files)  # collects groups, channels, rollouts
    for path, doc in docs:
        files.append(path)
        if doc is None:
            continue
        if not isinstance(doc, Map):
            out.add(Pos(_rel(path, root), 1, 1), "", f"expected a mapping with some of {', '.join(TOP_LEVEL)}")
            continue
        for key in doc:
            if key in RESERVED:
                out.add(doc.key_where(key), str(key), "not supported by this version of otapub")
            elif key not in TOP_LEVEL:
                out.add(doc.key_where(key), str(key),
                        f"unknown top-level key (allowed: {', '.join(TOP_LEVEL)})")
        section = _section(doc, "releases", out) if "releases" in doc else None
        for name, entry in (section or {}).items():
            pos = section.key_where(name)
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                out.add(pos, "releases", f"release name {name!r}: use letters, digits, '.', '_', '+', '-'")
                continue
            if name in releases:
                first = releases[name].pos
                out.add(pos, f"releases.{name}",
                        f"duplicate release name (first declared at {first.file}:{first.line})")
                continue
            release = _parse_release(name, entry, pos, root, out)
            if release is not None:
                releases[name] = release
        section = _section(doc, "devices", out) if "devices" in doc else None
        for key, entry in (section or {}).items():
            device = _parse_device(key, entry, section.key_where(key), out)
            if device is None:
                continue
            if device.mac in devices:
                first = devices[device.mac].pos
                out.add(device.pos, f"devices.{device.mac}",
                        f"duplicate device (same MAC as {first.file}:{first.line}:{first.column})")
                continue
            devices[device.mac] = device
        _parse_rules(doc, rules, out)
    fleet = Fleet(releases=releases, devices=devices, files=files, groups=rules.groups, channels=rules.channels,
                  rollouts=rules.rollouts)
    _resolve_pins(fleet, out)
    _check_rules(fleet, out)
    _assign_clients(fleet, out)
    return fleet


def _assign_clients(fleet: Fleet, out: _Collector) -> None:
    """A group's `client:` / `firmware_type:` go to its members that do not set their own.

    Two groups that assign different values to one device are an error: no silent precedence.
    """
    assigning = [g for g in fleet.groups.values() if g.clients is not None or g.firmware_type is not None]
    if assigning:
        _assign_from_groups(fleet, assigning, out)
    if any(p.field.endswith(".client") for p in out.problems):
        return  # a device's clients are not known yet
    for mac, device in fleet.devices.items():
        if device.firmware_type is not None and ESP32FOTA not in device.clients and "firmware_type" in device.field_pos:
            out.add(device.where("firmware_type"), f"devices.{mac}.firmware_type",
                    "only client esp32fota reads `firmware_type:`, and this device speaks "
                    f"{', '.join(device.clients)}: add esp32fota to its `client:`, or remove `firmware_type:`")


def _assign_from_groups(fleet: Fleet, assigning: list[Group], out: _Collector) -> None:
    members = group_members(fleet)
    for key, attr in (("client", "clients"), ("firmware_type", "firmware_type")):
        given: dict[str, Group] = {}
        for group in assigning:
            value = getattr(group, attr)
            if value is None:
                continue
            for mac in sorted(members.get(group.name, ())):
                device = fleet.devices[mac]
                if key in device.field_pos:
                    continue  # the device's own wins
                first = given.get(mac)
                if first is not None and getattr(first, attr) != value:
                    other = getattr(first, attr)
                    shown = ", ".join(other) if isinstance(other, tuple) else other
                    out.add(group.where(key), f"groups.{group.name}.{key}",
                            f"device {mac} is also in group {first.name!r} ({first.pos.file}:{first.pos.line}), "
                            f"which gives it {key} {shown}: set `{key}:` on the device, or make the groups disjoint")
                    continue
                given[mac] = group
                setattr(device, attr, value)
                if attr == "clients":
                    device.client_from = group.name


def _resolve_pins(fleet: Fleet, out: _Collector) -> None:
    by_version: dict[tuple[int, ...], list[Release]] = {}
    for release in fleet.releases.values():
        if release.version:
            by_version.setdefault(parse_version(release.version), []).append(release)
    for device in fleet.devices.values():
        field = f"devices.{device.mac}"
        if device.release is not None:
            release = fleet.releases.get(device.release)
            if release is None:
                out.add(device.where("release"), f"{field}.release", f"unknown release {device.release!r}"
                        + _suggest(device.release, fleet.releases))
            elif not release.fits_hardware(device.hardware):
                out.add(device.where("release"), f"{field}.release",
                        f"release {release.name!r} is for {list(release.hardware)}, "
                        f"not for this device's hardware {device.hardware!r}")
        elif device.target_version is not None:
            candidates = by_version.get(parse_version(device.target_version), [])
            fitting = [r for r in candidates if r.fits_hardware(device.hardware)]
            if len(fitting) == 1:
                device.release = fitting[0].name
            elif not fitting:
                why = (f" ({len(candidates)} with that version, none for hardware {device.hardware!r})"
                       if candidates else "")
                out.add(device.where("target_version"), f"{field}.target_version",
                        f"no release has version {device.target_version}{why}")
            else:
                names = ", ".join(sorted(r.name for r in fitting))
                out.add(device.where("target_version"), f"{field}.target_version",
                        f"ambiguous: releases {names} all have version {device.target_version} "
                        "and fit this device; name one with `release:`")


def _suggest(name: str, known: dict[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_fleet(fleet_dir: Path, root: Path,
               read: Callable[[Path, str], Any] | None = None, extra: Iterable[Path] = ()) -> Fleet:
    """Read every YAML file under fleet_dir (and ``extra`` ones); raise ValidationError listing all problems."""
    out = _Collector()
    extra = set(extra)
    if not fleet_dir.is_dir() and not extra:
        raise ValidationError([Problem(str(fleet_dir), None, None, "fleet_dir", "fleet folder not found")])
    paths = sorted({*(fleet_files(fleet_dir) if fleet_dir.is_dir() else ()), *extra})

    def documents() -> Iterator[tuple[Path, Any]]:
        # One file at a time: a file's parsed form is dropped as soon as its entries are validated
        # (a 100,000-device fleet's documents are a third of a build's memory).
        for path in paths:
            try:
                yield path, (read or read_yaml)(path, _rel(path, root))
            except YAMLProblem as exc:
                out.problems.append(exc.problem)

    fleet = parse_documents(documents(), root, out)
    if out.problems:
        raise ValidationError(out.problems)
    return fleet


def load_fleet_texts(fleet_dir: Path, root: Path, texts: Mapping[Path, str]) -> Fleet:
    """Like load_fleet, with some files' contents given in memory (files that need not exist yet).

    ``otapub device`` validates an edit this way before it writes anything.
    """
    def read(path: Path, name: str) -> Any:
        return load_yaml(texts[path], name) if path in texts else read_yaml(path, name)

    return load_fleet(fleet_dir, root, read, extra=texts)
