"""Where a device's answer lives in the published site (design.md §4).

Keyed by the device's canonical token and its MAC: 32-bit tokens collide in large fleets.
edge/cloudflare/src/layout.mjs holds the Worker's view of the same layout.
"""

from __future__ import annotations


def answer_path(token: str, mac12: str) -> str:
    """``d/<TOKEN>/<MAC12>.json``: the canonical token and the upper-case MAC without separators."""
    return f"d/{token}/{mac12}.json"
