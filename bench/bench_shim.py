"""Shim benchmark (issue 3): the gunicorn shim against nginx serving the same site, with wrk.

    python bench/bench_shim.py [--devices 100000] [--small 1000] [--workers 1,2,4] [--duration 10]
                               [--tmpdir DIR] [--json OUT]

Builds a site for a large and a small fleet (bench/fleetgen.py + ``python -m otapub build``), starts
nginx (its own minimal nginx.conf in the temp dir; root = the site, access_log off,
worker_processes auto) and ``otapub serve --host 127.0.0.1 --port P --workers W``, and runs
``wrk -t2 -c64 -d10s --latency`` (everything on 127.0.0.1) against:

  (a) nginx serving one device's answer JSON as a static file;
  (b) the shim's ``GET /api/firmware?...`` with a valid ``X-Device-Auth`` header, for a device
      that gets ``update_available: true`` (checked before the load), once per worker count;
  (c) a 1 MiB firmware download, nginx against the shim (best worker count).

Then worker RSS (VmRSS of the gunicorn worker processes after the /api/firmware load) for the
small and the large site. Every server is stopped at the end (try/finally), also on failure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
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
BUILD_TIMEOUT = 300
START_TIMEOUT = 30


# -- helpers --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def child_env(extra: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTA_SERVER_") and k != "OTAPUB_CONFIG"}
    env.update(OTA_SERVER_SHARED_SECRET_KEY=SECRET,
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra or {})
    return env


def build(repo: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "otapub", "--config", str(repo / "config.json"), "build"],
                          cwd=repo, env=child_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"build failed in {repo}:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            get(port, path)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not start:\n{log.read_text(errors='replace')[-3000:]}") \
                    from None
            time.sleep(0.05)


class Servers:
    """Every process started here, stopped in reverse order by stop_all()."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown; gunicorn: graceful stop
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                try:  # the whole session we started (master and its workers), by process-group id
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop pid {proc.pid}: {exc}", file=sys.stderr)


NGINX_CONF = """\
{load}{user}worker_processes auto;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    types {{ application/json json; application/octet-stream bin; }}
    default_type application/octet-stream;
{http_extra}    server {{
        listen {host}:{port};
        root {site};
{server_extra}        location / {{ }}
    }}
}}
"""
NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
# The njs prototype of /api/firmware (bench/njs/otapub_check.js), with one check-in line per request.
NJS_HTTP = """\
    js_path {njs};
    js_import otapub from otapub_check.js;
    js_var $otapub_decision;
    log_format checkin escape=json '{{"time":"$time_iso8601","ip":"$remote_addr","client":"seed","mac":"$arg_mac",'
                                   '"device_id":"$arg_device_id","hardware":"$arg_hardware",'
                                   '"version":"$arg_version","decision":"$otapub_decision","status":$status}}';
"""
NJS_SERVER = """\
        location = /api/firmware {{
            js_content otapub.check;
            access_log {tmp}/njs-checkins.jsonl checkin;
        }}
"""


def start_nginx(servers: Servers, tmp: Path, site: Path, njs: bool = False) -> tuple[int, subprocess.Popen]:
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / ("nginx-njs.conf" if njs else "nginx.conf")
    extra = {"load": "", "http_extra": "", "server_extra": ""}
    if njs:
        extra = {"load": f"load_module {NJS_MODULE};\n", "http_extra": NJS_HTTP.format(njs=HERE / "njs"),
                 "server_extra": NJS_SERVER.format(tmp=tmp)}
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, host=HOST, port=port, site=site, **extra))
    log = tmp / ("nginx-njs.out" if njs else "nginx.out")
    proc = servers.start("nginx", ["nginx", "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)], log)
    wait_http(port, "/build.json", proc, log)
    wait_workers(proc.pid, os.cpu_count() or 1)  # worker_processes auto
    return port, proc


def start_shim(servers: Servers, repo: Path, workers: int, tmp: Path,
               server: str = "granian") -> tuple[int, subprocess.Popen]:
    port = free_port()
    log = tmp / f"shim-{repo.name}-{server}-{workers}.log"
    cmd = [sys.executable, "-m", "otapub", "--config", str(repo / "config.json"), "serve", "--host", HOST,
           "--port", str(port), "--workers", str(workers), "--server", server]
    proc = servers.start(f"shim-{workers}", cmd, log, child_env())
    wait_http(port, "/status", proc, log)
    wait_workers(proc.pid, workers)
    return port, proc


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            pids.append(int(entry))
    return sorted(pids)


def wait_workers(master: int, count: int, timeout: float = START_TIMEOUT) -> list[int]:
    """Wait until the server's master has `count` workers (all booted: they answer, CPU is counted)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(master)
        if len(pids) >= count or time.monotonic() > deadline:
            time.sleep(0.5)  # let the last one finish booting
            return worker_pids(master)
        time.sleep(0.05)


def vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# -- wrk -----------------------------------------------------------------------------------
_UNITS_T = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_UNITS_B = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    return float(match[1]) * _UNITS_T[match[2]] if match else None


def _bytes(text: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)\s*([KMGT]?B)", text.strip())
    return float(match[1]) * _UNITS_B[match[2]] if match else None


def parse_wrk(text: str) -> dict:
    out: dict = {"raw": text}
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    out["rps"] = float(m[1]) if m else None
    m = re.search(r"Transfer/sec:\s*([\d.]+\s*[KMGT]?B)", text)
    out["transfer_bps"] = _bytes(m[1]) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+),\s*([\d.]+\s*[KMGT]?B) read", text)
    if m:
        out["requests"] = int(m[1])
        out["duration_ms"] = _ms(m[2])
        out["read_bytes"] = _bytes(m[3])
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+\w+)\s*$", text, re.M)
        out[f"p{pct}_ms"] = _ms(m[1]) if m else None
    m = re.search(r"^\s*Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", text, re.M)
    out["avg_ms"], out["max_ms"] = (_ms(m[1]), _ms(m[3])) if m else (None, None)
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    out["non2xx"] = int(m[1]) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


def server_pids(master: int) -> list[int]:
    return [master, *worker_pids(master)]


def wrk(url: str, duration: int, headers: dict | None = None, pids: list[int] | None = None,
        threads: int = 2, connections: int = 64, quiet_wait: float = 30.0) -> dict:
    """One wrk run; with the server's pids, also its CPU per request and the foreign CPU meanwhile."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    busy_before = machine.wait_quiet(quiet_wait) if quiet_wait else None
    pids = pids or []
    server0 = machine.CPU.process_jiffies(pids)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0 = machine.CPU.sample()
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    elapsed = time.monotonic() - started
    busy1, total1 = machine.CPU.sample()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server1 = machine.CPU.process_jiffies(pids)
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise RuntimeError(f"wrk failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    result = parse_wrk(done.stdout)
    result["cmd"] = " ".join(cmd)
    if result["rps"] is None:
        raise RuntimeError(f"cannot parse wrk output:\n{done.stdout}")
    tick = machine.CPU.TICK
    wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    server_cpu = (server1 - server0) / tick
    machine_busy = (busy1 - busy0) / tick
    result.update(busy_before=busy_before, wrk_cpu_s=wrk_cpu, server_cpu_s=server_cpu if pids else None,
                  foreign_cores=max(0.0, machine_busy - wrk_cpu - server_cpu) / elapsed if pids else None,
                  cpu_per_req_us=1e6 * server_cpu / result["requests"] if pids and result.get("requests") else None)
    return result


def show(label: str, r: dict, size: int | None = None) -> str:
    mbps = (r["transfer_bps"] or 0) / 1e6
    extra = f"  {mbps:7.0f} MB/s" if size else ""
    if r.get("cpu_per_req_us") is not None:
        extra += f"  {r['cpu_per_req_us']:6.0f} us CPU/req  foreign {r['foreign_cores']:.2f} cores"
    errors = f"  non-2xx {r['non2xx']}" if r["non2xx"] else ""
    errors += f"  socket errors {r['socket_errors']}" if r["socket_errors"] else ""
    return (f"{label:<46}{r['rps']:>8.0f} req/s  p50 {r['p50_ms']:>6.2f} ms  p99 {r['p99_ms']:>6.2f} ms"
            f"{extra}{errors}")


# -- the benchmark ---------------------------------------------------------------------------
def prepare(tmp: Path, name: str, devices: int, size: int) -> tuple[fleetgen.Fleet, str, float]:
    repo = tmp / name
    started = time.monotonic()
    fleet = fleetgen.generate(repo, devices=devices, size=size)
    summary = build(repo)
    return fleet, summary, time.monotonic() - started


def device_request(fleet: fleetgen.Fleet) -> tuple[str, dict, str, str]:
    """(/api/firmware query, headers, answer path, firmware path) for device 0, reporting 0.0.1."""
    from otapub.tokens import device_token

    dev = fleet.device(0)
    token = device_token(dev["mac12"], SECRET)  # the config's default scheme (djb2-5381): wire == canonical
    query = urllib.parse.urlencode({"device_id": dev["device_id"], "hardware": fleetgen.HARDWARE,
                                    "version": "0.0.1", "mac": dev["mac"]})
    release = next(r for r in fleet.releases if r["name"] == dev["release"])
    firmware = f"/f/{release['sha256']}/{Path(release['file']).name}"
    return f"/api/firmware?{query}", {"X-Device-Auth": token}, f"/d/{token}/{dev['mac12']}.json", firmware


VARIANTS = [
    # label, shim_variants.py arguments, needs (modules that must import from --extra-path)
    ("gthread, 2 workers x 1 thread", ["--workers", "2", "--threads", "1"], ()),
    ("gthread, 2 workers x 4 threads, log WARNING", ["--workers", "2", "--threads", "4", "--log-level", "WARNING"],
     ()),
    ("gthread 2x4, WARNING, no check-in log", ["--workers", "2", "--threads", "4", "--log-level", "WARNING",
                                               "--no-checkin-log"], ()),
    ("sync, 2 workers (no keep-alive)", ["--worker-class", "sync", "--workers", "2"], ()),
    ("gevent, 2 workers", ["--worker-class", "gevent", "--workers", "2"], ("gevent",)),
    ("gthread 2x4 + gunicorn_h1c C parser", ["--workers", "2", "--threads", "4"], ("gunicorn_h1c",)),
    ("bare WSGI app, gthread 2x4 (gunicorn ceiling)", ["--workers", "2", "--threads", "4", "--app", "bare"], ()),
    ("bare WSGI app, gthread 2x4 + h1c", ["--workers", "2", "--threads", "4", "--app", "bare"], ("gunicorn_h1c",)),
]


def start_variant(servers: Servers, repo: Path, extra: list[str], tmp: Path, env: dict) -> tuple[int, subprocess.Popen]:
    port = free_port()
    log = tmp / f"variant-{len(servers.procs)}-{port}.log"
    cmd = [sys.executable, str(HERE / "shim_variants.py"), "--config", str(repo / "config.json"), "--host", HOST,
           "--port", str(port), *extra]
    proc = servers.start("variant", cmd, log, env)
    wait_http(port, "/", proc, log)
    wait_workers(proc.pid, int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1)
    return port, proc


def importable(module: str, env: dict) -> bool:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, timeout=60,
                          check=False)
    return done.returncode == 0


def pick_workers(runs: dict) -> int:
    """The worker count with the most req/s among those meeting p99 <= 25 ms (else the most req/s)."""
    good = [w for w, r in runs.items() if r["p99_ms"] is not None and r["p99_ms"] <= 25]
    return max(good or list(runs), key=lambda w: runs[w]["rps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1000, help="devices of the small site (RSS comparison)")
    parser.add_argument("--size", type=int, default=1 << 20, help="firmware bytes")
    parser.add_argument("--workers", default="1,2,3,4", help="worker counts to try for /api/firmware")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--variants", action="store_true",
                        help="also try worker classes/threads/parsers `otapub serve` does not expose")
    parser.add_argument("--extra-path", default="",
                        help="PYTHONPATH entries with optional modules for --variants (gevent, gunicorn_h1c), "
                             "e.g. from `pip install --target DIR`; never added to the main runs")
    parser.add_argument("--no-njs", action="store_true",
                        help="skip the njs prototype of /api/firmware (run when nginx's js module is installed)")
    parser.add_argument("--quiet-wait", type=float, default=15.0,
                        help="before each wrk run wait up to this many seconds for an idle machine")
    parser.add_argument("--tmpdir", type=Path, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian",
                        help="production server `otapub serve` runs the shim under")
    args = parser.parse_args(argv)
    args.duration = max(1, min(args.duration, 60))
    worker_counts = [max(1, min(int(w), 16)) for w in args.workers.split(",") if w.strip()][:6]
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    run_started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="otapub-bench-shim-", dir=args.tmpdir))
    servers = Servers()
    res: dict = {"machine": machine.describe(), "wrk": machine.tool_version(["wrk", "-v"]),
                 "nginx": machine.tool_version(["nginx", "-v"]), "devices": args.devices, "small": args.small,
                 "size": args.size, "duration": args.duration, "server": args.server, "shim": {}, "rss": {},
                 "variants": {}}
    qw = args.quiet_wait
    d = args.duration
    try:
        big, summary, took = prepare(tmp, "big", args.devices, args.size)
        print(f"big site: {summary} (generate + build {took:.1f}s)", flush=True)
        small, summary, took = prepare(tmp, "small", args.small, args.size)
        print(f"small site: {summary} (generate + build {took:.1f}s)", flush=True)
        api, headers, answer, firmware = device_request(big)
        size = (big.root / "site" / firmware.lstrip("/")).stat().st_size
        res["request"] = {"api": api, "answer": "/d/<TOKEN>/<MAC12>.json", "firmware": firmware, "size": size}

        # nginx: (a) the answer as a static file, (c) the firmware; it stays up for a second (a) at the end
        nport, nproc = start_nginx(servers, tmp, big.root / "site")
        status, _h, body = get(nport, answer)
        assert status == 200 and json.loads(body)["firmware_url"], (status, body[:200])
        res["nginx_answer"] = wrk(f"http://{HOST}:{nport}{answer}", d, pids=server_pids(nproc.pid), quiet_wait=qw)
        print(show("(a) nginx static answer", res["nginx_answer"]), flush=True)
        res["nginx_download"] = wrk(f"http://{HOST}:{nport}{firmware}", d, pids=server_pids(nproc.pid),
                                    quiet_wait=qw)
        print(show("(c) nginx firmware download", res["nginx_download"], size), flush=True)

        # the shim: (b) /api/firmware per worker count, each a fresh `otapub serve`; RSS after the load
        for workers in worker_counts:
            port, proc = start_shim(servers, big.root, workers, tmp, args.server)
            status, _h, body = get(port, api, headers)
            if status != 200 or json.loads(body).get("update_available") is not True:
                raise RuntimeError(f"expected update_available: true from the shim, got {status} {body[:300]!r}")
            r = wrk(f"http://{HOST}:{port}{api}", d, headers, pids=server_pids(proc.pid), quiet_wait=qw)
            r["worker_rss_kb"] = [vm_rss_kb(p) for p in worker_pids(proc.pid)]
            res["shim"][workers] = r
            print(show(f"(b) shim /api/firmware, {workers} worker(s)", r), flush=True)
            servers.stop(proc)
        best = res["best_workers"] = pick_workers(res["shim"])
        res["rss"]["big"] = res["shim"][best]["worker_rss_kb"]

        # (c) shim download with the chosen worker count
        port, proc = start_shim(servers, big.root, best, tmp, args.server)
        status, _h, body = get(port, firmware)
        assert status == 200 and len(body) == size, (status, len(body))
        res["shim_download"] = wrk(f"http://{HOST}:{port}{firmware}", d, pids=server_pids(proc.pid), quiet_wait=qw)
        print(show(f"(c) shim firmware download, {best} w", res["shim_download"], size), flush=True)
        servers.stop(proc)

        # worker RSS for the small site, after the same load
        port, proc = start_shim(servers, small.root, best, tmp, args.server)
        s_api, s_headers, _a, _f = device_request(small)
        status, _h, body = get(port, s_api, s_headers)
        assert status == 200 and json.loads(body).get("update_available") is True, (status, body[:300])
        res["small_api"] = wrk(f"http://{HOST}:{port}{s_api}", d, s_headers, pids=server_pids(proc.pid),
                               quiet_wait=qw)
        res["rss"]["small"] = [vm_rss_kb(p) for p in worker_pids(proc.pid)]
        print(show(f"(b) shim /api/firmware, small site, {best} w", res["small_api"]), flush=True)
        servers.stop(proc)

        if args.variants:
            extra_env = child_env()
            if args.extra_path:
                extra_env["PYTHONPATH"] = args.extra_path + os.pathsep + extra_env["PYTHONPATH"]
            for label, extra, needs in VARIANTS:
                env = extra_env if needs else child_env()
                missing = [m for m in needs if not importable(m, env)]
                if missing:
                    print(f"variant {label!r} skipped: {', '.join(missing)} not importable (see --extra-path)")
                    continue
                port, proc = start_variant(servers, big.root, extra, tmp, env)
                r = wrk(f"http://{HOST}:{port}{api}", d, headers, pids=server_pids(proc.pid), quiet_wait=qw)
                res["variants"][label] = r
                print(show(f"variant: {label}"[:46], r), flush=True)
                servers.stop(proc)

        if not args.no_njs and NJS_MODULE.is_file():
            jport, jproc = start_nginx(servers, tmp, big.root / "site", njs=True)
            status, _h, body = get(jport, api, headers)
            if status != 200 or json.loads(body).get("update_available") is not True:
                raise RuntimeError(f"njs prototype: expected update_available: true, got {status} {body[:300]!r}")
            res["njs"] = wrk(f"http://{HOST}:{jport}{api}", d, headers, pids=server_pids(jproc.pid), quiet_wait=qw)
            print(show("experiment: njs /api/firmware", res["njs"]), flush=True)
            servers.stop(jproc)

        res["nginx_answer_again"] = wrk(f"http://{HOST}:{nport}{answer}", d, pids=server_pids(nproc.pid),
                                        quiet_wait=qw)
        print(show("(a) nginx static answer, again", res["nginx_answer_again"]), flush=True)
    finally:
        servers.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    best = res["best_workers"]
    b = res["shim"][best]
    na, na2, nd, sd = res["nginx_answer"], res["nginx_answer_again"], res["nginx_download"], res["shim_download"]
    nginx_rps = (na["rps"] + na2["rps"]) / 2
    rss_big = sum(res["rss"]["big"]) / len(res["rss"]["big"])
    rss_small = sum(res["rss"]["small"]) / len(res["rss"]["small"])
    ratios = {"api_vs_static_rps": b["rps"] / nginx_rps,
              "download_throughput": (sd["transfer_bps"] or 0) / (nd["transfer_bps"] or 1),
              "rss_big_vs_small": rss_big / rss_small,
              "api_vs_static_cpu_per_req": (b["cpu_per_req_us"] or 0) / (na["cpu_per_req_us"] or 1)}
    res["ratios"] = ratios
    m = res["machine"]
    print()
    print(f"{m['date']}; {m['nproc']} x {m['cpu']}; {res['wrk']}; {res['nginx']}; Python {m['python']}")
    print(f"wrk -t2 -c64 -d{d}s --latency; wrk and the server share the {m['nproc']} CPUs; "
          f"{args.devices}-device site (RSS also on a {args.small}-device one)")
    print(show("(a) nginx static answer JSON", na))
    print(show("(a) nginx static answer JSON, again", na2))
    for w, r in res["shim"].items():
        mark = " <- chosen" if w == best else ""
        print(show(f"(b) shim /api/firmware, {w} worker(s)", r) + f"  RSS {r['worker_rss_kb']} kB{mark}")
    print(show(f"(b) shim, small site, {best} worker(s)", res["small_api"]))
    for label, r in res["variants"].items():
        print(show(f"variant: {label}"[:46], r))
    if "njs" in res:
        print(show("experiment: nginx+njs /api/firmware", res["njs"])
              + f"  = {100 * res['njs']['rps'] / nginx_rps:.0f}% of static")
    print(show("(c) nginx firmware download", nd, size))
    print(show(f"(c) shim firmware download, {best} w", sd, size))
    print(f"worker VmRSS after the /api/firmware load: {args.devices} devices {res['rss']['big']} kB, "
          f"{args.small} devices {res['rss']['small']} kB")
    print("ratios: " + ", ".join(f"{k} = {v:.3f}" for k, v in ratios.items()))
    targets = [
        ("/api/firmware >= 20% of nginx static req/s", ratios["api_vs_static_rps"] >= 0.20,
         f"{100 * ratios['api_vs_static_rps']:.1f}% ({b['rps']:.0f} vs {nginx_rps:.0f} req/s, {best} workers)"),
        ("/api/firmware p99 <= 25 ms", b["p99_ms"] is not None and b["p99_ms"] <= 25, f"{b['p99_ms']:.2f} ms"),
        ("download throughput >= 50% of nginx", ratios["download_throughput"] >= 0.5,
         f"{100 * ratios['download_throughput']:.1f}% ({(sd['transfer_bps'] or 0) / 1e6:.0f} vs "
         f"{(nd['transfer_bps'] or 0) / 1e6:.0f} MB/s)"),
        ("worker RSS same for small and big site (±10%)", abs(ratios["rss_big_vs_small"] - 1) <= 0.10,
         f"{rss_big / 1024:.1f} vs {rss_small / 1024:.1f} MB"),
        ("no errors under load", all(r["non2xx"] == 0 and r["socket_errors"] == 0
                                     for r in (na, na2, nd, sd, res["small_api"], *res["shim"].values())), ""),
    ]
    res["targets"] = [{"target": t, "pass": bool(ok), "value": v} for t, ok, v in targets]
    print()
    for t, ok, v in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {t:<48} {v}")
    res["total_s"] = time.monotonic() - run_started
    print(f"\nbenchmark took {res['total_s']:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        for r in (na, na2, nd, sd, res["small_api"], *res["shim"].values(), *res["variants"].values(),
                  *([res["njs"]] if "njs" in res else [])):
            r.pop("raw", None)
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
