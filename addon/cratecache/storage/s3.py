"""The s3 backend: a bucket shared by a fleet of gateways, with this gateway's cache folder as a local tier.

Objects under the configured prefix:
- `blob/<sha256>`   the bytes, content-addressed, written create-only (If-None-Match: *).
- `meta/<key>`      JSON `Meta` naming the blob; the commit point, written only after its blob, so an entry
                    is visible complete or not at all. Crates never change: their meta is create-only and
                    the first complete copy wins. Index files and config.json are replaced whole; a
                    revalidation (304) and a catch-up upload write with If-Match on the meta's ETag, so
                    neither can bring back bytes another gateway has replaced.
- `lease/<key>`     the gateway fetching a missed key (leases.py).
- `negative/<key>`  {"reason", "expires_at"}: no upstream has it.
- `purged/<key>`, `purged-all`: what `cache-purge` removed, for the other gateways' local tiers (purges.py).

Reads go memory -> local tier -> bucket (a bucket hit is copied into the local tier). Freshness travels in
the meta: a gateway whose local copy is due claims the key, and the claim reads the bucket's meta, so one
gateway's revalidation refreshes the entry for all of them.

When the bucket is down (bucket.py) reads use the local tier, leases fall back to this host's, and writes
go to the local tier with their keys marked pending there; `maintain` (the upkeep addon's) and `flush`
(the command line's) upload them once the bucket answers (uploads.py). Listing, purging and import need
the bucket.

`S3Storage` decides what an outage means for each operation; the bucket's side of entries (pull, publish,
revalidate, list, delete) is remote.py's `RemoteEntries`, the catch-up of pending uploads uploads.py's `Uploads`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..config import S3Settings
from . import Storage, StorageUnavailable
from .bucket import Bucket, BucketDown
from .disk import DiskStorage
from .leases import Leases
from .local import HASH_OFFLOAD_BYTES, Entry, LocalStore, Meta, make_entry
from .purges import Purges
from .remote import Listings, RemoteEntries, local_call
from .spool import Spooled
from .uploads import Uploads

logger = logging.getLogger(__name__)

GC_GRACE_SECONDS = 3600  # a blob younger than this may belong to a meta being written
PENDING_RESCAN_SECONDS = 60.0  # how often the proxy looks for entries a command left pending
FIRST_PAGE = 50  # entries of a listing's first page (entry_pages)


class S3Storage(Storage):
    backend = "s3"
    poll_seconds = 0.1

    def rotate_credentials(self, s3: S3Settings) -> None:
        self.bucket.rotate(s3)

    def __init__(self, local: LocalStore, settings: S3Settings):
        self.local = local
        self.writability = local.writability
        self.tier = DiskStorage(local)
        self.directory = local.directory
        self.damage = local.damage
        self.bucket = Bucket(settings)
        self.bucket.on_call = lambda op, seconds, ok: self.on_call and self.on_call(self.backend, op, seconds, ok)
        self.leases = Leases(self.bucket, self.tier)
        self.purges = Purges(self.bucket, self.tier)
        self.remote = RemoteEntries(self.bucket, self.tier, self.spool, lambda key: self.uploads.queue(key))
        self.uploads = Uploads(local, self.tier, self.bucket, self.purges, self.remote)
        self.listings = Listings(self.remote)
        self._rescan_at = time.monotonic() + PENDING_RESCAN_SECONDS

    def keeps(self) -> bool:
        """Always: what the local tier cannot take still goes to the bucket (`put`)."""
        return True

    # -- memory ------------------------------------------------------------------------------
    def peek(self, key: str) -> Entry | None:
        return self.tier.peek(key)

    def note_hit(self, key: str) -> None:
        self.tier.note_hit(key)

    # -- entries -----------------------------------------------------------------------------
    async def get(self, key: str) -> Entry | None:
        entry = await local_call("read", self.tier.get, key)
        if entry is not None:
            return entry
        try:
            return await self.remote.pull(key, None)
        except BucketDown:
            return None

    async def latest(self, key: str) -> Entry | None:
        try:
            return await self.remote.pull(key, await local_call("read", self.tier.get, key))
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def meta(self, key: str) -> Meta | None:
        try:
            return await self.remote.meta(key)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def put(self, key: str, body: bytes, upstream: str, etag: str | None = None,
                  last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        try:
            return await self._put(key, body, upstream, etag, last_modified, now)
        finally:
            if release:  # the bucket's lease is its own object: given back after the entry's write
                await self.release_lease(key)

    async def _put(self, key: str, body: bytes, upstream: str, etag: str | None,
                   last_modified: str | None, now: float | None) -> Entry:
        if len(body) >= HASH_OFFLOAD_BYTES:
            entry = await asyncio.to_thread(make_entry, body, upstream, etag, last_modified, now)
        else:
            entry = make_entry(body, upstream, etag, last_modified, now)
        try:  # the local tier first: this gateway serves it even if the bucket cannot take it
            await self.tier.put_entry(key, entry.meta, body, True)
        except Exception as e:
            try:
                await self.remote.publish(key, entry)
            except BucketDown:
                raise e from None  # stored nowhere: the resolver logs the local failure
            if not self.writability.failed("put", e, key):  # else warned once a minute
                logger.warning("cargo-cache: local tier write failed for %s (%s: %s); stored in the bucket only",
                               key, type(e).__name__, e)
            return entry
        try:
            await self.remote.publish(key, entry)
        except BucketDown:
            await self.uploads.queue(key)
        return entry

    async def put_file(self, key: str, spooled: Spooled, upstream: str, etag: str | None = None,
                       last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        try:
            entry = await self.tier.put_file(key, spooled, upstream, etag, last_modified, now)
            try:
                await self.remote.publish(key, entry)
            except BucketDown:
                await self.uploads.queue(key)
            return entry
        finally:
            if release:
                await self.release_lease(key)

    async def put_entry_file(self, key: str, meta: Meta, path) -> None:
        await self.tier.put_entry_file(key, meta, path)
        entry = await self.tier.get(key)
        if entry is None:
            raise StorageUnavailable(f"{key}: the local tier could not keep it")
        try:
            await self.remote.publish(key, entry, newer_only=True)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def put_entry(self, key: str, meta: Meta, body: bytes) -> None:
        await self.tier.put_entry(key, meta, body)
        try:
            await self.remote.publish(key, Entry(meta, body), newer_only=True)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def evict_damaged(self, key: str, sha256: str, actual: str) -> None:
        """From the local tier; the bucket's copy is checked when it is pulled next."""
        await local_call("write", self.tier.evict_damaged, key, sha256, actual)

    async def mark_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        local = await local_call("write", self.tier.mark_checked, key, now, sha256)
        try:
            remote = await self.remote.checked(key, now, sha256)
        except BucketDown:
            await self.uploads.queue(key)
            remote = None
        return local or remote

    async def set_negative(self, key: str, reason: str, ttl: float) -> None:
        if ttl <= 0:
            return
        await self.tier.set_negative(key, reason, ttl)
        try:
            await self.remote.set_negative(key, reason, ttl)
        except BucketDown:
            pass  # remembered here; other gateways ask the upstreams once more

    async def negative(self, key: str) -> str | None:
        local = await local_call("read", self.tier.negative, key)
        if local is not None:
            return local
        try:
            return await self.remote.negative(key)
        except BucketDown:
            return None

    # -- leases ------------------------------------------------------------------------------
    async def claim(self, key: str, ttl: float, usable: Callable[[Entry], bool] | None = None
                    ) -> tuple[bool, Entry | None, str | None]:
        # `usable` unused: the resolver has read the store before (`get`, which may pull from the bucket), and what
        # is read under the lease here is the bucket's newest
        owned, in_bucket = await self.leases.acquire(key, ttl)
        if not owned:
            return False, None, None
        try:
            known = await local_call("read", self.tier.get, key)
            if in_bucket:
                try:  # a fetch that finished meanwhile on another gateway may answer
                    entry = await self.remote.pull(key, known)
                    return True, entry, None if entry is not None else await self.remote.negative(key)
                except BucketDown:
                    pass
            return True, known, await local_call("read", self.tier.negative, key)
        except BaseException:  # the caller never gets the lease, so it cannot release it
            await self.leases.release(key)
            raise

    async def lease_holder(self, key: str) -> str | None:
        return await self.leases.current(key)

    async def release_lease(self, key: str) -> None:
        await self.leases.release(key)

    # -- inspection and maintenance ----------------------------------------------------------
    async def entries(self, prefix: str = "") -> list[tuple[str, Meta]]:
        found = [entry async for page in self.entry_pages(prefix) for entry in page]
        return sorted(found, key=lambda entry: entry[0])  # S3 lists by key already; a store that does not, sorted

    async def entry_pages(self, prefix: str = "", size: int = 1000) -> AsyncIterator[list[tuple[str, Meta]]]:
        """The bucket's listing a page at a time, in its order (S3's: by key), each page's metas read when the caller
        asks for it (READ_CONCURRENCY at a time; unreadable ones skipped): memory holds a page and a chunk of the
        listing, whatever the bucket holds. The first page is FIRST_PAGE entries (a meta is a GET each: a listing's
        first lines come after a few of them, not a thousand)."""
        try:
            first = True
            async for keys in self.remote.key_pages("meta/", prefix, size):
                for part in (keys[:FIRST_PAGE], keys[FIRST_PAGE:]) if first else (keys,):
                    metas = await self.remote.metas(part)
                    if page := [(k, m) for k, m in zip(part, metas, strict=True) if m is not None]:
                        yield page
                first = False
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def keys(self, prefix: str = "") -> list[str]:
        """The bucket's keys and this gateway's (some may wait to be uploaded); a listing is reused briefly."""
        local = await self.tier.keys(prefix)
        try:
            listed = await self.listings.keys(prefix)
        except BucketDown:
            return local  # offline serving goes on from the local tier
        return sorted(set(local) | set(listed))

    async def delete(self, key: str) -> bool:
        removed = await self.tier.delete(key)
        try:
            existed = await self.remote.delete(key)
            await self.purges.record(key)  # the other gateways drop their local copies
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        await self.uploads.unqueue(key)
        self.listings.clear()
        return removed or existed

    async def clear(self) -> int:
        await self.tier.clear()
        try:
            removed = await self.remote.delete_everything()
            await self.purges.record(None)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        self.uploads.clear()
        self.listings.clear()
        return removed

    async def collect_garbage(self) -> int:
        await self.tier.collect_garbage()
        referenced = await self._named_blobs()
        try:
            candidates = await self.remote.unnamed_blobs(referenced, time.time() - GC_GRACE_SECONDS)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        # A meta written meanwhile may name an old blob again (its upload found the blob already there).
        referenced |= await self._named_blobs() if candidates else set()
        orphans = [sha for sha in candidates if sha not in referenced]
        try:
            await self.remote.delete_all("blob/", orphans)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        return len(orphans)

    async def _named_blobs(self) -> set[str]:
        """The blobs the bucket's metas name, read a page at a time (the digests are held, not the listing)."""
        return {meta.sha256 async for page in self.entry_pages() for _, meta in page}

    async def figures(self) -> dict[str, Any]:
        return await self.tier.figures()

    async def add_counts(self, counts: dict[str, int]) -> None:
        await self.tier.add_counts(counts)

    async def counts(self) -> dict[str, int]:
        return await self.tier.counts()

    async def maintain(self) -> None:
        await self.tier.maintain()
        if time.monotonic() >= self._rescan_at:  # a command run on this folder may have left some
            self._rescan_at = time.monotonic() + PENDING_RESCAN_SECONDS
            await self.uploads.rescan()
        if await self.bucket.probe():
            if self.uploads:
                await self.uploads.catch_up()
            try:
                await self.purges.apply()
            except BucketDown:
                pass  # next time

    async def make_room(self, incoming: int) -> None:
        await self.tier.make_room(incoming)  # the local tier's folder

    async def flush(self) -> None:
        await self.uploads.flush()

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.bucket.target, "local_tier": str(self.directory),
                "pending": len(self.uploads), "folder": self.writability.snapshot(), **self.bucket.health()}

    async def close(self) -> None:
        await self.tier.close()

