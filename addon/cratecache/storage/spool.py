"""An answer's bytes as they arrive: in memory while small, in a partial file beyond that; hashed on the way.

Partial files live in the cache folder's `partial/` (the same file system as the cache, so a verified file
is moved into place, never copied) and are named after the process writing them, so a process that starts
can delete those of processes that died mid-download (`sweep`). A spool that is not finished is discarded:
nothing partial is ever stored.

When the cache folder cannot take the file (disk full, read-only: `faults.py`), the spool moves to the system's
temporary folder (`PASS_FOLDER`, usually another file system) with what it has so far and goes on there: the answer
is then passed through, served from that file and not kept (`Spooled.passing`). While the cache folder is known not
to be writable, a spool starts there at once (except for the periodic retry that finds out it is writable again).
If the temporary folder cannot take it either (the same full file system), the last resort is memory, up to
`PASS_MEMORY_BYTES` per answer; beyond that the download fails (`NoRoom`).

A partial file in the cache folder counts against the cache's size limit as it grows: before each piece written off
the event loop, `room` (the store's `make_room`, on its store thread) evicts what it takes to stay within it (room.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .faults import Throttle, Writability, describe

logger = logging.getLogger(__name__)

PARTIAL_FOLDER = "partial"
OFFLOAD_BYTES = 1024 * 1024  # a large answer is hashed and written in pieces this size, off the event loop
PASS_FOLDER = "cargo-cache-pass-through"  # in the temporary folder: answers the cache folder could not take
PASS_MEMORY_BYTES = 256 * 1024 * 1024  # an answer neither the cache folder nor the temporary folder can take: held
# in memory up to this size (a large toolchain component fits; a bigger answer fails with a 502 naming the reason)

_elsewhere_warnings = Throttle()


class NoRoom(RuntimeError):
    """Neither the cache folder, the temporary folder nor the memory bound could hold an answer."""


def pass_folder() -> Path:
    return Path(tempfile.gettempdir()) / PASS_FOLDER


@dataclass(frozen=True)
class Spooled:
    sha256: str
    size: int
    body: bytes | None  # the bytes, when they stayed in memory
    path: Path | None  # else the finished partial file (the caller moves it into the store or discards it)
    passing: bool = False  # the cache folder could not take it: its file is in the temporary folder (or, if that
    # could not take it either, its bytes are in `body`)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class Spool:
    def __init__(self, directory: Path, threshold: int, writability: Writability | None = None,
                 elsewhere: Path | None = None, memory_limit: int = PASS_MEMORY_BYTES,
                 room: Callable[[int], Awaitable[object]] | None = None):
        self.folder, self.threshold = directory / PARTIAL_FOLDER, threshold
        self.room = room
        self.writability, self.elsewhere = writability, elsewhere or pass_folder()
        self.memory_limit = memory_limit
        self.passing = False
        self._in_memory = False  # the last resort: neither folder could take it
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
            held = self._open_file()  # here, not in the thread: a discard (a cancelled download) always finds the file
            if self.room is not None and not self.passing and not self._in_memory:
                await self.room(len(held) + len(piece))  # bound for the cache folder: room for it there first
            await asyncio.to_thread(self._write_after, held, piece)

    async def afinish(self) -> Spooled:
        """`finish` for the event loop: an answer that stayed in memory at once; one that goes to a file gets its
        last piece (and what memory held, if it only now outgrew it) written and the file closed on a thread."""
        if self._file is None and not self._pending:
            return self.finish()
        held = self._open_file()
        return await asyncio.to_thread(self._finish_after, held)

    def _write_after(self, held: bytearray, piece: bytes) -> None:
        self._put(held)
        self.write(piece)

    def _finish_after(self, held: bytearray) -> Spooled:
        self._put(held)
        return self.finish()

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
        self._put(self._open_file())

    def _open_file(self) -> bytearray:
        """`_open` without the writing: opens the partial file (if none is open) and hands back what memory held, for
        the caller to write to it before anything else (`_put`)."""
        if self._file is not None or self._in_memory:
            return bytearray()
        held, self._memory = self._memory, bytearray()
        try:
            if self.writability is not None and not self.writability.keep():
                self.passing = True  # straight to the temporary folder
                self._open_in(self.elsewhere, passing=True)
            else:
                self._open_in(self.folder)
        except OSError as e:
            self._pass_on(e)
        return held

    def _open_in(self, folder: Path, passing: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        # unbuffered: a failed write (a full disk) leaves exactly `_written` bytes in the file, which move on
        self._file = open(path, "xb", buffering=0)  # noqa: SIM115 - closed by finish or discard
        self.path, self.passing, self._written = path, passing, 0

    def _put(self, data: bytes) -> None:
        if self._in_memory:
            self._memory += data
            if len(self._memory) > self.memory_limit:
                raise NoRoom(f"no room to hold the answer: the cache folder and the temporary folder cannot take it "
                             f"and it is larger than {self.memory_limit} bytes")
            return
        view = memoryview(data)
        while view:
            try:
                n = self._file.write(view)
            except OSError as e:
                self._pass_on(e)
                if self._in_memory:
                    self._put(bytes(view))
                    return
                continue
            view, self._written = view[n:], self._written + n

    def _pass_on(self, error: OSError) -> None:
        """The folder being written failed (full, read-only): from the cache folder on to the temporary folder, from
        there on to memory, with what was written so far. Any other error ends the download (raised; `discard`
        cleans up)."""
        if self.writability is None or describe(error) is None:
            raise error
        if not self.passing:
            self.writability.failed("spool", error)
        elif _elsewhere_warnings.allow(time.monotonic()):
            logger.warning("cargo-cache: the temporary folder %s cannot take an answer the cache folder could not "
                           "either (%s): holding it in memory (up to %d bytes)", self.elsewhere, describe(error),
                           self.memory_limit)
        old, old_path, written = self._file, self.path, self._written
        self._file = self.path = None
        try:
            if self.passing:
                self._in_memory = True
            else:
                self.passing = True
                try:
                    self._open_in(self.elsewhere, passing=True)
                except OSError as e:
                    self._pass_on(e)  # on to memory
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
            return Spooled(self._hash.hexdigest(), self.size, bytes(self._memory), None, self._in_memory)
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
