"""Write a synthetic ESP32-family application image, e.g. for the repository's example firmware.

    python scripts/make_example_firmware.py firmware/PanicButton_v1.3.8.bin \
        --chip esp32c6 --version 1.3.8 --project PanicButton

The image is deterministic for the same arguments, so regenerating it changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otapub.chips import CHIPS  # noqa: E402
from otapub.image import inspect_image  # noqa: E402
from otapub.imagegen import make_app_image  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the .bin file to write")
    parser.add_argument("--chip", choices=sorted(CHIPS), default="esp32c6")
    parser.add_argument("--version", default="1.0.0", help="app descriptor version")
    parser.add_argument("--project", default="example", help="app descriptor project name")
    parser.add_argument("--secure-version", type=int, default=0)
    parser.add_argument("--idf-ver", default="v5.1")
    parser.add_argument("--size", type=int, default=4096, help="approximate size in bytes")
    parser.add_argument("--seed", type=int, default=0, help="varies the filler bytes")
    parser.add_argument("--no-descriptor", action="store_true", help="omit the app descriptor")
    parser.add_argument("--no-hash", action="store_true", help="omit the appended SHA-256")
    args = parser.parse_args(argv)

    try:
        data = make_app_image(
            chip=args.chip,
            version=args.version,
            project_name=args.project,
            secure_version=args.secure_version,
            size=args.size,
            idf_ver=args.idf_ver,
            with_descriptor=not args.no_descriptor,
            hash_appended=not args.no_hash,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    info = inspect_image(data)  # re-read it, so that the summary shows what a device gets
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(
        f"{args.output}: {info.chip} {info.project_name or '-'} {info.version or '-'}, "
        f"{info.size} bytes, md5 {hashlib.md5(data).hexdigest()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
