"""Generate a large, deterministic fleet repository for benchmarks.

    python bench/fleetgen.py DIR [--devices 100000] [--per-file 1000] [--releases 10]
                                 [--size 1048576] [--seed 1]

Layout written under DIR (DIR is created; existing generated files are overwritten):

    config.json                      fleet_dir/site_dir/state_dir relative to DIR (no secret)
    firmware/bench_<version>.bin     R release images of S bytes each
    fleet/releases.yaml              R releases (with md5/sha256/size declared)
    fleet/devices/devices-NNNNN.yaml N devices, --per-file per file

Releases are valid ESP32-C6 application images (otapub.imagegen.make_app_image) when that module
exists, else seeded random bytes. A release gets ``chip: esp32c6`` only when the installed
otapub's fleet schema accepts a ``chip`` key (otapub.fleet.RELEASE_KEYS), so the generator works
before and after image inspection lands. Everything is derived from --seed: two runs with the
same arguments produce identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python bench/fleetgen.py` from a checkout
    sys.path.insert(0, str(ROOT))

HARDWARE = "FireBeetle 2 ESP32-C6"
CHIP = "esp32c6"
DEVICE_DIR = "fleet/devices"

SECRET = "bench-secret-4b1d9e07c2a5"  # noqa: S105 (the benchmarks' throwaway fleet secret)


@dataclass
class Fleet:
    """What was generated (enough for a benchmark to address devices without parsing YAML)."""

    root: Path
    releases: list[dict] = field(default_factory=list)  # name, version, file, md5, sha256, size
    files: list[Path] = field(default_factory=list)  # device YAML files, in order
    per_file: int = 1000
    devices: int = 0
    seed: int = 1
    chip_key: bool = False
    image_kind: str = ""
    macs: list[int] = field(default_factory=list, repr=False)

    def device(self, index: int) -> dict:
        """MAC, device_id and release of device ``index``."""
        return device_entry(self.macs[index], index, self.seed, [r["name"] for r in self.releases])


def release_keys() -> tuple[str, ...]:
    try:
        from otapub.fleet import RELEASE_KEYS
    except ImportError:  # pragma: no cover
        return ()
    return tuple(RELEASE_KEYS)


def firmware_image(version: str, size: int, seed: int) -> tuple[bytes, str]:
    try:
        from otapub.imagegen import make_app_image
    except ImportError:
        rng = random.Random(f"fw-{seed}-{version}")
        return rng.randbytes(size), "random bytes"
    return make_app_image(chip=CHIP, version=version, project_name="bench", size=size), "esp32c6 app image"


def _macs(count: int, seed: int) -> list[int]:
    # Distinct locally-administered unicast MACs (02:xx:xx:xx:xx:xx), in a seeded order.
    rng = random.Random(f"macs-{seed}")
    return [(0x02 << 40) | v for v in rng.sample(range(1 << 40), count)]


def device_entry(value: int, index: int, seed: int, release_names: list[str]) -> dict:
    mac12 = f"{value:012X}"
    mac = ":".join(mac12[i : i + 2] for i in range(0, 12, 2))
    release = release_names[random.Random(f"rel-{seed}-{index}").randrange(len(release_names))]
    return {"mac": mac, "mac12": mac12, "device_id": f"PanicAlarm_{mac12[8:]}", "release": release}


def device_yaml(entries: list[dict]) -> str:
    lines = ["devices:"]
    for e in entries:
        lines += [f'  "{e["mac"]}":', f"    device_id: {e['device_id']}", f'    hardware: "{HARDWARE}"',
                  f"    release: {e['release']}"]
    return "\n".join(lines) + "\n"


def generate(root: Path | str, devices: int = 100_000, per_file: int = 1000, releases: int = 10,
             size: int = 1 << 20, seed: int = 1, config: dict | None = None) -> Fleet:
    """Write the fleet repository under ``root`` and describe it."""
    root = Path(root)
    (root / "firmware").mkdir(parents=True, exist_ok=True)
    (root / DEVICE_DIR).mkdir(parents=True, exist_ok=True)
    chip_key = "chip" in release_keys()
    fleet = Fleet(root=root, per_file=per_file, devices=devices, seed=seed, chip_key=chip_key)
    rel_lines = ["releases:"]
    for i in range(releases):
        version = f"1.{i // 100}.{i % 100}"
        name = f"bench-{version}"
        data, fleet.image_kind = firmware_image(version, size, seed)
        rel = f"firmware/bench_{version}.bin"
        path = root / rel
        if not path.is_file() or path.read_bytes() != data:  # keep mtimes stable on re-generation
            path.write_bytes(data)
        info = {"name": name, "version": version, "file": rel, "md5": hashlib.md5(data).hexdigest(),
                "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        fleet.releases.append(info)
        rel_lines += [f"  {name}:", f'    version: "{version}"', f"    file: {rel}", f"    md5: {info['md5']}",
                      f"    sha256: {info['sha256']}", f"    size: {info['size']}", f'    hardware: ["{HARDWARE}"]']
        if chip_key:
            rel_lines.append(f"    chip: {CHIP}")
    _write_if_changed(root / "fleet" / "releases.yaml", "\n".join(rel_lines) + "\n")
    names = [r["name"] for r in fleet.releases]
    fleet.macs = _macs(devices, seed)
    for start in range(0, devices, per_file):
        entries = [device_entry(fleet.macs[i], i, seed, names) for i in range(start, min(start + per_file, devices))]
        path = root / DEVICE_DIR / f"devices-{start // per_file:05d}.yaml"
        _write_if_changed(path, device_yaml(entries))
        fleet.files.append(path)
    settings = {"fleet_dir": "fleet", "site_dir": "site", "state_dir": ".otapub",
                "firmware_directory": "firmware", "checkin_log": "state/checkins.jsonl"}
    settings.update(config or {})
    _write_if_changed(root / "config.json", json.dumps(settings, indent=2) + "\n")
    return fleet


def change_one_device(fleet: Fleet, index: int = 0) -> dict:
    """Edit one device's release in its YAML file (the smallest real change); return the new entry."""
    names = [r["name"] for r in fleet.releases]
    entry = fleet.device(index)
    new = names[(names.index(entry["release"]) + 1) % len(names)]
    path = fleet.files[index // fleet.per_file]
    text = path.read_text()
    head = f'  "{entry["mac"]}":\n'
    at = text.index(head)
    old_line = f"    release: {entry['release']}\n"
    pos = text.index(old_line, at)
    path.write_text(text[:pos] + f"    release: {new}\n" + text[pos + len(old_line):])
    return {**entry, "release": new}


def _write_if_changed(path: Path, text: str) -> None:
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return
    path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=10)
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per firmware image")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.devices < 0 or args.per_file < 1 or not 1 <= args.releases <= 10000 or args.size < 512:
        parser.error("need devices >= 0, per-file >= 1, 1 <= releases <= 10000, size >= 512")
    started = time.monotonic()
    fleet = generate(args.dir, args.devices, args.per_file, args.releases, args.size, args.seed)
    print(f"{args.dir}: {fleet.devices} devices in {len(fleet.files)} files, {len(fleet.releases)} releases of "
          f"{args.size} bytes ({fleet.image_kind}; chip key {'yes' if fleet.chip_key else 'no'}) "
          f"[{time.monotonic() - started:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
