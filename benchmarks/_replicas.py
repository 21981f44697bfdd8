"""Shared by the benchmarks: several real `prompt-worker run` replicas on one database, and
CPU and memory readings of processes from /proc (Linux; no psutil needed).

Not a benchmark itself: `make bench` skips modules whose name starts with an underscore.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from tests.support.procs import ServiceProcess, start_service

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_replicas(url: str, count: int, log_dir: Path, **env: str) -> list[ServiceProcess]:
    """`count` real `prompt-worker run` processes on one database, each healthy."""
    services: list[ServiceProcess] = []
    try:
        for _ in range(count):
            services.append(start_service(url, log_dir, **env))
        for service in services:
            service.wait_healthy(timeout=60)
    except BaseException:
        stop_replicas(services)
        raise
    return services


def stop_replicas(services: Iterable[ServiceProcess]) -> None:
    for service in services:
        try:
            service.terminate()
        except Exception:  # noqa: BLE001 - a replica that will not stop is killed instead
            service.kill()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields follow the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def postmaster_pid(datadir: Path) -> int:
    """The PostgreSQL server's pid, from postmaster.pid in a tests.support.pg cluster."""
    return int((datadir / "data" / "postmaster.pid").read_text().split()[0])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its direct children (PostgreSQL's backends), living or
    exited: a child that has exited and been reaped counts in its parent's cutime/cstime."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS
    return own + sum(cpu_seconds(child) for child in children_of(pid))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds all cores together have spent busy since boot (not idle, not iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS


class CpuMeter:
    """CPU use between `start()` and `stop()`, as a share of one core: of named groups of
    processes (`pids`), of named process trees (`trees`, by their root's pid) and, under
    "machine", of every process on the machine (so others' load shows)."""

    def __init__(self, pids: dict[str, list[int]], trees: dict[str, int] | None = None) -> None:
        self.pids = pids
        self.trees = trees or {}
        self._begin: dict[str, float] = {}
        self._t0 = 0.0
        self.shares: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        now = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.pids.items()}
        now.update({name: tree_cpu_seconds(pid) for name, pid in self.trees.items()})
        now["machine"] = machine_busy_seconds()
        return now

    def start(self) -> None:
        self._begin = self._read()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        end = self._read()
        wall = time.perf_counter() - self._t0
        self.shares = {name: (end[name] - self._begin[name]) / wall for name in end}
        return self.shares
