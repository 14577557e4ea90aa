"""Firmware versions: dotted numbers, compared numerically, missing parts are 0."""

from __future__ import annotations

import re

_VERSION = re.compile(r"[vV]?([0-9]{1,9}(?:\.[0-9]{1,9})*)")  # ASCII digits only: \d is Unicode


def parse_version(text: str) -> tuple[int, ...]:
    """Parse "1.3.7" (or "v1.3.7") into a comparable key; trailing zeros are dropped.

    Raises ValueError for anything that is not dotted numbers.
    """
    if not isinstance(text, str):
        raise ValueError(f"a version must be a string of dotted numbers, not {type(text).__name__}")
    match = _VERSION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a version of dotted numbers (e.g. 1.3.8)")
    parts = [int(p) for p in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def same_version(a: str | None, b: str | None) -> bool:
    """True when both are the same version numerically (1.2 == 1.2.0 == v1.2); False when either
    is missing or not a version."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        return parse_version(a) == parse_version(b)
    except ValueError:
        return False


def is_newer(target: str, reported: str) -> bool:
    """True when target > reported, numerically (1.10.0 > 1.9.0, 1.2 == 1.2.0)."""
    return parse_version(target) > parse_version(reported)
