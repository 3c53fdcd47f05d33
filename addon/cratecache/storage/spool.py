"""An answer's bytes as they arrive: in memory while small, in a partial file beyond that; hashed on the way.

Partial files live in the cache folder's `partial/` (the same file system as the cache, so a verified file
is moved into place, never copied) and are named after the process writing them, so a process that starts
can delete those of processes that died mid-download (`sweep`). A spool that is not finished is discarded:
nothing partial is ever stored.

When the cache folder cannot take the file (disk full, read-only: `faults.py`), the spool moves to the system's
temporary folder (`PASS_FOLDER`, usually another file system) with what it has so far and goes on there: the answer
is then passed through, served from that file and not kept (`Spooled.passing`). While the cache folder is known not
to be writable, a spool starts there at once (except for the periodic retry that finds out it is writable again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from .faults import Writability

logger = logging.getLogger(__name__)

PARTIAL_FOLDER = "partial"
OFFLOAD_BYTES = 1024 * 1024  # a large answer is hashed and written in pieces this size, off the event loop
PASS_FOLDER = "cargo-cache-pass-through"  # in the temporary folder: answers the cache folder could not take


def pass_folder() -> Path:
    return Path(tempfile.gettempdir()) / PASS_FOLDER


@dataclass(frozen=True)
class Spooled:
    sha256: str
    size: int
    body: bytes | None  # the bytes, when they stayed in memory
    path: Path | None  # else the finished partial file (the caller moves it into the store or discards it)
    passing: bool = False  # the file is in the temporary folder: the cache folder could not take it

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Spool:
    def __init__(self, directory: Path, threshold: int, writability: Writability | None = None,
                 elsewhere: Path | None = None):
        self.folder, self.threshold = directory / PARTIAL_FOLDER, threshold
        self.writability, self.elsewhere = writability, elsewhere or pass_folder()
        self.passing = False
        self._written = 0  # bytes in the partial file
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
        self._put(data)

    def _open(self) -> None:
        """Move to a partial file (what is in memory first): in the cache folder, or elsewhere if it cannot take it."""
        if self._file is not None:
            return
        held, self._memory = bytes(self._memory), bytearray()
        if self.writability is not None and not self.writability.keep():
            self._open_in(self.elsewhere, passing=True)
        else:
            try:
                self._open_in(self.folder)
            except OSError as e:
                self._pass_on(e)
        self._put(held)

    def _open_in(self, folder: Path, passing: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        # unbuffered: a failed write (a full disk) leaves exactly `_written` bytes in the file, which move on
        self._file = open(path, "xb", buffering=0)  # noqa: SIM115 - closed by finish or discard
        self.path, self.passing, self._written = path, passing, 0

    def _put(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self._file.write(view)
            except OSError as e:
                self._pass_on(e)
                continue
            view, self._written = view[n:], self._written + n

    def _pass_on(self, error: OSError) -> None:
        """The cache folder failed (full, read-only): go on in the temporary folder with what was written so far.
        Any other error, or one there too, ends the download (raised; `discard` cleans up)."""
        if self.passing or self.writability is None or not self.writability.failed("spool", error):
            raise error
        old, old_path, written = self._file, self.path, self._written
        self._file = self.path = None
        try:
            self._open_in(self.elsewhere, passing=True)
            if old is not None:
                with open(old_path, "rb") as kept:
                    while written > 0 and (piece := kept.read(min(written, OFFLOAD_BYTES))):
                        self._put(piece)
                        written -= len(piece)
        finally:
            if old is not None:
                old.close()
                with contextlib.suppress(OSError):
                    old_path.unlink(missing_ok=True)

    def finish(self) -> Spooled:
        if self._pending:  # less than OFFLOAD_BYTES
            piece, self._pending, self._pending_size = b"".join(self._pending), [], 0
            self.write(piece)
        if self._file is None:
            return Spooled(self._hash.hexdigest(), self.size, bytes(self._memory), None)
        self._file.close()
        return Spooled(self._hash.hexdigest(), self.size, None, self.path, self.passing)

    def discard(self) -> None:
        self._pending, self._pending_size = [], 0
        if self._file is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
        self._memory = bytearray()


def sweep(directory: Path) -> int:
    """Delete partial files left by processes that no longer run (in the cache folder, and answers passed through
    from the temporary folder); returns how many."""
    removed = 0
    for path in [*(directory / PARTIAL_FOLDER).glob("*.part"), *pass_folder().glob("*.part")]:
        pid = path.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # a read-only folder: they stay, unused
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
