"""Leases in the bucket: one gateway fetches a missed key while the others wait for its result.

`lease/<key>` holds {"holder", "expires_at"}. It is created with If-None-Match: *, so one gateway gets
it; an expired one (its holder died or hangs) is taken over with If-Match on its ETag, so exactly one
of several takers wins; its holder releases it by overwriting it with an expired record, again with
If-Match on the ETag of its own write, so a release can never end a lease another gateway has taken
over meanwhile. Expiry times are compared across hosts: the gateways' clocks must agree (NTP).

While the bucket is down, leases fall back to this host's (the local store's), so the workers of one
host still coalesce.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid

from .bucket import Bucket, BucketDown
from .disk import DiskStorage
from .records import load_record, number


class Leases:
    def __init__(self, bucket: Bucket, tier: DiskStorage):
        self.bucket, self.tier = bucket, tier
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._held: dict[str, str | None] = {}  # key -> our lease's ETag in the bucket; None: this host's lease

    async def acquire(self, key: str, ttl: float) -> tuple[bool, bool]:
        """(taken, taken in the bucket)."""
        if self.bucket.available():
            try:
                etag = await self._take(key, ttl)
            except BucketDown:
                pass
            else:
                if etag is None:
                    return False, True
                self._held[key] = etag
                return True, True
        if await asyncio.to_thread(self.tier.local.acquire_lease, key, ttl):
            self._held[key] = None
            return True, False
        return False, False

    async def current(self, key: str) -> str | None:
        """Who holds a live lease on `key` (in the bucket; this host's while it is down): the holder and its
        expiry, so a takeover reads as another holder; None if no one does."""
        if self.bucket.available():
            try:
                got = await self.bucket.get(f"lease/{key}")
            except BucketDown:
                pass
            else:
                if got is None or not _live(got[0]):
                    return None
                record = load_record(got[0])
                return f"{record.get('holder')}@{number(record, 'expires_at')}"
        return await self.tier.lease_holder(key)

    async def release(self, key: str) -> None:
        if key not in self._held:
            return
        etag = self._held.pop(key)
        if etag is None:
            await self.tier.release_lease(key)
            return
        path = f"lease/{key}"
        try:
            if etag:  # expire it, unless it was taken over meanwhile (then the condition fails: nothing written)
                await self.bucket.put(path, self._record(0.0), if_match=etag)
            else:  # the store gives no ETags: delete it if it still names us
                got = await self.bucket.get(path)
                if got is not None and load_record(got[0]).get("holder") == self.holder:
                    await self.bucket.delete(path)
        except BucketDown:
            pass  # it expires by itself

    async def _take(self, key: str, ttl: float) -> str | None:
        """Our lease's ETag if we took it, else None."""
        path, record = f"lease/{key}", self._record(time.time() + ttl)
        etag = await self.bucket.put(path, record, create=True)
        if etag is not None:
            return etag
        got = await self.bucket.get(path)
        if got is None:  # released and deleted meanwhile
            return await self.bucket.put(path, record, create=True)
        if _live(got[0]):
            return None
        # Expired: released, or its holder died or hangs. If-Match: exactly one of several takers wins.
        if got[1]:
            return await self.bucket.put(path, record, if_match=got[1])
        await self.bucket.delete(path)  # the store gives no ETags: make room, then the create decides
        return await self.bucket.put(path, record, create=True)

    def _record(self, expires_at: float) -> bytes:
        return json.dumps({"holder": self.holder, "expires_at": expires_at}).encode()


def _live(raw: bytes) -> bool:
    return number(load_record(raw), "expires_at") > time.time()
