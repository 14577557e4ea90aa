"""Everything that decides whether a fleet may be published; writes nothing.

`otapub check` (pull requests), `otapub plan`, the admin API and `otapub device ...` edits call
``check_site``: every check `otapub build` runs, with the same messages. It loads and validates
the fleet, verifies every firmware file against its declared checksums, inspects the images,
checks that every rule gives devices releases that fit them, resolves each device's target
(``check_fleet``), and checks no target is below a device's anti-rollback floor
(otapub.secure_build, against the floors the next build would use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from otapub.clients import DEFAULT_CLIENTS, ManifestTarget, client_problem
from otapub.config import Config
from otapub.errors import OtapubError, Problem, ValidationError
from otapub.firmware import DigestCache, Digests, firmware_url
from otapub.fleet import load_fleet
from otapub.inspection import ImageCache, ImageFacts, inspect_releases, release_chips
from otapub.model import Fleet
from otapub.rollout import validity
from otapub.secure_build import check_rollback
from otapub.targets import Rules, Target, compatibility_problems, resolve


@dataclass
class Checked:
    """A fleet that passed every check, with what the checks found out."""

    fleet: Fleet
    digests: dict[str, Digests]  # release name -> digests
    images: dict[str, ImageFacts] = field(default_factory=dict)  # release name -> inspected image
    targets: dict[str, Target] = field(default_factory=dict)  # MAC -> target and the rule that gave it
    # Time-based rollout stages make the result valid for [valid_from, valid_until) only (None: unbounded).
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def verify_firmware(fleet: Fleet, cache: DigestCache) -> dict[str, Digests]:
    """Check every release's firmware against its declared checksums; raise on any mismatch."""
    problems: list[Problem] = []
    digests: dict[str, Digests] = {}
    for release in fleet.releases.values():
        if release.url is not None:
            if release.md5 and release.sha256 and release.size:
                digests[release.name] = Digests(release.md5, release.sha256, release.size)
            continue
        if release.file is None:
            continue
        where = release.where("file")
        if not release.file.is_file():
            problems.append(where.problem(f"releases.{release.name}.file",
                                          f"firmware file {release.file_text!r} not found"))
            continue
        found = cache.get(release.file)
        if found.size == 0:
            problems.append(where.problem(f"releases.{release.name}.file", "firmware file is empty"))
        for name in ("md5", "sha256", "size"):
            declared = getattr(release, name)
            actual = getattr(found, name)
            if declared is not None and declared != actual:
                problems.append(release.where(name).problem(
                    f"releases.{release.name}.{name}",
                    f"checksum mismatch for {release.file_text}: declared {declared}, file has {actual}"))
        digests[release.name] = found
    if problems:
        raise ValidationError(problems)
    return digests


def check_fleet(config: Config, now: datetime | None = None, cache: DigestCache | None = None,
                images: ImageCache | None = None, fleet: Fleet | None = None) -> Checked:
    """Load, validate, verify and inspect the fleet and resolve every device's target.

    ``fleet``: check this one instead of loading it (an edit checked before it is written).
    Raises ValidationError with every problem found.
    """
    now = now or datetime.now(timezone.utc)
    fleet = fleet if fleet is not None else load_fleet(config.path("fleet_dir"), config.root)
    problems: list[Problem] = []
    try:
        digests = verify_firmware(fleet, cache or DigestCache())
    except ValidationError as exc:
        digests, problems = {}, list(exc.problems)
    facts, image_problems = inspect_releases(fleet, images or ImageCache(), digests)
    chips = release_chips(fleet, facts)
    rules = Rules(fleet, now, chips)
    problems += image_problems + compatibility_problems(rules)
    if problems:
        raise ValidationError(problems)
    targets = resolve(rules)
    problems += client_problems(config, fleet, targets, digests, chips)
    if problems:
        raise ValidationError(problems)
    valid_from, valid_until = validity(fleet.rollouts.values(), now)
    return Checked(fleet, digests, facts, targets, valid_from, valid_until)


def check_folders(config: Config) -> None:
    """The site and the fleet must be folders apart: a build would publish the fleet, or read its site."""
    site, fleet_dir = config.path("site_dir"), config.path("fleet_dir")
    if site.is_relative_to(fleet_dir) or fleet_dir.is_relative_to(site):
        raise OtapubError(f"site_dir {site} and fleet_dir must not contain each other")


def check_site(config: Config, now: datetime | None = None, cache: DigestCache | None = None,
               images: ImageCache | None = None, fleet: Fleet | None = None,
               extra_floors: Mapping[str, list] | None = None) -> Checked:
    """Every check `otapub build` runs (check_folders, check_fleet, then anti-rollback); raises as the
    build would.

    ``extra_floors``: anti-rollback floors for devices the build state does not know (`plan`).
    """
    check_folders(config)
    checked = check_fleet(config, now, cache, images, fleet)
    check_rollback(config, checked, extra_floors)
    return checked


def client_problems(config: Config, fleet: Fleet, targets: dict[str, Target], digests: dict[str, Digests],
                    chips: dict[str, str | None]) -> list[Problem]:
    """Devices whose declared clients (otapub.clients) cannot be given their target."""
    problems: list[Problem] = []
    by_release: dict[str, ManifestTarget] = {}  # the same for every device a release is the target of
    for mac, device in fleet.devices.items():
        if device.clients == DEFAULT_CLIENTS:
            continue
        release = targets[mac].release
        target = None
        if release is not None:
            target = by_release.get(release.name)
            if target is None:
                url = firmware_url(config.base_url, release, digests[release.name]) or ""
                target = by_release[release.name] = ManifestTarget.of(release, url, digests[release.name],
                                                                      chips.get(release.name))
        problem = client_problem(device, target)
        if problem is not None:
            problems.append(problem)
    return problems
