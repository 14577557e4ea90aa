"""Build benchmark (issue 2): full build, no-op rebuild and a one-device change on a large fleet.

    python bench/bench_build.py [--devices 100000] [--tmpdir DIR] [--repeat 2] [--json OUT] [--py-spy]

In one run, inside a fresh temporary directory (under --tmpdir, default: the system's):

1. generate the fleet (bench/fleetgen.py: N devices in files of 1,000, 10 releases of 1 MiB);
2. full build into a fresh site (--repeat times, each into its own empty site and state dir;
   the fastest counts), each one ``python -m otapub build`` as a subprocess;
3. no-op rebuild (nothing changed), three times;
4. rebuild after editing one device's release in one YAML file;
5. ``build --force`` (re-render everything; the digest cache must still spare the hashing);
6. the floor: the same site files (same bytes, same d/<TOKEN>/<MAC12>.json layout, same dirs)
   written from an in-memory dict into an empty directory with plain open/write/close
   (the bytes are loaded first, untimed); --repeat times, each right after a full build of
   step 2 (so both see the same phases of a noisy disk), fastest counts.

Per step: wall time, the build's own time, peak RSS of that child (os.wait4 rusage), files
written according to the CLI summary line and according to a diff of the site tree (inode,
mtime, size), firmware hashed. Then ratios and PASS/FAIL for issue 2's targets. The secret is
passed as OTA_SERVER_SHARED_SECRET_KEY in the children's environment only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fleetgen  # found beside this script; it puts the checkout on sys.path too
import machine

HERE = Path(__file__).resolve().parent
ROOT = fleetgen.ROOT

SECRET = fleetgen.SECRET
STEP_TIMEOUT = 300  # seconds; no single build may take longer

_SUMMARY = re.compile(r"(\d+) files written, (\d+) pruned, (\d+) firmware hashed \[([\d.]+)s\]")
_NOOP = re.compile(r"nothing written \[([\d.]+)s\]")


def child_env(site: Path, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_SERVER_") and k != "OTAPUB_CONFIG"}
    env.update(OTA_SERVER_SHARED_SECRET_KEY=SECRET, OTA_SERVER_SITE_DIR=str(site), OTA_SERVER_STATE_DIR=str(state),
               OTA_SERVER_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def snapshot(site: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (inode, mtime_ns, size) of every file below site."""
    out: dict[str, tuple[int, int, int]] = {}
    stack = [str(site)]
    base = len(str(site)) + 1
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                st = entry.stat(follow_symlinks=False)
                out[entry.path[base:]] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def tree_changes(before: dict, after: dict) -> int:
    changed = sum(1 for path, sig in after.items() if before.get(path) != sig)
    removed = sum(1 for path in before if path not in after)
    return changed + removed


QUIET_WAIT = 20.0  # seconds to wait for an idle machine before a timed step (set from --quiet-wait)


def run_build(repo: Path, site: Path, state: Path, args: list[str], spy: Path | None = None) -> dict:
    """One `python -m otapub build` child: wall time, its rusage, the parsed summary line."""
    busy_before = machine.wait_quiet(QUIET_WAIT) if QUIET_WAIT else None
    busy0, _total0 = machine.CPU.sample()
    cmd = [sys.executable, "-m", "otapub", "--config", str(repo / "config.json"), "build", *args]
    if spy is not None:
        cmd = ["py-spy", "record", "-r", "100", "-f", "raw", "-o", str(spy), "--", *cmd]
    out_path = repo / "build.out"
    with open(out_path, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=repo, env=child_env(site, state), stdout=out, stderr=subprocess.STDOUT)
        deadline = started + STEP_TIMEOUT
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"build took more than {STEP_TIMEOUT}s: {' '.join(cmd)}")
            time.sleep(0.01)
        wall = time.monotonic() - started
        busy1, _total1 = machine.CPU.sample()
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode}): {' '.join(cmd)}\n{text[-4000:]}")
    own_cpu = usage.ru_utime + usage.ru_stime
    foreign = max(0.0, (busy1 - busy0) / machine.CPU.TICK - own_cpu) / max(wall, 1e-9)
    result = {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "user": usage.ru_utime, "sys": usage.ru_stime,
              "busy_before": busy_before, "foreign_cores": foreign,
              "output": text.strip().splitlines()[-1] if text.strip() else ""}
    match = _SUMMARY.search(text)
    if match:
        result.update(written=int(match[1]), pruned=int(match[2]), hashed=int(match[3]), own=float(match[4]))
    else:
        match = _NOOP.search(text)
        if not match:
            raise RuntimeError(f"cannot parse the build summary: {text[-2000:]}")
        result.update(written=0, pruned=0, hashed=None, own=float(match[1]), noop=True)
    return result


def load_tree(site: Path) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    dirs: list[str] = []
    for dirpath, dirnames, names in os.walk(site):
        rel = os.path.relpath(dirpath, site)
        for d in dirnames:
            dirs.append(os.path.normpath(os.path.join(rel, d)))
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as handle:
                files[os.path.normpath(os.path.join(rel, name))] = handle.read()
    return files, dirs


def floor_write(files: dict[str, bytes], dirs: list[str], target: Path) -> dict:
    """Write the tree with the fewest syscalls Python allows: wall and CPU seconds it took."""
    if QUIET_WAIT:
        machine.wait_quiet(QUIET_WAIT)
    busy0, _total0 = machine.CPU.sample()
    cpu0 = time.process_time()
    started = time.monotonic()
    os.mkdir(target)
    base = str(target)
    for d in dirs:  # os.walk order: parents before children
        os.mkdir(os.path.join(base, d))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for rel, data in files.items():
        fd = os.open(os.path.join(base, rel), flags, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu0
    busy1, _total1 = machine.CPU.sample()
    return {"wall": wall, "cpu": cpu,
            "foreign_cores": max(0.0, (busy1 - busy0) / machine.CPU.TICK - cpu) / max(wall, 1e-9)}


def spy_summary(raw: Path, top: int = 12) -> list[str]:
    """Inclusive share of the otapub/yaml/json frames in a py-spy raw profile."""
    if not raw.is_file():
        return ["(no profile written)"]
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        total += n
        names = {re.sub(r" \((?:.*/)?([^/]+):\d+\)", r" (\1)", f) for f in stack.split(";")}
        for name in names:
            if any(k in name for k in ("build.py", "fleet.py", "yamlsource", "constructor.py", "fsutil",
                                       "secure_build", "targets.py", "inspection", "encoder.py", "decoder.py")):
                incl[name] = incl.get(name, 0) + n
    rows = sorted(incl.items(), key=lambda kv: -kv[1])[:top]
    return [f"{100 * n / max(total, 1):5.1f}%  {name}" for name, n in rows]


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--releases", type=int, default=10)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the temporary repo goes (default: $TMPDIR)")
    parser.add_argument("--repeat", type=int, default=2, help="full builds and floors to run (fastest counts)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--py-spy", action="store_true", help="profile full/change builds with py-spy (slower)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each timed step wait up to this many seconds for an idle machine (0: never)")
    args = parser.parse_args(argv)
    global QUIET_WAIT
    QUIET_WAIT = max(0.0, min(args.quiet_wait, 120.0))
    args.repeat = max(1, min(args.repeat, 5))
    run_started = time.monotonic()

    from otapub import __version__
    from otapub.yamlsource import C_LOADER

    tmp = Path(tempfile.mkdtemp(prefix="otapub-bench-build-", dir=args.tmpdir))
    results: dict = {"machine": machine.describe(), "devices": args.devices, "releases": args.releases,
                     "size": args.size, "tmpdir": str(tmp),
                     "otapub": __version__, "c_loader": C_LOADER, "python": sys.version.split()[0], "steps": {}}
    steps = results["steps"]
    results["filesystem"] = machine.filesystem(str(tmp))
    try:
        repo = tmp / "repo"
        t = time.monotonic()
        fleet = fleetgen.generate(repo, devices=args.devices, releases=args.releases, size=args.size)
        results["generate_s"] = time.monotonic() - t
        print(f"generated {args.devices} devices / {len(fleet.files)} files / {args.releases} releases of "
              f"{args.size} B in {results['generate_s']:.1f}s under {tmp} ({results['filesystem']}); "
              f"chip key: {fleet.chip_key}; C loader: {C_LOADER}", flush=True)

        # 2. full builds, each into a fresh site and state dir, alternating with the floor (6.), so
        #    that both sides see the same phases of the machine and its disk
        fulls, floors = [], []
        tree: tuple[dict[str, bytes], list[str]] | None = None
        for i in range(args.repeat):
            site, state = tmp / f"site{i}", tmp / f"state{i}"
            spy = tmp / f"full{i}.spy" if args.py_spy and i == 0 else None
            r = run_build(repo, site, state, [], spy)
            r["tree_changes"] = len(snapshot(site))
            if spy is not None:
                r["profile"] = spy_summary(spy)
            fulls.append(r)
            print(f"full build {i + 1}: {r['wall']:.2f}s, {r['rss_mb']:.0f} MB, {r['written']} written", flush=True)
            if tree is None:
                tree = load_tree(site)  # the bytes the floor writes (read untimed)
            floors.append(floor_write(*tree, tmp / f"floor{i}"))
            print(f"floor {i + 1}: {floors[-1]['wall']:.2f}s", flush=True)
            # Each build and floor starts from the same file system: without this, every round
            # ran slower than the one before (200,000 more inodes and dentries each time).
            shutil.rmtree(tmp / f"floor{i}")
            if i < args.repeat - 1:
                shutil.rmtree(site)
                shutil.rmtree(state)
        best = min(range(len(fulls)), key=lambda i: fulls[i]["wall"])
        steps["full"] = {**fulls[best], "runs": [f["wall"] for f in fulls]}
        fastest = min(floors, key=lambda f: f["wall"])
        steps["floor"] = {**fastest, "runs": [f["wall"] for f in floors], "files": len(tree[0]),
                          "dirs": len(tree[1]), "bytes": sum(map(len, tree[0].values()))}
        del tree
        site, state = tmp / f"site{args.repeat - 1}", tmp / f"state{args.repeat - 1}"  # the last one lives on

        # 3. no-op rebuilds
        before = snapshot(site)
        noops = [run_build(repo, site, state, []) for _ in range(3)]
        after = snapshot(site)
        steps["noop"] = {**min(noops, key=lambda r: r["wall"]), "runs": [r["wall"] for r in noops],
                         "tree_changes": tree_changes(before, after)}
        print(f"no-op: {steps['noop']['wall']:.2f}s", flush=True)

        # 4. one device changed (its release) in one YAML file
        fleetgen.change_one_device(fleet, index=args.devices // 2 if args.devices else 0)
        before = after
        spy = tmp / "change.spy" if args.py_spy else None
        r = run_build(repo, site, state, [], spy)
        after = snapshot(site)
        r["tree_changes"] = tree_changes(before, after)
        if spy is not None:
            r["profile"] = spy_summary(spy)
        steps["change"] = r
        print(f"one-device change: {r['wall']:.2f}s, {r['written']} written", flush=True)

        # 5. forced rebuild (everything re-rendered, digests from the cache)
        before = after
        r = run_build(repo, site, state, ["--force"])
        after = snapshot(site)
        r["tree_changes"] = tree_changes(before, after)
        steps["force"] = r
        print(f"forced rebuild: {r['wall']:.2f}s, {r['written']} written, {r['hashed']} hashed", flush=True)

    finally:
        if not args.keep:
            t = time.monotonic()
            shutil.rmtree(tmp, ignore_errors=True)
            results["cleanup_s"] = time.monotonic() - t

    full, noop, change, force, floor = (steps[k] for k in ("full", "noop", "change", "force", "floor"))
    print()
    m = results["machine"]
    print(f"{m['date']}; {m['nproc']} x {m['cpu']}; kernel {m['kernel']}")
    print(f"otapub {__version__}, Python {results['python']}, {args.devices} devices, {args.releases} x "
          f"{args.size} B firmware, temp dir on {results['filesystem']}")
    header = f"{'step':<22}{'wall s':>8}{'own s':>8}{'user s':>8}{'sys s':>7}{'RSS MB':>8}{'written':>9}" \
             f"{'tree Δ':>8}{'hashed':>8}{'foreign':>9}"
    print(header)
    print("-" * len(header))
    for name, label in (("full", "full build (fresh)"), ("noop", "no-op rebuild"), ("change", "one device changed"),
                        ("force", "build --force")):
        s = steps[name]
        print(f"{label:<22}{s['wall']:>8.2f}{s['own']:>8.2f}{s['user']:>8.2f}{s['sys']:>7.2f}{s['rss_mb']:>8.0f}"
              f"{s['written']:>9}{s['tree_changes']:>8}{fmt(s.get('hashed'), 'd'):>8}{s['foreign_cores']:>9.2f}")
    print(f"{'floor (from memory)':<22}{floor['wall']:>8.2f}{'':>8}{'cpu':>8}{floor['cpu']:>7.2f}{'':>8}"
          f"{floor['files']:>9}{'':>8}{'':>8}{floor['foreign_cores']:>9.2f}")
    print("(own s: the build's own timer; foreign: cores used by other processes meanwhile, a noise indicator)")
    print(f"(full builds: {', '.join(f'{w:.2f}' for w in full['runs'])}s; floors: "
          f"{', '.join(f'{w:.2f}' for w in floor['runs'])}s; no-ops: {', '.join(f'{w:.2f}' for w in noop['runs'])}s)")
    ratios = {"full/floor": full["wall"] / floor["wall"], "noop/full": noop["wall"] / full["wall"],
              "change/full": change["wall"] / full["wall"], "force/full": force["wall"] / full["wall"]}
    results["ratios"] = ratios
    print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    pairs = [f / g for f, g in zip(full["runs"], floor["runs"], strict=True)]
    results["full_floor_pairs"] = pairs
    print("full/floor in each round (a build and the floor right after it): "
          + ", ".join(f"{r:.2f}" for r in pairs))
    targets = [
        ("full build <= 3x floor", ratios["full/floor"] <= 3, f"{ratios['full/floor']:.2f}x"),
        ("no-op <= 10% of full", ratios["noop/full"] <= 0.10, f"{100 * ratios['noop/full']:.1f}%"),
        ("no-op writes 0 files", noop["written"] == 0 and noop["tree_changes"] == 0,
         f"{noop['written']} (tree: {noop['tree_changes']})"),
        ("one-device change writes <= 2 files", change["written"] <= 2 and change["tree_changes"] <= 2,
         f"{change['written']} (tree: {change['tree_changes']})"),
        ("firmware hashed once", full["hashed"] == args.releases and change["hashed"] == 0 and force["hashed"] == 0,
         f"full {full['hashed']}, change {change['hashed']}, force {force['hashed']}"),
        ("PyYAML C loader", C_LOADER, str(C_LOADER)),
    ]
    results["targets"] = [{"target": t, "pass": bool(ok), "value": v} for t, ok, v in targets]
    print()
    for t, ok, v in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {t:<38} {v}")
    for name in ("full", "change"):
        if "profile" in steps[name]:
            print(f"\npy-spy, {name} build (inclusive share of samples; timings above include py-spy overhead):")
            print("\n".join("  " + line for line in steps[name]["profile"]))
    results["total_s"] = time.monotonic() - run_started
    print(f"\nbenchmark took {results['total_s']:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
