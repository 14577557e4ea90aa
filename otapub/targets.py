"""Which release each device should run, and why. Data in, data out: no I/O.

Precedence (docs/fleet-yaml.md, "Which release a device gets"), first rule that applies wins:

1. a per-device pin (``release:`` or ``target_version:``);
2. a rollout that covers the device and whose open stage holds the device's cohort, trying
   rollouts from the highest rank down: ``priority`` (default 0), then the release's version —
   so a device outside the newest rollout's current stage falls through to the next one;
3. the device's channel (``channel:``, default ``stable``), when that channel is declared;
4. nothing: the answer says there is no release for the device.

Whatever rule gives a device a release, the release must fit it (hardware and chip): a build
error otherwise, never a silent skip (``compatibility_problems``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from otapub.errors import Problem
from otapub.model import Device, Fleet, Release, Rollout
from otapub.rollout import audience, bucket, channel_of, covers, current_stage, describe_gates, group_members, rank

PIN, ROLLOUT, CHANNEL, NONE = "pin", "rollout", "channel", "none"
_LISTED = 5  # devices named in one compatibility problem


@dataclass(frozen=True)
class Target:
    release: Release | None
    rule: str  # PIN, ROLLOUT, CHANNEL or NONE
    name: str | None = None  # the rollout's or channel's name
    stage: int | None = None  # the rollout's open stage, 0-based


NOTHING = Target(None, NONE)


@dataclass(frozen=True)
class Step:
    """One rule as `otapub explain` shows it."""

    rule: str
    name: str | None
    applies: bool  # the rule would give the device a release
    chosen: bool  # ... and it is the rule that does
    reason: str


@dataclass(frozen=True)
class _Live:
    rollout: Rollout
    release: Release | None
    scope: frozenset[str] | None  # None: every device
    stage: int | None  # open stage; None before the first
    percent: int  # 0 when paused or not started


class Rules:
    """The fleet's targeting rules evaluated at one moment, ready to decide many devices.

    ``chips`` maps release name to its chip (declared, else the image's); without it only
    declared chips are known.
    """

    def __init__(self, fleet: Fleet, now: datetime, chips: Mapping[str, str | None] | None = None):
        self.fleet = fleet
        self.now = now
        self.chips = dict(chips) if chips is not None else {n: r.chip for n, r in fleet.releases.items()}
        members = group_members(fleet)
        # sorted() is stable: equal ranks keep declaration order (validation forbids them sharing devices).
        ordered = sorted(fleet.rollouts.values(), key=lambda r: rank(r, fleet), reverse=True)
        self.rollouts: list[_Live] = []
        for rollout in ordered:
            stage = current_stage(rollout, now)
            percent = 0 if rollout.stopped or stage is None else rollout.stages[stage].percent
            self.rollouts.append(_Live(rollout, fleet.releases.get(rollout.release),
                                       audience(rollout, fleet, members), stage, percent))
        self._active = [(live.rollout.name, live.scope, live.percent, live.release, live.stage)
                        for live in self.rollouts if live.percent and live.release is not None]
        self.channels = {name: [fleet.releases[r] for r in channel.releases if r in fleet.releases]
                         for name, channel in fleet.channels.items()}

    # -- fitting ---------------------------------------------------------------------------
    def misfit(self, release: Release, device: Device) -> str | None:
        """Why the release does not fit the device (hardware, chip); None when it fits."""
        if release.hardware is not None and device.hardware not in release.hardware:
            have = f"hardware {device.hardware!r}" if device.hardware else "no `hardware:` declared"
            return f"{have}, release {release.name!r} is for {list(release.hardware)}"
        if device.chip is not None:
            chip = self.chips.get(release.name)
            if chip is None:
                return (f"chip {device.chip}, and release {release.name!r} has no known chip "
                        "(a `url:` release must declare `chip:`)")
            if chip != device.chip:
                return f"chip {device.chip}, release {release.name!r} is for {chip}"
        return None

    def channel_release(self, name: str, device: Device) -> Release | None:
        """The channel's release for this device: its only one, or the one that fits the device."""
        releases = self.channels.get(name)
        if not releases:
            return None
        if len(releases) == 1:
            return releases[0]
        return next((r for r in releases if self.misfit(r, device) is None), None)

    # -- deciding --------------------------------------------------------------------------
    def decide(self, device: Device) -> Target:
        """The device's target; the fast path of `explain` (same rules, no reasons)."""
        if device.release is not None:
            return Target(self.fleet.releases.get(device.release), PIN)
        mac12 = device.mac12
        for name, scope, percent, release, stage in self._active:
            if (scope is None or device.mac in scope) and bucket(name, mac12) < percent:
                return Target(release, ROLLOUT, name, stage)
        channel = channel_of(device)
        release = self.channel_release(channel, device)
        return Target(release, CHANNEL, channel) if release is not None else NOTHING

    def explain(self, device: Device) -> tuple[Target, list[Step]]:
        """The device's target and every rule considered, in precedence order, with reasons."""
        candidates: list[tuple[Step, Target | None]] = [self._pin_step(device)]
        candidates += [self._rollout_step(live, device) for live in self.rollouts]
        candidates.append(self._channel_step(device))
        target = next((t for _, t in candidates if t is not None), NOTHING)
        steps: list[Step] = []
        chosen_seen = False
        for step, found in candidates:
            chosen = found is not None and not chosen_seen
            chosen_seen = chosen_seen or chosen
            reason = step.reason if chosen or found is None else f"{step.reason}; but a rule above comes first"
            steps.append(Step(step.rule, step.name, found is not None, chosen, reason))
        assert target == self.decide(device), "explain and decide disagree"  # noqa: S101 (a bug, not input)
        return target, steps

    def _pin_step(self, device: Device) -> tuple[Step, Target | None]:
        if device.release is None:
            return Step(PIN, None, False, False, "no `release:` or `target_version:` on the device"), None
        how = (f"`target_version: {device.target_version}` picks release {device.release!r}"
               if device.target_version else f"`release: {device.release}`")
        where = device.where("target_version" if device.target_version else "release")
        return (Step(PIN, None, True, False, f"pinned by {how} ({where.file}:{where.line})"),
                Target(self.fleet.releases.get(device.release), PIN))

    def _rollout_step(self, live: _Live, device: Device) -> tuple[Step, Target | None]:
        rollout = live.rollout
        def step(reason: str) -> Step:
            return Step(ROLLOUT, rollout.name, False, False, reason)
        what = f"release {rollout.release!r}, priority {rollout.priority}"
        gates = describe_gates(rollout)
        if gates:
            what += f" (gates: {gates})"
        if not covers(live.scope, device.mac):
            return step(f"{what}: does not cover the device (to: {_audience_text(rollout, device)})"), None
        if rollout.halted is not None:
            return step(f"{what}: halted by its health gate ({rollout.halted}); offers its release to nobody"), None
        if rollout.paused:
            return step(f"{what}: paused (offers its release to nobody)"), None
        if live.release is None:
            return step(f"{what}: unknown release"), None
        total = len(rollout.stages)
        if live.stage is None:
            return step(f"{what}: not started; stage 1 opens at {_when(rollout.stages[0].not_before)}"), None
        cohort = bucket(rollout.name, device.mac12)
        stage = f"stage {live.stage + 1} of {total} ({live.percent}%)"
        if cohort < live.percent:
            return (Step(ROLLOUT, rollout.name, True, False, f"{what}: covers the device and its cohort bucket "
                                                             f"{cohort} is inside {stage}"),
                    Target(live.release, ROLLOUT, rollout.name, live.stage))
        later = next((i for i, s in enumerate(rollout.stages) if cohort < s.percent), None)
        if later is None:
            joins = "it is in no stage"
        elif rollout.stages[later].not_before is None:
            joins = (f"it joins at stage {later + 1} ({rollout.stages[later].percent}%), which opens when the "
                     "stages before it pass the advance gate")
        else:
            joins = (f"it joins at stage {later + 1} ({rollout.stages[later].percent}%, from "
                     f"{_when(rollout.stages[later].not_before)})")
        return step(f"{what}: covers the device, but its cohort bucket {cohort} is outside {stage}; {joins}; "
                    "until then it keeps the target the rules below give it"), None

    def _channel_step(self, device: Device) -> tuple[Step, Target | None]:
        name = channel_of(device)
        how = "(its `channel:`)" if device.channel else "(the default)"
        if name not in self.fleet.channels:
            return Step(CHANNEL, name, False, False, f"on channel {name!r} {how}, which is not declared"), None
        release = self.channel_release(name, device)
        if release is None:
            return Step(CHANNEL, name, False, False,
                        f"on channel {name!r} {how}, which has no release that fits the device"), None
        return (Step(CHANNEL, name, True, False, f"on channel {name!r} {how}: release {release.name!r}"),
                Target(release, CHANNEL, name))


def _when(moment: datetime | None) -> str:
    return "the start" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _audience_text(rollout: Rollout, device: Device) -> str:
    parts = []
    if rollout.groups:
        parts.append(f"groups {', '.join(rollout.groups)}")
    if rollout.channels:
        parts.append(f"channels {', '.join(rollout.channels)}; the device is on {channel_of(device)!r}")
    return "; ".join(parts) or "nobody"


def resolve(rules: Rules) -> dict[str, Target]:
    """Target per device MAC."""
    decide = rules.decide
    return {mac: decide(device) for mac, device in rules.fleet.devices.items()}


def resolve_targets(fleet: Fleet, now: datetime, chips: Mapping[str, str | None] | None = None
                    ) -> dict[str, Release | None]:
    """Target release per device MAC (see the module docstring for the precedence)."""
    return {mac: target.release for mac, target in resolve(Rules(fleet, now, chips)).items()}


@dataclass
class Explanation:
    device: Device
    now: datetime
    target: Target
    steps: list[Step] = field(default_factory=list)

    def lines(self) -> list[str]:
        d = self.device
        facts = ", ".join(f"{k} {v}" for k, v in (("device_id", d.device_id), ("hardware", d.hardware),
                                                 ("chip", d.chip), ("channel", channel_of(d))) if v)
        release = self.target.release
        if release is None:
            outcome = "no release: the answer says no update"
        else:
            rule = self.target.rule + (f" {self.target.name}" if self.target.name else "")
            outcome = f"release {release.name} (version {release.version}), by {rule}"
        out = [f"{d.mac} ({facts}) at {_when(self.now)}", f"target: {outcome}"]
        origin = f" (from group {d.client_from})" if d.client_from else ""
        fota = f"; esp32FOTA firmware type {d.firmware_type}" if d.firmware_type else ""
        out.append(f"clients: {', '.join(d.clients)}{origin}{fota}")
        if release is not None and (release.allow_downgrade or d.allow_downgrade):
            out.append("downgrade allowed: offered even when the device reports a newer version")
        out.append("rules, highest precedence first:")
        for step in self.steps:
            mark = "->" if step.chosen else "  "
            label = step.rule + (f" {step.name}" if step.name else "")
            out.append(f" {mark} {label}: {step.reason}")
        return out


def explain(fleet: Fleet, mac: str, now: datetime, chips: Mapping[str, str | None] | None = None) -> Explanation:
    """Why device ``mac`` (normalised, AA:BB:...) gets its target; KeyError when it is unknown."""
    device = fleet.devices[mac]
    target, steps = Rules(fleet, now, chips).explain(device)
    return Explanation(device, now, target, steps)


def compatibility_problems(rules: Rules) -> list[Problem]:
    """Every rule that could give a device a release that does not fit it (hardware, chip).

    Rollouts are checked for their whole audience, whatever their stage, so that a scheduled
    build never starts failing on its own; pinned devices are left out of rollouts and channels
    (the pin wins).
    """
    fleet = rules.fleet
    problems: list[Problem] = []
    unpinned: list[Device] = []
    for device in fleet.devices.values():
        if device.release is None:
            unpinned.append(device)
            continue
        release = fleet.releases.get(device.release)
        # The hardware of a pin is checked while loading (otapub.fleet); here: the chip.
        if release is not None and device.chip is not None and (why := rules.misfit(release, device)):
            key = "target_version" if device.target_version else "release"
            problems.append(device.where(key).problem(f"devices.{device.mac}.{key}", f"does not fit: {why}"))
    for live in rules.rollouts:
        rollout, release = live.rollout, live.release
        if rollout.stopped or release is None:
            continue
        bad = [(d, why) for d in unpinned if covers(live.scope, d.mac) and (why := rules.misfit(release, d))]
        if bad:
            problems.append(rollout.where("release").problem(
                f"rollouts.{rollout.name}.release",
                f"release {release.name!r} does not fit {len(bad)} device(s) this rollout covers: {_devices(bad)}; "
                "narrow `to:` (e.g. a group with a hardware selector)"))
    for name, channel in fleet.channels.items():
        releases = rules.channels.get(name, [])
        if not releases:
            continue
        none_fit: list[tuple[Device, str]] = []
        several: list[tuple[Device, str]] = []
        for device in unpinned:
            if channel_of(device) != name:
                continue
            misfits = [rules.misfit(r, device) for r in releases]
            fitting = [r.name for r, why in zip(releases, misfits, strict=True) if why is None]
            if not fitting:
                none_fit.append((device, "; ".join(w for w in misfits if w)))
            elif len(fitting) > 1:
                several.append((device, f"fits {', '.join(fitting)}"))
        if none_fit:
            problems.append(channel.pos.problem(
                f"channels.{name}", f"no release of channel {name!r} fits {len(none_fit)} device(s) on it: "
                                    f"{_devices(none_fit)}"))
        if several:
            problems.append(channel.pos.problem(
                f"channels.{name}", f"more than one release of channel {name!r} fits {len(several)} device(s): "
                                    f"{_devices(several)}; give the releases disjoint `hardware:` or `chip:`"))
    return problems


def _devices(found: list[tuple[Device, str]]) -> str:
    listed = "; ".join(f"{d.mac} ({d.pos.file}:{d.pos.line}: {why})" for d, why in found[:_LISTED])
    return listed + (f"; and {len(found) - _LISTED} more" if len(found) > _LISTED else "")
