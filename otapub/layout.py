"""Where a device's answer lives in the published site (design.md §4).

Keyed by the device's canonical token and its MAC: 32-bit tokens collide in large fleets.
edge/cloudflare/src/layout.mjs holds the Worker's view of the same layout.
"""

from __future__ import annotations


def answer_path(token: str, mac12: str) -> str:
    """``d/<TOKEN>/<MAC12>.json``: the canonical token and the upper-case MAC without separators."""
    return f"d/{token}/{mac12}.json"


# The static manifests of the clients that compare versions themselves (otapub.clients), by client.
MANIFESTS = {"esp32fota": "esp32fota.json", "esphome": "esphome.json"}


def manifest_path(token: str, mac12: str, client: str) -> str:
    """``d/<TOKEN>/<MAC12>/<client>.json``: beside the device's answer, as secret as its token."""
    return f"d/{token}/{mac12}/{MANIFESTS[client]}"


def is_answer_path(path: str) -> bool:
    """``d/<TOKEN>/<MAC12>.json`` (a device's answer), not a manifest below ``d/<TOKEN>/<MAC12>/``."""
    return path.startswith("d/") and path.count("/") == 2
