"""blobs.py: a registered file is open exactly as long as its flow needs it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from cratecache.boundary.blobs import BlobServer


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
