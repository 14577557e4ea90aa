"""The site's build record, ``build.json``: the one module that writes and reads it.

Published beside the answers (the shim's ``/status`` shows it): which otapub and which commit
built the site, when it last changed, how many devices, releases and firmware files it holds,
and the highest ``manifest_version`` issued when answers are signed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otapub import __version__
from otapub.fsutil import atomic_write

RECORD = "build.json"


def read_record(site: Path) -> dict[str, Any] | None:
    """The site's build record, or None when it has none (or an unreadable one)."""
    try:
        record = json.loads((site / RECORD).read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(site: Path, source_commit: str | None, devices: int, releases: int, firmware_files: int,
                 manifest_version: int | None) -> bytes:
    """Write the build record (atomically); return its bytes."""
    record: dict[str, Any] = {"generator": f"otapub {__version__}", "source_commit": source_commit,
                              "changed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "devices": devices, "releases": releases, "firmware_files": firmware_files}
    if manifest_version is not None:
        record["manifest_version"] = manifest_version
    data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(site / RECORD, data)
    return data
