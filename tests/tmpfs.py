"""Real storage faults for tests: a small tmpfs as the cache folder (full when filled), read-only when remounted.

Mounting needs root (CAP_SYS_ADMIN); where it is not permitted, the test using it is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path` for the block (unmounted after, whatever happened)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a real full/read-only disk needs root")
    done = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _mount("-o", "remount,rw", str(path))
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # still busy: detached at once


def fill(path: Path, leave: int = 0) -> Path:
    """A filler file taking the free space of `path`'s file system but `leave` bytes; returns it (delete it to free
    the space)."""
    filler = path / "filler"
    with open(filler, "wb") as f:
        free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
        chunk = b"\0" * (1 << 20)
        left = max(0, free - leave)
        with contextlib.suppress(OSError):  # full before `left` (metadata): as full as it gets
            while left > 0:
                n = f.write(chunk[:min(left, len(chunk))])
                f.flush()
                left -= n
    return filler


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def files(path: Path, *, exclude: tuple[str, ...] = ("filler",)) -> list[str]:
    """Every file under `path` (relative), but the filler."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name not in exclude)
