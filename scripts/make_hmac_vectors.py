"""Regenerate tests/vectors/hmac_tokens.json from otapub/tokens.py (the hmac-sha256 scheme).

    python scripts/make_hmac_vectors.py            # rewrite the file
    python scripts/make_hmac_vectors.py --check    # exit 1 if it is out of date

Each vector is {"mac", "secret", "device_key", "token"}: the key `otapub provision` prints and
the token the device computes from it (examples/secure/otapub_hmac_token.c). The file pins the
Python and C implementations to the same numbers; a diff here changes what devices must send.
Secrets are hashed as their UTF-8 bytes and written with \\u escapes (see make_token_vectors.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from otapub.mac import mac12  # noqa: E402
from otapub.tokens import device_key, hmac_token_from_key  # noqa: E402

OUTPUT = ROOT / "tests" / "vectors" / "hmac_tokens.json"
CASES = [
    ("AA:BB:CC:DD:EE:FF", "your-device-secret-key", "the seed's placeholder secret (never use it)"),
    ("AA:BB:CC:DD:EE:04", "your-device-secret-key", "one MAC digit apart: an unrelated token"),
    ("24:0A:C4:00:00:01", "fleet-secret-2024", "Espressif OUI"),
    ("24:0A:C4:00:00:02", "fleet-secret-2024", "the next MAC"),
    ("00:00:00:00:00:00", "fleet-secret-2024", "all zero MAC"),
    ("FF:FF:FF:FF:FF:FF", "fleet-secret-2024", "broadcast MAC"),
    ("aa-bb-cc-dd-ee-ff", "fleet-secret-2024", "lower-case dashed input, same MAC12 rules"),
    ("AA:BB:CC:DD:EE:FF", "", "empty secret (HMAC allows an empty key)"),
    ("AA:BB:CC:DD:EE:FF", "".join(chr(0x21 + (i * 7) % 94) for i in range(200)),
     "200-character secret: longer than the SHA-256 block, so HMAC hashes the key first"),
    ("AA:BB:CC:DD:EE:FF", "x" * 64, "exactly one SHA-256 block"),
    ("AA:BB:CC:DD:EE:FF", "clé-ü \u20ac \U0001f512", "non-ASCII secret, hashed as UTF-8"),
]


def build_vectors() -> list[dict[str, str]]:
    vectors = []
    for mac, secret, note in CASES:
        digits = mac12(mac)
        key = device_key(digits, secret)
        vectors.append({"mac": mac, "secret": secret, "device_key": key.hex(),
                        "token": hmac_token_from_key(key, digits), "note": note})
    return vectors


def render(vectors: list[dict[str, str]]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args()
    text = render(build_vectors())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python scripts/make_hmac_vectors.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(CASES)} vectors)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
