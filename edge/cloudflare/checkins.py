#!/usr/bin/env python3
"""Turn exported Worker logs into an otapub check-in log, for ``otapub status --log``.

The Worker writes one log line per device check: a JSON object with ``"event":
"otapub.checkin"`` and the fields of the Python shim's check-in log. Wherever those lines end
up, they arrive wrapped differently: as raw lines (``wrangler tail --format json``, the Miniflare
console), inside Logpush's Workers Trace Events (``Logs[].Message[]``), or as the events of a
Workers Logs export from the dashboard or its query API. This finds every check-in in any of
those, oldest first, and prints them as JSON lines:

    python3 edge/cloudflare/checkins.py logpush/*.json > worker-checkins.jsonl
    otapub status --log worker-checkins.jsonl

Standard library only; reads gzip-compressed files (Logpush's default) as they are.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

EVENT = "otapub.checkin"
_MAX_DEPTH = 12


def _walk(value: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        if value.get("event") == EVENT:
            yield {k: v for k, v in value.items() if k != "event"}
            return
        for item in value.values():
            yield from _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, depth + 1)
    elif isinstance(value, str) and EVENT in value:
        start = value.find("{")
        if start >= 0:
            try:
                yield from _walk(json.loads(value[start:]), depth + 1)
            except ValueError:
                pass


def parse_lines(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Check-ins in log lines, in the order found (a line may carry text before the JSON)."""
    for line in lines:
        if EVENT not in line:
            continue
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        yield from _walk(value)


def parse_text(text: str) -> list[dict[str, Any]]:
    """Check-ins in an export: one JSON document (e.g. an array of events) or JSON lines."""
    try:
        found = list(_walk(json.loads(text)))
    except ValueError:
        found = list(parse_lines(text.splitlines()))
    return found


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        return 0
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in argv or ["-"]:
        for entry in parse_text(_read(path)):
            line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
            if line not in seen:  # overlapping exports
                seen.add(line)
                entries.append(entry)
    entries.sort(key=lambda e: str(e.get("time") or ""))  # stable: same-time lines keep their order
    out = sys.stdout
    for entry in entries:
        out.write(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n")
    print(f"{len(entries)} check-ins", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
