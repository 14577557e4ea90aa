"""The fleet dashboard: one self-contained HTML page (charts by the vendored uPlot, data inline).

What it shows (docs/dashboard.md): versions in the fleet over time, each rollout's stages with
offered / updated / failed / silent counts and its gates, devices not seen for N days, devices
reporting a version no release has, authentication failures by MAC, and every device in a
paginated table. The same page is written by ``otapub dashboard --out DIR`` (a static export,
e.g. a CI artifact; never inside the public site) and served by ``otapub serve`` at
``/admin/dashboard`` to whoever presents the admin key.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from otapub.checkinstore import folded
from otapub.config import Config
from otapub.errors import OtapubError
from otapub.fleet import load_fleet
from otapub.fleetstatus import fleet_status
from otapub.fsutil import atomic_write
from otapub.health import fleet_health
from otapub.versions import parse_version

ASSETS = "dashboard_assets"
TABLE_LIMIT = 1000  # rows of the smaller tables (unknown versions, auth failures); the device table has all


def _asset(name: str) -> str:
    return resources.files("otapub").joinpath(ASSETS, name).read_text(encoding="utf-8")


def _version_key(text: str) -> Any:
    try:
        return parse_version(text)
    except ValueError:
        return text


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def dashboard_data(config: Config, now: datetime | None = None, days: int = 90, silent_days: int = 3,
                   extra_logs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data (compact rows for 100,000 devices)."""
    now = now or datetime.now(timezone.utc)
    fleet = load_fleet(config.path("fleet_dir"), config.root)
    with folded(config, extra_logs) as store:
        seen = store.devices()
        version_days = store.version_days(_stamp(now - timedelta(days=days))[:10])
        rollouts = fleet_health(config, now=now, fleet=fleet, store=store, seen=seen)
    rows = fleet_status(config, now=now, fleet=fleet, seen=seen)
    known: set[Any] = set()
    for release in fleet.releases.values():
        known.add(_version_key(release.version))
    silent_before = _stamp(now - timedelta(days=silent_days))
    unknown: dict[str, int] = {}
    keys: dict[str, Any] = {}
    devices = []
    silent = 0
    for r in rows:
        devices.append([r.mac, r.device_id or "", r.target or "", r.last_version or "", r.state,
                        r.last_check or "", int(r.in_fleet)])
        if r.in_fleet and (r.last_check is None or r.last_check < silent_before):
            silent += 1
        if r.last_version and r.in_fleet:
            key = keys.get(r.last_version) or keys.setdefault(r.last_version, _version_key(r.last_version))
            if key not in known:
                unknown[r.last_version] = unknown.get(r.last_version, 0) + 1
    auth = sorted(((item.auth_failures, mac, item.last_check or "", item.last_ip or "")
                   for mac, item in seen.items() if item.auth_failures), reverse=True)[:TABLE_LIMIT]
    return {
        "generated": _stamp(now),
        "silent_days": silent_days,
        "totals": {"devices": len(fleet.devices), "seen": sum(1 for r in rows if r.in_fleet and r.last_check),
                   "silent": silent, "strangers": sum(1 for r in rows if not r.in_fleet),
                   "auth_failing": len(auth)},
        "versions": [list(v) for v in version_days],
        "rollouts": [h.to_dict() for h in rollouts],
        "unknown_versions": sorted(([v, n] for v, n in unknown.items()), key=lambda x: -x[1])[:TABLE_LIMIT],
        "auth_failures": [[mac, n, last, ip] for n, mac, last, ip in auth],
        "devices": devices,
    }


def render_page(data: dict[str, Any]) -> str:
    """The page: its own HTML, CSS and script, uPlot and the data inlined (no request leaves it)."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("<", "\\u003c")  # no markup
    page = _asset("dashboard.html")
    for marker, text in (("/*UPLOT_CSS*/", _asset("uPlot.min.css")), ("/*PAGE_CSS*/", _asset("dashboard.css")),
                         ("/*UPLOT_JS*/", _asset("uPlot.iife.min.js")), ("/*PAGE_JS*/", _asset("dashboard.js")),
                         ("/*DATA*/", payload)):
        page = page.replace(marker, text.replace("</script", "<\\/script"), 1)
    return page


def export(config: Config, out: Path, now: datetime | None = None, days: int = 90, silent_days: int = 3,
           extra_logs: tuple[Path, ...] = ()) -> Path:
    """Write the page to ``out``/index.html; refuses a folder inside the public site."""
    site = config.path("site_dir")
    target = Path(os.path.realpath(out))
    if target == Path(os.path.realpath(site)) or Path(os.path.realpath(site)) in target.parents:
        raise OtapubError(f"{out}: inside the public site ({site}); the dashboard names every device: "
                          "write it elsewhere")
    page = render_page(dashboard_data(config, now, days, silent_days, extra_logs))  # a mistake there: no folder made
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OtapubError(f"{out}: cannot create the folder: {exc.strerror}") from None
    path = target / "index.html"
    try:
        atomic_write(path, page.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise OtapubError(f"{path}: cannot write the dashboard: {exc.strerror}") from None
    return path
