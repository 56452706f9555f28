"""What the server processes cost, read from /proc: CPU seconds, RSS, peak RSS, and a background sampler."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    """Direct children of pid (gunicorn's workers of its master)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def status_kib(pid: int, key: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM), in KiB; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Resident set size now, from statm (cheaper to read than status)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except OSError:
        return 0


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next read is this measurement's peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


@dataclass
class Sampler:
    """Sample RSS of a process tree (root and its children) every `interval` seconds in a thread."""

    root: int
    interval: float = 0.02
    peak_each: dict[int, int] = field(default_factory=dict)  # pid -> max VmRSS KiB seen
    peak_total: int = 0  # max of the sum over the tree, KiB
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def pids(self) -> list[int]:
        return [self.root, *children(self.root)]

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self.pids():
                kib = rss_kib(pid)
                total += kib
                if kib > self.peak_each.get(pid, 0):
                    self.peak_each[pid] = kib
            self.peak_total = max(self.peak_total, total)
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of root and each child, keyed by pid."""
    return {pid: cpu_seconds(pid) for pid in [root, *children(root)]}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """CPU used per pid between two `tree_cpu` readings (a worker born in between counts from zero)."""
    return {pid: after[pid] - before.get(pid, 0.0) for pid in after}
