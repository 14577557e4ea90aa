"""MAC addresses: accept any common spelling, normalise to upper case with colons."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[:\-.\s]")
_HEX12 = re.compile(r"[0-9A-Fa-f]{12}")
# Accepted spellings: AA:BB:CC:DD:EE:FF, aa-bb-cc-dd-ee-ff, AABB.CCDD.EEFF, AABBCCDDEEFF.
_SPELLINGS = re.compile(
    r"(?:[0-9A-Fa-f]{2}([:\-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2})"
    r"|(?:[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})"
    r"|(?:[0-9A-Fa-f]{12})"
)


def mac12(text: str) -> str:
    """Return the 12 upper-case hex digits of a MAC, or raise ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"a MAC address must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if not _SPELLINGS.fullmatch(stripped):
        raise ValueError(f"{text!r} is not a MAC address (12 hex digits, e.g. AA:BB:CC:DD:EE:FF)")
    digits = _SEPARATORS.sub("", stripped)
    assert _HEX12.fullmatch(digits)
    return digits.upper()


def normalize_mac(text: str) -> str:
    """Return the MAC as AA:BB:CC:DD:EE:FF, or raise ValueError."""
    digits = mac12(text)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
