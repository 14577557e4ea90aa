"""What staged rollouts cost: a full 100,000-device build without and with a rollout covering everyone.

    python bench/bench_rollouts.py [--devices 100000] [--repeat 2] [--keep DIR]

It works in a temporary folder on /dev/shm when there is one (else the system's temp folder).

The fleet comes from bench/fleetgen.py with the per-device pins removed, so every device gets
its target from a rule: in run A from the `stable` channel only; in run B a staged rollout to
`all` (stage 2 of 3 open: 50%) comes first, so every device is bucketed and half of them move.
Each build starts from an empty site and state (a full build: validation, firmware hashing and
inspection, targets, tokens, 100,000 answers written). A and B alternate; the best of each is
compared, after one warm-up build that is not counted (the first build in a fresh folder pays
for the file system's first directory creations). The in-memory part of the build (plan_site:
load, validate, verify, inspect, resolve, render; no writes) is timed as well. Goal (issue 6): B
adds under 20% to A.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as `python bench/bench_rollouts.py` from a checkout
    sys.path.insert(0, str(ROOT))

from bench.fleetgen import SECRET, generate  # noqa: E402
from otapub.build import build_site  # noqa: E402
from otapub.config import load_config  # noqa: E402
from otapub.render import plan_site  # noqa: E402
from otapub.targets import ROLLOUT, Rules, resolve  # noqa: E402

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
ROLLOUT_YAML = """\
rollouts:
  bench-next:
    release: {release}
    to: all
    stages:
      - {{percent: 10}}
      - {{percent: 50, not_before: 2026-12-01T09:00:00Z}}
      - {{percent: 100, not_before: 2026-12-09T09:00:00Z}}
"""


def prepare(root: Path, devices: int) -> tuple[str, str]:
    fleet = generate(root, devices=devices, per_file=1000, releases=2, size=64 * 1024)
    pin = re.compile(r"^    release: .*\n", re.M)
    for path in fleet.files:
        path.write_text(pin.sub("", path.read_text()))
    stable, newer = fleet.releases[0]["name"], fleet.releases[1]["name"]
    (root / "fleet/channels.yaml").write_text(f"channels:\n  stable: {stable}\n")
    return stable, newer


def full_build(root: Path) -> tuple[float, int]:
    for name in ("site", ".otapub"):
        shutil.rmtree(root / name, ignore_errors=True)
    config = load_config(root / "config.json", environ={"OTA_SERVER_SHARED_SECRET_KEY": SECRET})
    started = time.perf_counter()
    result = build_site(config, now=NOW)
    return time.perf_counter() - started, len(result.written)


def plan_time(root: Path) -> tuple[float, float, int]:
    """The in-memory build (plan_site), and the rules alone (Rules + resolve) on its loaded fleet."""
    config = load_config(root / "config.json", environ={"OTA_SERVER_SHARED_SECRET_KEY": SECRET})
    started = time.perf_counter()
    plan = plan_site(config, now=NOW)
    planned = time.perf_counter() - started
    started = time.perf_counter()
    targets = resolve(Rules(plan.fleet, NOW))
    return planned, time.perf_counter() - started, sum(t.rule == ROLLOUT for t in targets.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="builds of each kind (the best counts)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    # tmpfs when there is one: 100,000 answers in 100,000 folders make a disk's timings noisy.
    shm = Path("/dev/shm")
    root = args.keep or Path(tempfile.mkdtemp(prefix="otapub-bench-rollouts-", dir=shm if shm.is_dir() else None))
    try:
        started = time.perf_counter()
        _stable, newer = prepare(root, args.devices)
        print(f"fleet: {args.devices} devices, no pins, channel stable; generated in "
              f"{time.perf_counter() - started:.1f}s")
        rollout_file = root / "fleet/rollouts.yaml"
        warm, _ = full_build(root)
        print(f"warm-up build (not counted): {warm:.2f}s")
        without: list[float] = []
        with_rollout: list[float] = []
        plans: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(args.repeat):
            rollout_file.unlink(missing_ok=True)
            seconds, written = full_build(root)
            without.append(seconds)
            planned, eval_a, _ = plan_time(root)
            plans["A"].append(planned)
            rollout_file.write_text(ROLLOUT_YAML.format(release=newer))
            seconds, written_b = full_build(root)
            with_rollout.append(seconds)
            planned, eval_b, moved = plan_time(root)
            plans["B"].append(planned)
            print(f"  A (channel only): {without[-1]:6.2f}s ({written} files)   "
                  f"B (+ staged rollout): {with_rollout[-1]:6.2f}s ({written_b} files, {moved} devices in the "
                  f"open 50% stage)")
        a, b = min(without), min(with_rollout)
        pa, pb = min(plans["A"]), min(plans["B"])
        print(f"rule evaluation alone (Rules + resolve): {eval_a * 1000:.0f} ms without, "
              f"{eval_b * 1000:.0f} ms with the rollout")
        print(f"in-memory plan (plan_site), best of {args.repeat}: {pa:.2f}s without, {pb:.2f}s with: "
              f"ratio {pb / pa:.3f} ({(pb / pa - 1) * 100:+.1f}%)")
        print(f"full build, best of {args.repeat}: without rollouts {a:.2f}s, with a staged rollout {b:.2f}s: "
              f"ratio {b / a:.3f} ({(b / a - 1) * 100:+.1f}%; goal < +20%)")
        return 0 if b / a < 1.2 else 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
