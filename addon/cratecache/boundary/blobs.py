"""Large cached files to clients without holding them in memory: a loopback HTTP server of the request addon.

mitmproxy sends a body an addon sets in one piece (and for HTTP/2 copies it into frames first); it streams
only bodies it receives from a server. So for a large cached file the addon answers nothing itself: it
registers the file (opened at once, so an eviction meanwhile cannot take it away) under a random one-time
token and points the flow at this server, which mitmproxy then streams from, chunk by chunk, to the client
over HTTP/1.1 or HTTP/2. The answer (status, headers, which bytes) was decided by the handler already; this
server only copies those bytes.

A file registered with the digest it was stored under (`Check`) is hashed whole while it is sent (read once, in
pieces, off the event loop; for a range, the bytes around it are hashed unsent), and the last piece of the body is
held back until the whole file has hashed: bytes that changed on the disk (bit rot) end the connection without it,
so the client sees a failed download and retries, and `Check.damaged` is told (to evict the entry). A file
registered without one is copied with `sendfile`: the request addon hashes a file of up to `PRECHECK_BYTES` before
its first byte instead (read twice, the second time from the page cache), so that damage there is a miss fetched
again on the same request rather than a cut download.

It listens on 127.0.0.1 only, on a port of its own choosing, and answers nothing but registered tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import BinaryIO

logger = logging.getLogger(__name__)

UNCLAIMED_SECONDS = 30.0  # mitmproxy fetches a registration at once; one still unclaimed after this is closed
MAX_HEADER_BYTES = 16 * 1024
PIECE_BYTES = 512 * 1024  # read and hashed per hand-off to a thread while a checked file is sent
PRECHECK_BYTES = 16 * 1024 * 1024  # a file up to this size is hashed before its first byte (`file_sha256`)


@dataclass(frozen=True)
class Check:
    """What a registered file's bytes must hash to, and who to tell when they do not."""
    sha256: str
    size: int  # of the whole file
    damaged: Callable[[str], None]  # called with the digest the bytes had instead


class Damaged(Exception):
    """A checked file's bytes did not hash to its digest: the body was cut short."""


@dataclass
class _Blob:
    file: BinaryIO
    offset: int
    length: int
    status: int
    headers: dict[str, str]
    check: Check | None = None
    timer: asyncio.TimerHandle | None = None


class BlobServer:
    def __init__(self, unclaimed_seconds: float = UNCLAIMED_SECONDS) -> None:
        self.unclaimed_seconds = unclaimed_seconds
        self._blobs: dict[str, _Blob] = {}
        self._server: asyncio.Server | None = None
        self._starting = asyncio.Lock()
        self.port = 0

    async def start(self) -> None:
        """Listen, once: concurrent callers (the first large downloads arriving together) share one server."""
        if self._server is not None:
            return
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None
        for blob in self._blobs.values():
            _close(blob)
        self._blobs.clear()

    def register(self, path: str, offset: int, length: int, status: int, headers: dict[str, str],
                 check: Check | None = None) -> str:
        """Open `path` now and return the one-time token under which `length` bytes from `offset` are served,
        checked against `check` if given. The file is closed when it has been served, when `discard` is called (the
        flow ended without fetching it: the client went away, or the flow was answered otherwise), or
        `unclaimed_seconds` after this at the latest. Raises OSError if the file cannot be opened (evicted since it
        was looked up, or no descriptor is left)."""
        file = open(path, "rb")  # noqa: SIM115 - closed when served, discarded or expired
        token = secrets.token_urlsafe(24)
        blob = _Blob(file, offset, length, status, headers, check)
        self._blobs[token] = blob
        with contextlib.suppress(RuntimeError):  # no running loop (unit tests): discard() still closes it
            blob.timer = asyncio.get_running_loop().call_later(self.unclaimed_seconds, self.discard, token)
        return token

    def discard(self, token: str | None) -> None:
        """Close a registration that was not fetched (a no-op once it was, or for None)."""
        blob = self._blobs.pop(token, None) if token else None
        if blob is not None:
            _close(blob)

    @property
    def open_files(self) -> int:
        """Registered files not yet fetched (for tests and the status page)."""
        return len(self._blobs)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if len(head) > MAX_HEADER_BYTES:
                    return
                parts = head.split(b"\r\n", 1)[0].split()
                token = parts[1].decode("ascii", "replace").lstrip("/") if len(parts) == 3 else ""
                blob = self._blobs.pop(token, None)
                if blob is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                try:
                    await self._send(writer, blob)
                finally:
                    _close(blob)
        except Damaged:
            return  # the connection closes without the body's end: the client's download fails
        except (ConnectionError, OSError) as e:
            logger.debug("cargo-cache: a streamed download ended early: %s", e)
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, blob: _Blob) -> None:
        reason = HTTPStatus(blob.status).phrase
        lines = [f"HTTP/1.1 {blob.status} {reason}", *(f"{k}: {v}" for k, v in blob.headers.items()),
                 f"Content-Length: {blob.length}"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        if blob.check is not None:
            await _send_checked(writer, blob, blob.check)
        elif blob.length:
            loop = asyncio.get_running_loop()
            await loop.sendfile(writer.transport, blob.file, blob.offset, blob.length)


async def _send_checked(writer: asyncio.StreamWriter, blob: _Blob, check: Check) -> None:
    """The body's bytes, with the whole file hashed on the way (read once); the last piece is sent only if the
    digest is right. Raises Damaged (having told `check.damaged`) if it is not."""
    hasher, fd = hashlib.sha256(), blob.file.fileno()
    start, end = blob.offset, blob.offset + blob.length
    held, position = b"", 0
    while position < check.size:
        piece = await asyncio.to_thread(_read_hashed, fd, position, min(PIECE_BYTES, check.size - position), hasher)
        if not piece:
            break  # shorter than stored: the digest below cannot match
        body = piece[max(start - position, 0):max(end - position, 0)]
        position += len(piece)
        if body:
            if held:
                writer.write(held)
                await writer.drain()
            held = body
    actual = hasher.hexdigest()
    if actual != check.sha256:
        check.damaged(actual)
        raise Damaged(actual)
    if held:
        writer.write(held)
        await writer.drain()


def file_sha256(path: str, size: int) -> str:
    """The SHA-256 of the first `size` bytes of the file at `path` (blocking: for a thread)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while size > 0 and (piece := file.read(min(PIECE_BYTES, size))):
            hasher.update(piece)
            size -= len(piece)
    return hasher.hexdigest()


def _read_hashed(fd: int, position: int, size: int, hasher) -> bytes:
    piece = os.pread(fd, size, position)
    hasher.update(piece)  # hashlib releases the GIL for large pieces
    return piece


def _close(blob: _Blob) -> None:
    if blob.timer is not None:
        blob.timer.cancel()
    blob.file.close()
