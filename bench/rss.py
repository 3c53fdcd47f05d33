"""Memory and CPU of a process, read from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status, e.g. VmRSS (current) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def disk_read_bytes(pid: int) -> int:
    """Bytes the process has caused to be read from the storage layer (not from the page cache): /proc/<pid>/io."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise KeyError("read_bytes")


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (`5` to clear_refs; needs root or the same user)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def context_switches(pid: int) -> int:
    """Voluntary context switches of the process's main thread (the event loop): each is a wait, e.g. for the GIL."""
    return status_kb(pid, "voluntary_ctxt_switches")


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


class Poller:
    """Calls `sample()` every `interval` seconds in a thread while in its `with` block (and stops early if it
    returns False)."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set() and self.sample() is not False:
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class RssPoller(Poller):
    """Samples VmRSS every `interval` seconds in a thread; `peak` is the highest sample."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(interval)
        self.pid, self.peak = pid, 0.0

    def sample(self) -> bool:
        try:
            self.peak = max(self.peak, rss_mb(self.pid))
        except (OSError, KeyError):
            return False
        return True
