"""Rollout mechanics: cohorts, stages in time, audiences. Data in, data out: no I/O.

Which rule wins for a device (pin > rollout > channel) is decided in ``otapub.targets``; this
module answers the questions a rule asks: is the device in the audience, which stage is open
now, is the device's cohort inside it.

Cohorts (docs/fleet-yaml.md, "Cohorts"): a device's bucket in a rollout is

    int.from_bytes(sha256(f"{rollout_name}\\n{MAC12}".encode("utf-8")).digest()[:8], "big") % 100

with MAC12 the 12 upper-case hex digits. A stage of ``percent: p`` holds the devices whose
bucket is below p, so a device that is in one stage is in every later (larger) stage, and the
same device lands in different cohorts in different rollouts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase

from otapub.model import DEFAULT_CHANNEL, Device, Fleet, Group, Rollout
from otapub.versions import parse_version

BUCKETS = 100
SELECTOR_FIELDS = ("hardware", "chip", "channel", "device_id")
_WILDCARDS = frozenset("*?[")


def bucket(rollout: str, mac12: str) -> int:
    """The device's cohort bucket (0-99) in the named rollout; stable across builds."""
    digest = hashlib.sha256(f"{rollout}\n{mac12}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_stage(bucket_: int, percent: int) -> bool:
    return bucket_ < percent


def current_stage(rollout: Rollout, now: datetime) -> int | None:
    """Index of the last stage whose start time has come (0-based); None before the first.

    A later stage without a start time (allowed with `advance_after`) waits for its gate: it
    opens when `otapub health --write` gives it one.
    """
    index = None
    for i, stage in enumerate(rollout.stages):
        if stage.not_before is not None and now < stage.not_before:
            break
        if stage.not_before is None and i > 0:
            break
        index = i
    return index


def waiting_for_gate(rollout: Rollout, now: datetime) -> int | None:
    """Index of the stage that waits for the open stage's `advance_after` gate; None if none does."""
    index = current_stage(rollout, now)
    if rollout.advance_after is None or index is None or index + 1 >= len(rollout.stages):
        return None
    return index + 1 if rollout.stages[index + 1].not_before is None else None


def current_percent(rollout: Rollout, now: datetime) -> int:
    """The share of the audience that gets the release now: 0 when paused, halted or not started."""
    if rollout.stopped:
        return 0
    index = current_stage(rollout, now)
    return 0 if index is None else rollout.stages[index].percent


def validity(rollouts: Iterable[Rollout], now: datetime) -> tuple[datetime | None, datetime | None]:
    """[from, until): the span around ``now`` in which no stage of a live rollout opens.

    A build is valid for that span only; ``None`` means unbounded on that side. The no-op
    fast path of ``otapub build`` rebuilds when ``now`` leaves it (a scheduled CI build then
    advances the stages although no file changed).
    """
    start: datetime | None = None
    until: datetime | None = None
    for rollout in rollouts:
        if rollout.stopped:
            continue
        for stage in rollout.stages:
            moment = stage.not_before
            if moment is None:
                continue
            if moment <= now:
                start = moment if start is None or moment > start else start
            elif until is None or moment < until:
                until = moment
    return start, until


def rank(rollout: Rollout, fleet: Fleet) -> tuple[int, tuple[int, ...]]:
    """Precedence among rollouts, highest first: `priority`, then the release's version."""
    release = fleet.releases.get(rollout.release)
    version = parse_version(release.version) if release is not None and release.version else ()
    return rollout.priority, version


def channel_of(device: Device) -> str:
    return device.channel or DEFAULT_CHANNEL


def _match(patterns: tuple[str, ...], value: str | None) -> bool:
    if value is None:
        return False
    return any(fnmatchcase(value, p) if _WILDCARDS & set(p) else value == p for p in patterns)


def matches(group: Group, device: Device) -> bool:
    """Explicit member, or every selector field matches (a field's patterns: any of)."""
    if device.mac in group.members:
        return True
    if not group.selector:
        return False
    values = {"hardware": device.hardware, "chip": device.chip, "channel": channel_of(device),
              "device_id": device.device_id}
    return all(_match(patterns, values[name]) for name, patterns in group.selector.items())


def group_members(fleet: Fleet) -> dict[str, frozenset[str]]:
    """Every group's devices (MACs), evaluated once for the whole fleet."""
    result: dict[str, frozenset[str]] = {}
    for name, group in fleet.groups.items():
        if group.selector:
            result[name] = frozenset(mac for mac, device in fleet.devices.items() if matches(group, device))
        else:
            result[name] = frozenset(mac for mac in group.members if mac in fleet.devices)
    return result


def audience(rollout: Rollout, fleet: Fleet, members: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The MACs a rollout is meant for; None means every device (`to: all`)."""
    if rollout.to_all:
        return None
    macs: set[str] = set()
    for name in rollout.groups:
        macs |= members.get(name, frozenset())
    if rollout.channels:
        wanted = set(rollout.channels)
        macs.update(mac for mac, device in fleet.devices.items() if channel_of(device) in wanted)
    return frozenset(macs)


def covers(scope: frozenset[str] | None, mac: str) -> bool:
    return scope is None or mac in scope


@dataclass
class StageCount:
    percent: int
    not_before: datetime | None
    devices: int  # audience devices whose cohort is inside this stage (cumulative)


@dataclass
class RolloutStatus:
    """Where a rollout stands at one moment, for `plan`/`explain` style reports."""

    name: str
    release: str
    state: str  # rollout_state(): "halted (why)", "paused", "scheduled", "stage N of M"
    stage: int | None  # 0-based index of the open stage
    audience: int
    stages: list[StageCount]
    receiving: int  # devices whose target comes from this rollout now (after precedence)
    gates: str | None = None  # the health gates, in words
    waiting: int | None = None  # index of the stage waiting for the advance gate

    def lines(self) -> list[str]:
        out = [f"rollout {self.name} ({self.release}): {self.state}, audience {self.audience} devices, "
               f"{self.receiving} get it now"]
        if self.gates:
            out.append(f"    gates: {self.gates}")
        for i, stage in enumerate(self.stages):
            mark = "*" if i == self.stage else " "
            if stage.not_before:
                when = "from " + stage.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
            elif i == 0:
                when = "from immediately"  # (wording kept: scripts read it)
            else:
                when = "waiting for the advance gate" if i == self.waiting else "after the advance gate"
            out.append(f"  {mark} stage {i + 1}: {stage.percent:3d}% {when}: {stage.devices} devices")
        return out


def rollout_state(rollout: Rollout, now: datetime) -> str:
    """"halted (why)", "paused", "scheduled" or "stage N of M" (and which stage waits for a gate)."""
    if rollout.halted is not None:
        return f"halted ({rollout.halted})"
    if rollout.paused:
        return "paused"
    index = current_stage(rollout, now)
    if index is None:
        return "scheduled"
    waiting = waiting_for_gate(rollout, now)
    return f"stage {index + 1} of {len(rollout.stages)}" + (
        f", stage {waiting + 1} waits for the advance gate" if waiting is not None else "")


def describe_gates(rollout: Rollout) -> str | None:
    """The rollout's health gates in words (for plan, explain and health)."""
    parts = []
    if rollout.halt_if is not None:
        g = rollout.halt_if
        parts.append(f"halt if >= {g.failed_percent:g}% of a stage's offered devices failed (at least "
                     f"{g.min_devices} offered; failed: old version reported {g.grace_hours:g} h after the offer, "
                     f"or silent {g.silent_hours:g} h)")
    if rollout.advance_after is not None:
        parts.append(f"advance after {rollout.advance_after.updated_percent:g}% of the open stage updated")
    return "; ".join(parts) or None


def rollout_status(fleet: Fleet, now: datetime, receiving: dict[str, int] | None = None) -> list[RolloutStatus]:
    """Devices per stage of every rollout; ``receiving`` maps rollout name -> devices it targets now."""
    members = group_members(fleet)
    result = []
    for rollout in fleet.rollouts.values():
        scope = audience(rollout, fleet, members)
        macs = fleet.devices.values() if scope is None else [fleet.devices[m] for m in scope]
        buckets = [0] * BUCKETS
        for device in macs:
            buckets[bucket(rollout.name, device.mac12)] += 1
        stages = [StageCount(s.percent, s.not_before, sum(buckets[: s.percent])) for s in rollout.stages]
        index = current_stage(rollout, now)
        result.append(RolloutStatus(rollout.name, rollout.release, rollout_state(rollout, now),
                                    None if rollout.stopped else index,
                                    sum(buckets), stages, (receiving or {}).get(rollout.name, 0),
                                    describe_gates(rollout), waiting_for_gate(rollout, now)))
    return result
