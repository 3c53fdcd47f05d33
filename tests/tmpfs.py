"""Real storage faults for tests: a small tmpfs as the cache folder (full when filled), read-only when remounted; any
folder made read-only by a read-only bind mount of itself (`read_only`).

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


class ReadOnlyBind:
    """`path` bind-mounted on itself, read-only (as `mount -o remount,ro` makes a whole file system) until `writable()`;
    unmounted after the block. A file open for writing on it makes the kernel refuse the read-only remount (EBUSY):
    for a folder no process writes to at that moment (a stopped proxy)."""

    def __init__(self, path: Path):
        self.path = path

    def read_only(self) -> None:
        done = _mount("-o", "remount,bind,ro", str(self.path))
        assert done.returncode == 0, done.stderr

    def writable(self) -> None:
        done = _mount("-o", "remount,bind,rw", str(self.path))
        assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[ReadOnlyBind]:
    """The folder `path` (which exists) read-only for the block: a read-only bind mount of itself."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount for a real read-only cache folder needs root")
    done = _mount("--bind", str(path), str(path))
    if done.returncode != 0:
        pytest.skip(f"a bind mount is not permitted here: {done.stderr.strip()}")
    bind = ReadOnlyBind(path)
    try:
        bind.read_only()
        yield bind
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
