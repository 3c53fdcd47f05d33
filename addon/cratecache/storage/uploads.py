"""The s3 backend's catch-up: entries stored in the local tier while the bucket was down, marked pending there
(`LocalStore.mark_pending`, so the marks survive restarts and a command's marks reach the proxy), and uploaded
once the bucket answers, unless the bucket has newer or a purge removed them meanwhile. A large entry (kept as a
file, not hashed when read) is hashed before it goes up: bytes that rotted while waiting are evicted, not uploaded
for every gateway to pull."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from . import StorageUnavailable
from .bucket import Bucket, BucketDown
from .disk import DiskStorage
from .local import LocalStore
from .purges import Purges
from .remote import RemoteEntries, local_call

logger = logging.getLogger(__name__)


class Uploads:
    def __init__(self, local: LocalStore, tier: DiskStorage, bucket: Bucket, purges: Purges, remote: RemoteEntries):
        self.local, self.tier, self.bucket, self.purges, self.remote = local, tier, bucket, purges, remote
        self._pending: dict[str, None] = dict.fromkeys(local.pending())  # to upload, oldest first

    def __len__(self) -> int:
        return len(self._pending)

    async def rescan(self) -> None:
        """Add the marks a command run on this folder may have left."""
        self._pending.update(dict.fromkeys(await local_call("read", asyncio.to_thread, self.local.pending) or []))

    async def catch_up(self) -> None:
        """Upload what was stored locally while the bucket was down (unless the bucket has newer)."""
        done = 0
        for key in list(self._pending):
            if key not in self._pending or not self.bucket.available():
                continue
            del self._pending[key]  # a write of the key meanwhile queues it again
            try:
                entry = await local_call("read", self.tier.get, key)
                if entry is not None and entry.meta.stored_at <= await self.purges.purged_at(key):
                    await local_call("write", self.tier.delete, key)  # purged meanwhile: not to be brought back
                elif entry is not None and await self._intact(key, entry):
                    await self.remote.publish(key, entry, newer_only=True)
                    done += 1
            except BucketDown:
                self._pending[key] = None  # the outage goes on, or this one object failed: tried again later
                continue
            if key not in self._pending:
                await local_call("write", asyncio.to_thread, self.local.unmark_pending, key)
        if done:
            logger.info("cargo-cache: caught up %d entries into bucket %s (%d still to go)", done,
                        self.bucket.target, len(self._pending))

    async def _intact(self, key: str, entry) -> bool:
        """Whether a file entry's bytes still hash to its digest (a body was checked when read); if not, it is
        evicted (told and counted as damage)."""
        if entry.file is None:
            return True
        actual = await asyncio.to_thread(_file_sha256, entry.file)
        if actual == entry.meta.sha256:
            return True
        await local_call("write", self.tier.evict_damaged, key, entry.meta.sha256, actual)
        return False

    async def queue(self, key: str) -> None:
        self._pending[key] = None
        await local_call("write", asyncio.to_thread, self.local.mark_pending, key)

    async def unqueue(self, key: str) -> None:
        if key in self._pending:
            del self._pending[key]
            await local_call("write", asyncio.to_thread, self.local.unmark_pending, key)

    async def flush(self) -> None:
        """One more try now (a command is ending); StorageUnavailable if some are still not uploaded."""
        if self._pending:
            self.bucket.retry_at = 0.0
            if await self.bucket.probe():
                await self.catch_up()
        if self._pending:
            raise StorageUnavailable(f"{len(self._pending)} entries are in this host's local tier but not yet in "
                                     f"bucket {self.bucket.target} ({self.bucket.last_error}); the proxy's upkeep "
                                     "or the next command uploads them")

    def clear(self) -> None:
        self._pending.clear()


def _file_sha256(path: str) -> str:
    """The file's digest, or "" when it is gone (evicted meanwhile)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return ""
