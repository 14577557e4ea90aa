"""`otapub plan`: what a fleet change does to devices, computed as a pure diff first.

Like pip-tools' diff before sync: the fleet at a git ref (the base) and the working tree are
each loaded and resolved to targets, then compared. The working tree gets every check a build
runs (otapub.check.check_site), anti-rollback with the base's targets as floors where the build
state knows none. Nothing is written; no secret is needed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from otapub.check import check_fleet, check_site, verify_firmware
from otapub.config import Config
from otapub.errors import OtapubError, ValidationError
from otapub.firmware import DigestCache, Digests
from otapub.fleet import load_fleet
from otapub.git import default_base, tree_at
from otapub.model import Fleet, Release
from otapub.rollout import RolloutStatus, rollout_status
from otapub.secure_build import floors_of
from otapub.targets import ROLLOUT, Rules, resolve, resolve_targets
from otapub.versions import parse_version


@dataclass
class Side:
    """One side of the comparison: a fleet resolved to targets, or its validation errors."""

    fleet: Fleet | None = None
    targets: dict[str, Release | None] = field(default_factory=dict)
    digests: dict[str, Digests] = field(default_factory=dict)
    floors: dict[str, list] = field(default_factory=dict)  # anti-rollback: MAC -> [release, secure_version]
    errors: list[str] = field(default_factory=list)


@dataclass
class FleetPlan:
    base_ref: str
    base_commit: str | None
    errors: list[str]
    base_errors: list[str]
    devices_added: list[tuple[str, str | None]] = field(default_factory=list)
    devices_removed: list[tuple[str, str | None]] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)  # grouped target changes
    releases_added: list[str] = field(default_factory=list)
    releases_removed: list[str] = field(default_factory=list)
    releases_changed: list[dict[str, Any]] = field(default_factory=list)
    rollouts: list[RolloutStatus] = field(default_factory=list)  # devices per stage, working tree
    devices: int = 0
    clients: dict[str, int] = field(default_factory=dict)  # devices per update client, working tree
    client_changes: list[dict[str, Any]] = field(default_factory=list)  # devices whose clients changed

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def checksum_changes(self) -> list[dict[str, Any]]:
        return [c for c in self.releases_changed if c["checksum_changed"]]

    @property
    def changed(self) -> bool:
        return bool(self.devices_added or self.devices_removed or self.moves or self.releases_added
                    or self.releases_removed or self.releases_changed or self.client_changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid, "base_ref": self.base_ref, "base_commit": self.base_commit,
            "errors": self.errors, "base_errors": self.base_errors, "devices": self.devices,
            "devices_added": [{"mac": m, "target": t} for m, t in self.devices_added],
            "devices_removed": [{"mac": m, "target": t} for m, t in self.devices_removed],
            "target_changes": self.moves, "releases_added": self.releases_added,
            "releases_removed": self.releases_removed, "releases_changed": self.releases_changed,
            "clients": self.clients, "client_changes": self.client_changes,
            "rollouts": [{"name": r.name, "release": r.release, "state": r.state, "audience": r.audience,
                          "receiving": r.receiving, "gates": r.gates,
                          "waiting_stage": r.waiting + 1 if r.waiting is not None else None,
                          "stages": [{"percent": s.percent, "devices": s.devices,
                                      "not_before": s.not_before.isoformat() if s.not_before else None}
                                     for s in r.stages]} for r in self.rollouts],
        }


def _load(config: Config, now: datetime, base: Side | None = None) -> Side:
    """One side, resolved; the working tree (``base`` given) gets every check a build runs, with
    the base's targets as anti-rollback floors where the build state knows none."""
    side = Side()
    cache = DigestCache()
    try:
        side.fleet = load_fleet(config.path("fleet_dir"), config.root)
        side.targets = resolve_targets(side.fleet, now)
        side.digests = verify_firmware(side.fleet, cache)
        if base is None:
            side.floors = floors_of(check_fleet(config, now, cache, fleet=side.fleet))
        else:
            check_site(config, now, cache, fleet=side.fleet, extra_floors=base.floors)
    except ValidationError as exc:
        side.errors = [str(p) for p in exc.problems]
    except OtapubError as exc:
        side.errors = [str(exc)]
    return side


def _load_at(config: Config, ref: str, now: datetime) -> tuple[Side, str]:
    """The fleet as it was at a git ref, extracted into a temporary folder."""
    with tree_at(config.root, ref) as (base_root, commit):
        side = _load(config.with_root(base_root), now)
    return side, commit


def _version(release: Release | None) -> str:
    return release.version if release is not None else "(none)"


def _label(release: Release | None) -> str:
    return f"{release.version} ({release.name})" if release is not None else "(none)"


def compute_plan(config: Config, base: str | None = None, now: datetime | None = None) -> FleetPlan:
    now = now or datetime.now(timezone.utc)
    ref = base or default_base(config.root)
    old, commit = _load_at(config, ref, now)
    new = _load(config, now, base=old)
    plan = FleetPlan(ref, commit, new.errors, old.errors)
    if new.fleet is None:
        return plan
    plan.devices = len(new.fleet.devices)
    receiving: dict[str, int] = defaultdict(int)
    for target in resolve(Rules(new.fleet, now)).values():
        if target.rule == ROLLOUT and target.name:
            receiving[target.name] += 1
    plan.rollouts = rollout_status(new.fleet, now, receiving)
    old_devices = old.fleet.devices if old.fleet else {}
    for mac in sorted(new.fleet.devices.keys() - old_devices.keys()):
        plan.devices_added.append((mac, _label(new.targets.get(mac))))
    for mac in sorted(old_devices.keys() - new.fleet.devices.keys()):
        plan.devices_removed.append((mac, _label(old.targets.get(mac))))
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for mac in sorted(new.fleet.devices.keys() & old_devices.keys()):
        before, after = old.targets.get(mac), new.targets.get(mac)
        if _label(before) != _label(after):
            groups[(_label(before), _label(after))].append(mac)
    for (before, after), macs in sorted(groups.items(), key=lambda item: -len(item[1])):
        plan.moves.append({"from": before, "to": after, "count": len(macs), "macs": macs,
                           "downgrade": _is_downgrade(before, after)})
    plan.clients = dict(sorted(Counter(c for d in new.fleet.devices.values() for c in d.clients).items()))
    speaks: dict[tuple[str, str], list[str]] = defaultdict(list)
    for mac in sorted(new.fleet.devices.keys() & old_devices.keys()):
        before_clients, after_clients = old_devices[mac].clients, new.fleet.devices[mac].clients
        if before_clients != after_clients:
            speaks[(", ".join(before_clients), ", ".join(after_clients))].append(mac)
    for (before, after), macs in sorted(speaks.items(), key=lambda item: -len(item[1])):
        plan.client_changes.append({"from": before, "to": after, "count": len(macs), "macs": macs})
    old_releases = old.fleet.releases if old.fleet else {}
    plan.releases_added = sorted(new.fleet.releases.keys() - old_releases.keys())
    plan.releases_removed = sorted(old_releases.keys() - new.fleet.releases.keys())
    for name in sorted(new.fleet.releases.keys() & old_releases.keys()):
        a, b = old.digests.get(name), new.digests.get(name)
        ra, rb = old_releases[name], new.fleet.releases[name]
        changes = []
        if ra.version != rb.version:
            changes.append(f"version {ra.version} → {rb.version}")
        if (ra.file_text or ra.url) != (rb.file_text or rb.url):
            changes.append(f"source {ra.file_text or ra.url} → {rb.file_text or rb.url}")
        if ra.hardware != rb.hardware:
            changes.append(f"hardware {list(ra.hardware or ['any'])} → {list(rb.hardware or ['any'])}")
        checksum_changed = a is not None and b is not None and a.sha256 != b.sha256
        if checksum_changed:
            changes.append(f"firmware bytes changed: sha256 {a.sha256[:16]}… → {b.sha256[:16]}…")
        if changes:
            plan.releases_changed.append({"name": name, "changes": changes, "checksum_changed": checksum_changed})
    return plan


def _is_downgrade(before: str, after: str) -> bool:
    try:
        return parse_version(after.split(" ")[0]) < parse_version(before.split(" ")[0])
    except ValueError:
        return False


def render_plan(plan: FleetPlan, fmt: str, config: Config) -> str:
    if fmt == "json":
        import json

        return json.dumps(plan.to_dict(), indent=2)
    from otapub.templating import render_template

    return render_template(config, f"plan.{'md' if fmt == 'markdown' else 'txt'}.j2", plan=plan)
