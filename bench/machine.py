"""Machine facts and a guard against noisy neighbours (other test runs on the same 2 cores).

Benchmarks call wait_quiet() before each timed step and report foreign_cpu(): the CPU the rest of
the machine used while the step ran, so a reader can tell a clean number from a contaminated one.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict:
    mem = ""
    try:
        with open("/proc/meminfo") as handle:
            mem = handle.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    kernel = platform.release()
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "mem_total": mem, "kernel": kernel,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def tool_version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "?"


class CPU:
    """Jiffies of the whole machine: busy and total."""

    TICK = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def sample() -> tuple[int, int]:
        """(busy, total) jiffies; busy = user + nice + system: process time only.

        irq/softirq are left out on purpose: loopback TCP traffic of the benchmark itself is
        processed in softirq context and charged to no process, so counting it would make the
        benchmark's own network load look like a foreign process.
        """
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        return fields[0] + fields[1] + fields[2], sum(fields[:8])

    @staticmethod
    def idle_sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        total = sum(fields[:8])
        return total - fields[3] - fields[4], total

    @staticmethod
    def process_jiffies(pids: list[int]) -> int:
        used = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                used += int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                pass
        return used


def busy_fraction(seconds: float = 1.0) -> float:
    b0, t0 = CPU.idle_sample()
    time.sleep(seconds)
    b1, t1 = CPU.idle_sample()
    return (b1 - b0) / max(t1 - t0, 1)


def wait_quiet(max_wait: float = 60.0, threshold: float = 0.15) -> float:
    """Wait (at most max_wait s) until the machine is at most `threshold` busy; return the last reading."""
    deadline = time.monotonic() + max_wait
    busy = busy_fraction(1.0)
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_fraction(1.0)
    return busy


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "?"


def filesystem(path: str) -> str:
    """Type of the file system holding path, from /proc/mounts (longest matching mount point)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, parts[2]
    except OSError:
        pass
    return kind
