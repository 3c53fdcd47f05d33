"""blobs.py: a registered file is open exactly as long as its flow needs it; a checked one is cut when it rotted."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import pytest
from cratecache.boundary.blobs import BlobServer, Check, file_sha256

from tests.fixtures.rot import flip_byte


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_registration_is_closed_when_discarded_by_its_flow_or_when_never_claimed(tmp_path: Path):
    path = tmp_path / "file"
    path.write_bytes(b"x" * 100)
    blobs = BlobServer(unclaimed_seconds=0.05)
    before = open_fds()
    discarded = blobs.register(str(path), 0, 100, 200, {})
    blobs.register(str(path), 0, 100, 200, {})  # never claimed, never discarded
    assert open_fds() == before + 2 and blobs.open_files == 2

    blobs.discard(discarded)
    blobs.discard(discarded)  # twice, or after it was served: a no-op
    blobs.discard(None)
    assert open_fds() == before + 1
    await asyncio.sleep(0.2)
    assert open_fds() == before and blobs.open_files == 0


async def test_a_claimed_registration_is_served_once_and_closed(tmp_path: Path):
    path = tmp_path / "file"
    path.write_bytes(b"0123456789")
    blobs = BlobServer()
    await blobs.start()
    try:
        token = blobs.register(str(path), 2, 5, 206, {"Content-Range": "bytes 2-6/10"})
        async with httpx.AsyncClient(trust_env=False) as client:
            first = await client.get(f"http://127.0.0.1:{blobs.port}/{token}")
            again = await client.get(f"http://127.0.0.1:{blobs.port}/{token}")
    finally:
        await blobs.stop()

    assert first.status_code == 206 and first.content == b"23456"
    assert again.status_code == 404
    assert blobs.open_files == 0


async def _fetch(blobs: BlobServer, token: str) -> tuple[int, bytes, str | None]:
    """(status, the body bytes received, the error that ended the body early or None)."""
    received = bytearray()
    async with httpx.AsyncClient(trust_env=False) as client:
        async with client.stream("GET", f"http://127.0.0.1:{blobs.port}/{token}") as response:
            try:
                async for chunk in response.aiter_raw():
                    received += chunk
            except httpx.RemoteProtocolError as e:
                return response.status_code, bytes(received), str(e)
    return response.status_code, bytes(received), None


@pytest.mark.parametrize("offset, length", [(0, None), (100, 1000), (0, 10), (2_999_000, 1000)])
async def test_a_checked_file_is_served_whole_when_its_bytes_match_and_cut_before_its_end_when_they_rotted(
        tmp_path: Path, offset, length):
    data = os.urandom(3_000_000)  # several pieces
    sha256 = hashlib.sha256(data).hexdigest()
    length = len(data) if length is None else length
    path = tmp_path / "file"
    told: list[str] = []
    blobs = BlobServer()
    await blobs.start()
    try:
        path.write_bytes(data)
        good = await _fetch(blobs, blobs.register(str(path), offset, length, 200, {},
                                                  Check(sha256, len(data), told.append)))
        rotten = flip_byte(data, 2_500_000)  # outside most of the ranges: the whole file is checked anyway
        path.write_bytes(rotten)
        cut = await _fetch(blobs, blobs.register(str(path), offset, length, 200, {},
                                                 Check(sha256, len(data), told.append)))
    finally:
        await blobs.stop()

    assert good == (200, data[offset:offset + length], None)
    status, body, error = cut
    assert status == 200 and error is not None and len(body) < length  # the client sees a failed download
    assert body == rotten[offset:offset + len(body)]
    assert told == [hashlib.sha256(rotten).hexdigest()]
    assert blobs.open_files == 0


async def test_a_checked_file_shorter_than_stored_is_cut(tmp_path: Path):
    data = os.urandom(100_000)
    path = tmp_path / "file"
    path.write_bytes(data[:-1])
    told: list[str] = []
    blobs = BlobServer()
    await blobs.start()
    try:
        status, body, error = await _fetch(blobs, blobs.register(str(path), 0, len(data), 200, {},
                                                                 Check(hashlib.sha256(data).hexdigest(), len(data),
                                                                       told.append)))
    finally:
        await blobs.stop()
    assert error is not None and body == b"" and told == [hashlib.sha256(data[:-1]).hexdigest()]


def test_file_sha256_hashes_the_stored_size_in_pieces(tmp_path: Path):
    data = os.urandom(1_300_000)  # three pieces
    path = tmp_path / "file"
    path.write_bytes(data + b"appended")
    assert file_sha256(str(path), len(data)) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path), len(data) + 100) == hashlib.sha256(data + b"appended").hexdigest()  # shorter
