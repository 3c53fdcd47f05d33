"""An answer's bytes as they arrive: in memory while small, in a partial file beyond that; hashed on the way.

Partial files live in the cache folder's `partial/` (the same file system as the cache, so a verified file
is moved into place, never copied) and are named after the process writing them, so a process that starts
can delete those of processes that died mid-download (`sweep`). A spool that is not finished is discarded:
nothing partial is ever stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PARTIAL_FOLDER = "partial"
OFFLOAD_BYTES = 1024 * 1024  # a large answer is hashed and written in pieces this size, off the event loop


@dataclass(frozen=True)
class Spooled:
    sha256: str
    size: int
    body: bytes | None  # the bytes, when they stayed in memory
    path: Path | None  # else the finished partial file (the caller moves it into the store or discards it)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Spool:
    def __init__(self, directory: Path, threshold: int):
        self.folder, self.threshold = directory / PARTIAL_FOLDER, threshold
        self._hash = hashlib.sha256()
        self._memory = bytearray()
        self._file = None
        self.path: Path | None = None
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    async def awrite(self, data: bytes) -> None:
        """`write` for the event loop: small answers in memory at once; beyond the threshold, hashing and writing
        go to a thread in pieces of OFFLOAD_BYTES (hashlib and file writes release the GIL), so the loop goes on
        serving other clients meanwhile."""
        if self._file is None and self.size + self._pending_size + len(data) <= self.threshold:
            self.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= OFFLOAD_BYTES:
            piece, self._pending, self._pending_size = b"".join(self._pending), [], 0
            self._open()  # here, not in the thread: a discard (a cancelled download) then always finds the file
            await asyncio.to_thread(self.write, piece)

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        if self._file is None and self.size <= self.threshold:
            self._memory += data
            return
        self._open()
        self._file.write(data)

    def _open(self) -> None:
        """Move to a partial file (what is in memory first)."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex}.part"
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed by finish or discard
            self._file.write(self._memory)
            self._memory = bytearray()

    def finish(self) -> Spooled:
        if self._pending:  # less than OFFLOAD_BYTES
            piece, self._pending, self._pending_size = b"".join(self._pending), [], 0
            self.write(piece)
        if self._file is None:
            return Spooled(self._hash.hexdigest(), self.size, bytes(self._memory), None)
        self._file.close()
        return Spooled(self._hash.hexdigest(), self.size, None, self.path)

    def discard(self) -> None:
        self._pending, self._pending_size = [], 0
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
        self._memory = bytearray()


def sweep(directory: Path) -> int:
    """Delete partial files left by processes that no longer run; returns how many."""
    removed = 0
    for path in (directory / PARTIAL_FOLDER).glob("*.part"):
        pid = path.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("cargo-cache: removed %d partial download(s) left by stopped processes", removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
