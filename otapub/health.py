"""Rollout health: per stage, how many offered devices updated, failed or went silent.

Read from the check-in store (otapub.checkinstore), judged against the rollout's gates
(``halt_if``, ``advance_after`` in rollouts.yaml; docs/health.md):

- *offered*: the shim offered the device the rollout's version (its first such check-in);
- *updated*: it reports that version now;
- *failed*: it checked in more than ``grace_hours`` after the offer and still reports another
  version (the bootloader rolled back, or the flash failed);
- *silent*: it has not checked in for ``silent_hours`` since the offer;
- *pending*: offered, and none of the above yet.

A stage is the share of the audience its percentage adds to the one before (its own cohort).
A stage trips ``halt_if`` when at least ``min_devices`` were offered and failed + silent reach
``failed_percent`` of them; the open stage passes ``advance_after`` when ``updated_percent``
of its cohort updated. Halting and advancing are commits: :func:`write_gates` edits the
rollout's YAML (``halted:``; the waiting stage's ``not_before:``) for review as a pull request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from otapub.checkins import Seen
from otapub.checkinstore import Offer, Store, folded
from otapub.config import Config
from otapub.errors import OtapubError
from otapub.fleet import load_fleet
from otapub.fsutil import atomic_write
from otapub.model import Fleet, Rollout
from otapub.rollout import (
    audience,
    bucket,
    current_stage,
    describe_gates,
    group_members,
    rollout_state,
    waiting_for_gate,
)
from otapub.signing import parse_time
from otapub.versions import same_version
from otapub.yamledit import Document

HALT_EXIT = 4  # a stage crossed its halt gate (not 1: that is any error, e.g. a fleet that does not validate)
ADVANCE_EXIT = 3  # the open stage passed its advance gate: the next one may open


@dataclass
class StageHealth:
    number: int  # 1-based
    percent: int
    open: bool
    devices: int = 0  # this stage's own cohort
    offered: int = 0
    updated: int = 0
    failed: int = 0
    silent: int = 0
    pending: int = 0
    tripped: bool = False  # crossed halt_if
    passed: bool = False  # the open stage passed advance_after and the next one waits for it

    @property
    def failed_percent(self) -> float:
        return 100.0 * (self.failed + self.silent) / self.offered if self.offered else 0.0

    @property
    def updated_percent(self) -> float:
        return 100.0 * self.updated / self.devices if self.devices else 0.0


@dataclass
class RolloutHealth:
    name: str
    release: str
    version: str | None
    state: str
    gates: str | None
    stages: list[StageHealth] = field(default_factory=list)
    halt: str | None = None  # why it must halt now
    advance: int | None = None  # 0-based index of the stage that may open now

    def lines(self) -> list[str]:
        out = [f"rollout {self.name} ({self.release} {self.version or '?'}): {self.state}"]
        out.append(f"    gates: {self.gates or 'none'}")
        for s in self.stages:
            mark = "*" if s.open else " "
            flag = "  HALT" if s.tripped else ("  ADVANCE" if s.passed else "")
            out.append(f"  {mark} stage {s.number} ({s.percent}%): {s.devices} devices, {s.offered} offered, "
                       f"{s.updated} updated, {s.failed} failed, {s.silent} silent, {s.pending} pending "
                       f"(failed {s.failed_percent:.1f}%, updated {s.updated_percent:.1f}%){flag}")
        if self.halt:
            out.append(f"  -> halt: {self.halt}")
        if self.advance is not None:
            out.append(f"  -> stage {self.advance + 1} may open")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "release": self.release, "version": self.version, "state": self.state,
                "gates": self.gates, "halt": self.halt,
                "advance": self.advance + 1 if self.advance is not None else None,
                "stages": [{**s.__dict__, "failed_percent": round(s.failed_percent, 2),
                            "updated_percent": round(s.updated_percent, 2)} for s in self.stages]}


def _time(text: str | None) -> datetime | None:
    try:
        return parse_time(text) if text else None
    except ValueError:
        return None


def rollout_health(fleet: Fleet, rollout: Rollout, seen: dict[str, Seen], offers: dict[str, Offer],
                   now: datetime, members: dict[str, frozenset[str]] | None = None) -> RolloutHealth:
    """Counts per stage of one rollout; ``offers`` are the first offers of its version, by MAC;
    ``members``: the fleet's groups (``group_members``), when the caller has them."""
    release = fleet.releases.get(rollout.release)
    version = release.version if release is not None else None
    index = current_stage(rollout, now)
    waiting = waiting_for_gate(rollout, now)
    health = RolloutHealth(rollout.name, rollout.release, version, rollout_state(rollout, now),
                           describe_gates(rollout))
    scope = audience(rollout, fleet, group_members(fleet) if members is None else members)
    devices = fleet.devices.values() if scope is None else [fleet.devices[m] for m in scope]
    bounds = [0] + [s.percent for s in rollout.stages]
    stages = [StageHealth(i + 1, s.percent, index is not None and i <= index) for i, s in enumerate(rollout.stages)]
    gate = rollout.halt_if
    grace = timedelta(hours=gate.grace_hours if gate else 1.0)
    silence = timedelta(hours=gate.silent_hours if gate else 48.0)
    for device in devices:
        if device.release is not None:  # pinned: the rollout never reaches it
            continue
        b = bucket(rollout.name, device.mac12)
        stage = next((s for s, upper in zip(stages, bounds[1:], strict=True) if b < upper), None)
        if stage is None:
            continue
        stage.devices += 1
        offer = offers.get(device.mac)
        if offer is None:
            continue
        stage.offered += 1
        item = seen.get(device.mac)
        offered_at = _time(offer.first_offered)
        last = _time(item.last_check) if item else None
        if item is not None and same_version(item.last_version, version):
            stage.updated += 1
        elif offered_at is None or now - offered_at < grace:
            stage.pending += 1
        elif last is not None and last > offered_at + grace:
            stage.failed += 1
        elif last is None or now - last >= silence:
            stage.silent += 1
        else:
            stage.pending += 1
    health.stages = stages
    if rollout.stopped:
        return health
    for stage in stages:
        if stage.open and gate is not None and stage.offered >= gate.min_devices and \
                stage.failed_percent >= gate.failed_percent:
            stage.tripped = True
            if health.halt is None:
                health.halt = (f"stage {stage.number}: {stage.failed + stage.silent} of {stage.offered} offered "
                               f"devices failed ({stage.failed} old version, {stage.silent} silent; "
                               f"{stage.failed_percent:.1f}% >= {gate.failed_percent:g}%) at "
                               f"{now.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    if waiting is not None and not health.halt and rollout.advance_after is not None:
        current = stages[index]
        if current.devices and current.updated_percent >= rollout.advance_after.updated_percent:
            current.passed = True
            health.advance = waiting
    return health


def fleet_health(config: Config, name: str | None = None, extra_logs: tuple[Path, ...] = (),
                 now: datetime | None = None, fleet: Fleet | None = None,
                 store: Store | None = None, seen: dict[str, Seen] | None = None) -> list[RolloutHealth]:
    """Health of every rollout (or the one named), from the store with the logs folded in.

    ``fleet``, ``store`` (already folded) and ``seen`` (its devices) save loading them again.
    """
    now = now or datetime.now(timezone.utc)
    fleet = fleet or load_fleet(config.path("fleet_dir"), config.root)
    if name is not None and name not in fleet.rollouts:
        known = ", ".join(sorted(fleet.rollouts)) or "none"
        raise OtapubError(f"no rollout {name!r} in {config.path('fleet_dir')} (rollouts: {known})")
    rollouts = [fleet.rollouts[name]] if name else list(fleet.rollouts.values())
    if store is None:
        with folded(config, extra_logs) as opened:
            return fleet_health(config, name, (), now, fleet, opened, seen)
    seen = store.devices() if seen is None else seen
    members = group_members(fleet)  # once for all rollouts: a selector group looks at every device
    result = []
    for rollout in rollouts:
        release = fleet.releases.get(rollout.release)
        offers = {o.mac: o for o in store.offers(release.version)} if release is not None else {}
        result.append(rollout_health(fleet, rollout, seen, offers, now, members))
    return result


def exit_code(healths: list[RolloutHealth]) -> int:
    if any(h.halt for h in healths):
        return HALT_EXIT
    if any(h.advance is not None for h in healths):
        return ADVANCE_EXIT
    return 0


def write_gates(config: Config, healths: list[RolloutHealth], now: datetime | None = None) -> list[Path]:
    """Record what the gates decided in the fleet YAML: ``halted:``, or the next stage's ``not_before:``.

    Returns the files changed (each written atomically; nothing is written when one cannot be).
    """
    now = now or datetime.now(timezone.utc)
    fleet = load_fleet(config.path("fleet_dir"), config.root)
    edits: dict[Path, Document] = {}
    for health in healths:
        if not health.halt and health.advance is None:
            continue
        rollout = fleet.rollouts[health.name]
        path = Path(rollout.pos.file)
        path = path if path.is_absolute() else config.root / path
        if path not in edits:
            edits[path] = Document(path.read_text(encoding="utf-8"), str(path))
        doc = edits[path]
        entry = next((e for e in doc.entries("rollouts") if e.name == health.name), None)
        if entry is None:
            raise OtapubError(f"{path}: rollout {health.name!r} not found to edit")
        if health.halt:
            doc.update_entry(entry, {"halted": health.halt})
        else:
            when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            doc.update_stage(entry, health.advance, {"not_before": when})
    changed = []
    for path, doc in edits.items():
        if doc.changed:
            atomic_write(path, doc.result().encode("utf-8"))
            changed.append(path)
    return changed

