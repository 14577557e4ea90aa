"""Watch benchmark: how soon `otapub watch` serves a one-device change on a 10,000-device fleet.

    python bench/bench_watch.py [--devices 10000] [--repeat 5] [--tmpdir DIR] [--json OUT]

Inside a fresh temporary directory (under --tmpdir, default: the system's):

1. generate the fleet (bench/fleetgen.py: files of 1,000 devices, 10 releases), then wait
   --settle seconds, so that watch starts on a repository that existed before it (as in use;
   the parse cache does not store files modified within the last 2 s);
2. start ``python -m otapub watch --host 127.0.0.1 --port P`` and wait until it serves;
3. --repeat times, each for another device in another YAML file: check that ``/api/firmware``
   (the device reports version 0.0.1, with its token from ``otapub token``) offers its current
   release, edit its ``release:`` in its YAML file (fleetgen.change_one_device), and time from
   the moment the file is saved until ``/api/firmware`` offers the new release (polled every
   --interval seconds); between edits wait --settle seconds and for an idle machine.

Prints each latency with the rebuild time watch reports, then median, max and PASS/FAIL for
the target (< 1 s). The watch process is stopped at the end (try/finally), also on failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import fleetgen  # found beside this script; it puts the checkout on sys.path too
import machine

HERE = Path(__file__).resolve().parent
ROOT = fleetgen.ROOT

SECRET = fleetgen.SECRET
HOST = "127.0.0.1"
START_TIMEOUT = 120.0  # seconds for watch's first build and its server to come up
CHANGE_TIMEOUT = 30.0  # seconds for one change to be served
REPORTED_VERSION = "0.0.1"  # below every generated release: the check always offers the target
_REBUILT = re.compile(r"rebuilt \((.*)\): (\d+) written, (\d+) pruned in ([\d.]+)s")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_SERVER_") and k != "OTAPUB_CONFIG"}
    env.update(OTA_SERVER_SHARED_SECRET_KEY=SECRET,
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def offered(port: int, device: dict, token: str) -> str | None:
    """The firmware_version /api/firmware offers the device (None: no update offered)."""
    query = urllib.parse.urlencode({"device_id": device["device_id"], "hardware": fleetgen.HARDWARE,
                                    "version": REPORTED_VERSION, "mac": device["mac"]})
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", f"/api/firmware?{query}", headers={"X-Device-Auth": token})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"/api/firmware for {device['mac']}: {response.status} {body[:200]!r}")
    return json.loads(body).get("firmware_version")


def wait_offered(port: int, device: dict, token: str, version: str, timeout: float, interval: float,
                 proc: subprocess.Popen, log: Path) -> float:
    """Poll /api/firmware until it offers the device ``version``; return the time.monotonic() it did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if offered(port, device, token) == version:
                return time.monotonic()
        except OSError:
            pass  # not listening yet
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{device['mac']} not offered {version} within {timeout:.0f}s (watch exit status "
                               f"{proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(interval)


def token_for(repo: Path, mac: str) -> str:
    done = subprocess.run([sys.executable, "-m", "otapub", "--config", str(repo / "config.json"), "token", mac],
                          cwd=repo, env=child_env(), capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"otapub token {mac} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C for watch (it stops its observer and server), then SIGKILL to the session we started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--per-file", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=10)
    parser.add_argument("--size", type=int, default=1 << 16, help="bytes per firmware image")
    parser.add_argument("--repeat", type=int, default=5, help="edits to time, each in another file")
    parser.add_argument("--target", type=float, default=1.0, help="seconds a change may take to be served")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between polls of /api/firmware")
    parser.add_argument("--settle", type=float, default=2.5, help="seconds to wait after generating and between edits")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each edit wait up to this many seconds for an idle machine (0: never)")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where the temporary repo goes (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    files = -(-args.devices // args.per_file)
    if not 1 <= args.repeat <= files:
        parser.error(f"--repeat must be 1..{files} (one edit per device file)")
    quiet_wait = max(0.0, min(args.quiet_wait, 120.0))

    tmp = Path(tempfile.mkdtemp(prefix="otapub-bench-watch-", dir=args.tmpdir))
    results: dict = {"machine": machine.describe(), "devices": args.devices, "filesystem": machine.filesystem(str(tmp)),
                     "python": sys.version.split()[0], "edits": []}
    proc: subprocess.Popen | None = None
    try:
        repo = tmp / "repo"
        fleet = fleetgen.generate(repo, devices=args.devices, per_file=args.per_file, releases=args.releases,
                                  size=args.size)
        versions = {r["name"]: r["version"] for r in fleet.releases}
        print(f"generated {args.devices} devices in {len(fleet.files)} files under {tmp} ({results['filesystem']})",
              flush=True)
        time.sleep(args.settle)
        port = free_port()
        log = tmp / "watch.log"
        cmd = [sys.executable, "-m", "otapub", "--config", str(repo / "config.json"), "watch", "--host", HOST,
               "--port", str(port)]
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=repo, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        first = fleet.device(0)
        wait_offered(port, first, token_for(repo, first["mac"]), versions[first["release"]], START_TIMEOUT, 0.1,
                     proc, log)
        results["start_s"] = time.monotonic() - started
        print(f"watch serving on {HOST}:{port} after {results['start_s']:.2f}s", flush=True)

        for n in range(args.repeat):
            start = n * (files // args.repeat) * args.per_file  # another file each time
            index = start + (7 * n + 3) % min(args.per_file, args.devices - start)
            device = fleet.device(index)
            token = token_for(repo, device["mac"])
            wait_offered(port, device, token, versions[device["release"]], CHANGE_TIMEOUT, 0.1, proc, log)
            time.sleep(args.settle)
            busy = machine.wait_quiet(quiet_wait) if quiet_wait else None
            log_size = log.stat().st_size
            changed = fleetgen.change_one_device(fleet, index)
            saved = time.monotonic()
            new = versions[changed["release"]]
            served = wait_offered(port, device, token, new, CHANGE_TIMEOUT, args.interval, proc, log)
            time.sleep(0.2)  # let watch print its line
            found = _REBUILT.findall(log.read_text(errors="replace")[log_size:])
            edit = {"mac": device["mac"], "file": fleet.files[index // args.per_file].name,
                    "from": device["release"], "to": changed["release"], "latency_s": served - saved,
                    "rebuild_s": float(found[-1][3]) if found else None, "busy_before": busy}
            results["edits"].append(edit)
            print(f"edit {n + 1}: {edit['mac']} in {edit['file']}: {edit['from']} -> {edit['to']} served after "
                  f"{edit['latency_s']:.3f}s (watch's rebuild: "
                  f"{'-' if edit['rebuild_s'] is None else format(edit['rebuild_s'], '.2f')}s)", flush=True)
    finally:
        if proc is not None:
            stop(proc)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    latencies = [e["latency_s"] for e in results["edits"]]
    results["median_s"], results["max_s"] = statistics.median(latencies), max(latencies)
    ok = results["max_s"] < args.target
    results["pass"] = ok
    m = results["machine"]
    print(f"\n{m['date']}; {m['nproc']} x {m['cpu']}; Python {results['python']}; {args.devices} devices, "
          f"temp dir on {results['filesystem']}; polled every {args.interval * 1000:.0f} ms")
    print(f"save -> served: median {results['median_s']:.3f}s, max {results['max_s']:.3f}s over {len(latencies)} edits")
    print(f"{'PASS' if ok else 'FAIL'}  one-device change served in < {args.target:g}s (max)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
