"""Regenerate tests/vectors/tokens.json from the Python token schemes.

    python scripts/make_token_vectors.py            # rewrite the file
    python scripts/make_token_vectors.py --check    # exit 1 if it is out of date

The output is deterministic: fixed cases plus a search over MACs in a fixed order for
tokens that need zero-padding. The vectors pin otapub/tokens.py and the device kit's C
implementation (examples/token/otapub_token.c) to the same numbers; a diff in this file
is a change of what devices must send, and deserves a careful review.

Secrets are Python strings hashed as their UTF-8 bytes (as an Arduino String literal in a
UTF-8 source file is). The JSON is written with \\u escapes so that no editor can silently
re-normalise "é" (NFC, C3 A9) into "e" + combining accent (NFD, 65 CC 81): same glyph,
different bytes, different token. NUL cannot occur in a C string and is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from otapub.mac import mac12  # noqa: E402
from otapub.tokens import SCHEMES, canonical_token  # noqa: E402

OUTPUT = ROOT / "tests" / "vectors" / "tokens.json"
SCHEME_ORDER = ("djb2-5381", "djb2-0")
SEEDS = {"djb2-5381": 5381, "djb2-0": 0}

# The seed's config.json example secret: the one users are most likely to have deployed.
README_SECRET = "your-device-secret-key"
SEARCH_SECRET = "fleet-secret-2024"
# Espressif's OUI; MACs are searched upwards from here.
SEARCH_BASE = 0x240AC4000000
SEARCH_LIMIT = 1 << 22
# Hash below the bound -> the djb2-0 wire form has at most 7, 5 or 4 digits.
PADDING_BOUNDS = (0x10000000, 0x100000, 0x10000)
LONG_SECRET = "".join(chr(0x21 + (i * 7) % 94) for i in range(200))


def _mac(value: int) -> str:
    digits = f"{value:012X}"
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _hash(scheme: str, mac: str, secret: str) -> int:
    return int(SCHEMES[scheme].compute(mac12(mac), secret), 16)


def _first_mac_below(scheme: str, secret: str, bound: int, base: int) -> str:
    for offset in range(SEARCH_LIMIT):
        mac = _mac(base + offset)
        if _hash(scheme, mac, secret) < bound:
            return mac
    raise SystemExit(f"no MAC below {bound:#x} for {scheme} within {SEARCH_LIMIT} tries")


def _secret_for_hash(scheme: str, mac: str, prefix: str, want: int) -> str:
    """prefix + 7 printable characters that make the hash exactly ``want``.

    Appending bytes b1..b7 turns hash h into h*33^7 + sum(b_i * 33^(7-i)) (mod 2^32);
    with b_i = 0x21 + d_i, the base-33 digits d_i of the remainder always fit, since
    33^7 > 2^32. Too rare to find by search (1 in 2^32), easy to construct.
    """
    count = 7
    start = _hash(scheme, mac, prefix)
    base = sum(0x21 * 33**i for i in range(count))
    rest = (want - start * 33**count - base) % (1 << 32)
    digits = []
    for _ in range(count):
        rest, digit = divmod(rest, 33)
        digits.append(chr(0x21 + digit))
    secret = prefix + "".join(reversed(digits))
    assert _hash(scheme, mac, secret) == want
    return secret


def _cases() -> Iterator[tuple[str, str, str]]:
    """(mac, secret, note) in a fixed order; each becomes one vector per scheme."""
    yield "AA:BB:CC:DD:EE:FF", README_SECRET, "examples/README.md worked example"
    yield (
        _first_mac_below("djb2-0", README_SECRET, 0x10000000, 0xAABBCCDDEE00),
        README_SECRET,
        "examples/README.md: djb2-0 wire form shorter than 8 digits",
    )
    yield "24:0A:C4:12:34:56", "change-me", "ordinary ASCII secret"
    yield "aa:bb:cc:dd:ee:ff", README_SECRET, "lower-case MAC input: MAC12 is upper case"
    yield "AA-BB-CC-DD-EE-FF", README_SECRET, "dash-separated MAC input"
    yield "00:00:00:00:00:00", "x", "all-zero MAC"
    yield "FF:FF:FF:FF:FF:FF", "x", "all-F MAC"
    yield "24:0A:C4:12:34:56", "", "empty secret: the hash covers MAC12 only"
    yield "24:0A:C4:12:34:56", LONG_SECRET, "long secret (200 printable ASCII characters)"
    yield "24:0A:C4:12:34:56", " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "ASCII punctuation"
    yield "24:0A:C4:12:34:56", "tab\there\x7f", "ASCII control characters (TAB, DEL)"
    yield "AA:BB:CC:DD:EE:FF", "clé-ü", "UTF-8 secret (bytes >= 0x80): not portable"
    yield "AA:BB:CC:DD:EE:FF", "\u0080\u00a0\u00ff", "UTF-8 C2 80 C2 A0 C3 BF: not portable"
    yield "24:0A:C4:12:34:56", "パスワード", "UTF-8 3-byte characters: not portable"
    yield "24:0A:C4:12:34:56", "\U0001f511key", "UTF-8 4-byte character: not portable"
    yield "24:0A:C4:12:34:56", "\uffff\u07ff", "UTF-8 EF BF BF DF BF: not portable"
    for scheme in SCHEME_ORDER:
        mac = "24:0A:C4:12:34:56"
        secret = _secret_for_hash(scheme, mac, "zero-", 0)
        yield mac, secret, f"{scheme} hash exactly 0 (constructed secret)"
    seen: set[str] = set()
    for scheme in SCHEME_ORDER:
        for bound in PADDING_BOUNDS:
            mac = _first_mac_below(scheme, SEARCH_SECRET, bound, SEARCH_BASE)
            if mac in seen:
                continue
            seen.add(mac)
            value = _hash(scheme, mac, SEARCH_SECRET)
            yield mac, SEARCH_SECRET, f"{scheme} hash {value:#010x} < {bound:#x}: zero-padding"


def build_vectors() -> list[dict[str, str]]:
    vectors = []
    for mac, secret, note in _cases():
        for scheme in SCHEME_ORDER:
            wire = SCHEMES[scheme].wire(mac12(mac), secret)
            canonical = canonical_token(wire)
            assert canonical == SCHEMES[scheme].compute(mac12(mac), secret)
            vectors.append(
                {
                    "mac": mac,
                    "secret": secret,
                    "scheme": scheme,
                    "wire": wire,
                    "canonical": canonical,
                    "note": note,
                }
            )
    return vectors


def render(vectors: list[dict[str, str]]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render(build_vectors())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {len(json.loads(text))} vectors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
