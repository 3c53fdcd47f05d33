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
(the command line's) upload them once the bucket answers. Listing, purging and import need the bucket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from ..config import S3Settings
from . import Storage, StorageUnavailable
from .bucket import Bucket, BucketDown
from .disk import DiskStorage
from .leases import Leases
from .local import HASH_OFFLOAD_BYTES, Entry, LocalStore, Meta, as_file, make_entry, sha256_hex
from .purges import Purges
from .records import MAX_ENTRY_BYTES, load_record, meta_problem, number
from .spool import Spooled

logger = logging.getLogger(__name__)

READ_CONCURRENCY = 16
GC_GRACE_SECONDS = 3600  # a blob younger than this may belong to a meta being written
LISTING_TTL = 30.0  # seconds a listing of staged versions is reused (offline index pruning)
LISTINGS_KEPT = 1024
PENDING_RESCAN_SECONDS = 60.0  # how often the proxy looks for entries a command left pending


class S3Storage(Storage):
    backend = "s3"
    poll_seconds = 0.1

    def rotate_credentials(self, s3: S3Settings) -> None:
        self.bucket.rotate(s3)

    def __init__(self, local: LocalStore, settings: S3Settings):
        self.local = local
        self.tier = DiskStorage(local)
        self.directory = local.directory
        self.bucket = Bucket(settings)
        self.bucket.on_call = lambda op, seconds, ok: self.on_call and self.on_call(self.backend, op, seconds, ok)
        self.leases = Leases(self.bucket, self.tier)
        self.purges = Purges(self.bucket, self.tier)
        self._pending: dict[str, None] = dict.fromkeys(local.pending())  # to upload, oldest first
        self._listings: dict[str, tuple[float, list[str]]] = {}
        self._rescan_at = time.monotonic() + PENDING_RESCAN_SECONDS

    # -- memory ------------------------------------------------------------------------------
    def peek(self, key: str) -> Entry | None:
        return self.tier.peek(key)

    def note_hit(self, key: str) -> None:
        self.tier.note_hit(key)

    # -- entries -----------------------------------------------------------------------------
    async def get(self, key: str) -> Entry | None:
        entry = await self._tier("read", self.tier.get, key)
        if entry is not None:
            return entry
        try:
            return await self._pull(key, None)
        except BucketDown:
            return None

    async def latest(self, key: str) -> Entry | None:
        try:
            return await self._pull(key, await self._tier("read", self.tier.get, key))
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def meta(self, key: str) -> Meta | None:
        try:
            return await self._remote_meta(key)
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
                await self._publish(key, entry)
            except BucketDown:
                raise e from None  # stored nowhere: the resolver logs the local failure
            logger.warning("cargo-cache: local tier write failed for %s (%s: %s); stored in the bucket only",
                           key, type(e).__name__, e)
            return entry
        try:
            await self._publish(key, entry)
        except BucketDown:
            await self._queue(key)
        return entry

    async def put_file(self, key: str, spooled: Spooled, upstream: str, etag: str | None = None,
                       last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        try:
            entry = await self.tier.put_file(key, spooled, upstream, etag, last_modified, now)
            try:
                await self._publish(key, entry)
            except BucketDown:
                await self._queue(key)
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
            await self._publish(key, entry, newer_only=True)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def put_entry(self, key: str, meta: Meta, body: bytes) -> None:
        await self.tier.put_entry(key, meta, body)
        try:
            await self._publish(key, Entry(meta, body), newer_only=True)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def mark_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        local = await self._tier("write", self.tier.mark_checked, key, now, sha256)
        try:
            remote = await self._remote_checked(key, now, sha256)
        except BucketDown:
            await self._queue(key)
            remote = None
        return local or remote

    async def set_negative(self, key: str, reason: str, ttl: float) -> None:
        if ttl <= 0:
            return
        await self.tier.set_negative(key, reason, ttl)
        record = json.dumps({"reason": reason, "expires_at": time.time() + ttl}).encode()
        try:
            await self.bucket.put(f"negative/{key}", record)
        except BucketDown:
            pass  # remembered here; other gateways ask the upstreams once more

    async def negative(self, key: str) -> str | None:
        local = await self._tier("read", self.tier.negative, key)
        if local is not None:
            return local
        try:
            return await self._remote_negative(key)
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
            known = await self._tier("read", self.tier.get, key)
            if in_bucket:
                try:  # a fetch that finished meanwhile on another gateway may answer
                    entry = await self._pull(key, known)
                    return True, entry, None if entry is not None else await self._remote_negative(key)
                except BucketDown:
                    pass
            return True, known, await self._tier("read", self.tier.negative, key)
        except BaseException:  # the caller never gets the lease, so it cannot release it
            await self.leases.release(key)
            raise

    async def lease_holder(self, key: str) -> str | None:
        return await self.leases.current(key)

    async def release_lease(self, key: str) -> None:
        await self.leases.release(key)

    # -- the bucket --------------------------------------------------------------------------
    async def _remote_meta(self, key: str) -> Meta | None:
        got = await self.bucket.get(f"meta/{key}")
        return _meta(got[0], key) if got is not None else None

    async def _pull(self, key: str, known: Entry | None) -> Entry | None:
        """The bucket's entry for `key` unless `known` is as new; a new one is copied into the local tier."""
        meta = await self._remote_meta(key)
        if meta is None or (known is not None and known.meta.checked_at >= meta.checked_at):
            return known
        if known is not None and known.meta.sha256 == meta.sha256:  # refreshed elsewhere: same bytes
            await self._tier("write", self.tier.mark_checked, key, meta.checked_at, meta.sha256)
            return Entry(replace(known.meta, checked_at=meta.checked_at), known.body)
        if as_file(key, meta.size):
            return await self._pull_file(key, meta, known)
        got = await self.bucket.get(f"blob/{meta.sha256}")
        damaged = got is not None and await sha256_hex(got[0]) != meta.sha256
        if got is None or damaged or len(got[0]) != meta.size:
            logger.warning("cargo-cache: bucket entry %s is incomplete or damaged (%s): ignored", key,
                           "blob missing" if got is None else "blob does not match its name; deleted" if damaged
                           else "size differs from its meta")
            if damaged:  # so that the next writer of these bytes can create it again
                await self.bucket.delete(f"blob/{meta.sha256}")
            return known
        entry = Entry(meta, got[0])
        await self._tier("write", self.tier.put_entry, key, meta, entry.body, True)
        return entry

    async def _pull_file(self, key: str, meta: Meta, known: Entry | None) -> Entry | None:
        """A large blob, streamed from the bucket into the local tier through a spool (verified first)."""
        spool = self.spool()
        try:
            found = await self.bucket.get_into(f"blob/{meta.sha256}", spool)
            spooled = spool.finish()
        except BaseException:
            spool.discard()
            raise
        if not found or spooled.sha256 != meta.sha256 or spooled.size != meta.size:
            spooled.discard()
            logger.warning("cargo-cache: bucket entry %s is incomplete or damaged (%s): ignored", key,
                           "blob missing" if not found else "blob does not match its meta")
            if found and spooled.sha256 != meta.sha256:
                await self.bucket.delete(f"blob/{meta.sha256}")
            return known
        await self.tier.put_entry_file(key, meta, spooled.path)  # above FILE_THRESHOLD: always spooled to a file
        return await self._tier("read", self.tier.get, key) or known

    async def _publish(self, key: str, entry: Entry, newer_only: bool = False) -> None:
        """Blob first, then the meta that names it (the commit point).

        A crate's meta is create-only. Otherwise the meta is replaced, or with `newer_only` (uploading what
        was stored while the bucket was down, importing) only if the bucket's is older, with If-Match so a
        newer one written meanwhile by another gateway stays.
        """
        if entry.body is not None:
            await self.bucket.put(f"blob/{entry.meta.sha256}", entry.body, create=True)  # None: already there
        else:  # a large entry: streamed from its file
            await self.bucket.put_file(f"blob/{entry.meta.sha256}", entry.file)
        record = json.dumps(asdict(entry.meta)).encode()
        if key.startswith("crate/"):
            await self.bucket.put(f"meta/{key}", record, create=True)
        elif not newer_only:
            await self.bucket.put(f"meta/{key}", record)
        elif (got := await self.bucket.get(f"meta/{key}")) is None:
            await self.bucket.put(f"meta/{key}", record, create=True)
        elif (current := _meta(got[0], key)) is None or current.checked_at < entry.meta.checked_at:
            await self.bucket.put(f"meta/{key}", record, if_match=got[1])

    async def _remote_checked(self, key: str, now: float, sha256: str | None) -> Meta | None:
        for _ in range(3):  # another gateway may be writing the same meta: retry on a lost race
            got = await self.bucket.get(f"meta/{key}")
            if got is None:
                await self._queue(key)  # the bucket lacks what we hold: upload it
                return None
            meta = _meta(got[0], key)
            if meta is None or (sha256 is not None and meta.sha256 != sha256):
                return None
            meta = replace(meta, checked_at=max(meta.checked_at, now))
            if await self.bucket.put(f"meta/{key}", json.dumps(asdict(meta)).encode(), if_match=got[1]) is not None:
                return meta
        return None

    async def _remote_negative(self, key: str) -> str | None:
        got = await self.bucket.get(f"negative/{key}")
        record = load_record(got[0]) if got is not None else {}
        reason = record.get("reason")
        return reason if isinstance(reason, str) and number(record, "expires_at") > time.time() else None

    # -- inspection and maintenance ----------------------------------------------------------
    async def entries(self, prefix: str = "") -> list[tuple[str, Meta]]:
        try:
            keys = sorted(await self._keys("meta/", prefix))
            limit = asyncio.Semaphore(READ_CONCURRENCY)

            async def read(key: str) -> Meta | None:
                async with limit:
                    return await self._remote_meta(key)

            metas = await asyncio.gather(*(read(k) for k in keys))
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        return [(k, m) for k, m in zip(keys, metas, strict=True) if m is not None]

    async def keys(self, prefix: str = "") -> list[str]:
        """The bucket's keys and this gateway's (some may wait to be uploaded); a listing is reused briefly."""
        local = await self.tier.keys(prefix)
        listed = self._listings.get(prefix)
        if listed is None or time.monotonic() - listed[0] > LISTING_TTL:
            try:
                listed = (time.monotonic(), await self._keys("meta/", prefix))
                if len(self._listings) >= LISTINGS_KEPT:
                    self._listings.clear()
                self._listings[prefix] = listed
            except BucketDown:
                return local  # offline serving goes on from the local tier
        return sorted(set(local) | set(listed[1]))

    async def delete(self, key: str) -> bool:
        removed = await self.tier.delete(key)
        try:
            existed = await self.bucket.get(f"meta/{key}") is not None
            await self.bucket.delete(f"meta/{key}")
            await self.bucket.delete(f"negative/{key}")
            await self.purges.record(key)  # the other gateways drop their local copies
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        await self._unqueue(key)
        self._listings.clear()
        return removed or existed

    async def clear(self) -> int:
        await self.tier.clear()
        try:
            removed = 0
            for folder in ("meta/", "negative/", "lease/", "blob/"):
                keys = await self._keys(folder)
                removed += len(keys) if folder == "meta/" else 0
                await self._delete_all(folder, keys)
            await self.purges.record(None)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        self._pending.clear()
        self._listings.clear()
        return removed

    async def collect_garbage(self) -> int:
        await self.tier.collect_garbage()
        referenced = {meta.sha256 for _, meta in await self.entries()}
        try:
            cutoff = time.time() - GC_GRACE_SECONDS
            candidates = [o["path"][len("blob/"):] for o in await self.bucket.list("blob")
                          if o["path"][len("blob/"):] not in referenced and o["last_modified"].timestamp() < cutoff]
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        # A meta written meanwhile may name an old blob again (its upload found the blob already there).
        referenced |= {meta.sha256 for _, meta in await self.entries()} if candidates else set()
        orphans = [sha for sha in candidates if sha not in referenced]
        try:
            await self._delete_all("blob/", orphans)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        return len(orphans)

    async def _keys(self, folder: str, prefix: str = "") -> list[str]:
        """Keys under `folder` (meta/, blob/, ...) that start with `prefix`."""
        listed = folder + prefix
        parent = listed.rstrip("/") if listed.endswith("/") else listed.rpartition("/")[0]
        return [o["path"][len(folder):] for o in await self.bucket.list(parent) if o["path"].startswith(listed)]

    async def _delete_all(self, folder: str, keys: list[str]) -> None:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def delete(key: str) -> None:
            async with limit:
                await self.bucket.delete(folder + key)

        await asyncio.gather(*(delete(k) for k in keys))

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
            self._pending.update(dict.fromkeys(await self._tier("read", asyncio.to_thread, self.local.pending) or []))
        if await self.bucket.probe():
            if self._pending:
                await self._catch_up()
            try:
                await self.purges.apply()
            except BucketDown:
                pass  # next time

    async def flush(self) -> None:
        if self._pending:
            self.bucket.retry_at = 0.0  # the command is ending: one more try now
            if await self.bucket.probe():
                await self._catch_up()
        if self._pending:
            raise StorageUnavailable(f"{len(self._pending)} entries are in this host's local tier but not yet in "
                                     f"bucket {self.bucket.target} ({self.bucket.last_error}); the proxy's upkeep "
                                     "or the next command uploads them")

    async def _catch_up(self) -> None:
        """Upload what was stored locally while the bucket was down (unless the bucket has newer)."""
        done = 0
        for key in list(self._pending):
            if key not in self._pending or not self.bucket.available():
                continue
            del self._pending[key]  # a write of the key meanwhile queues it again
            try:
                entry = await self._tier("read", self.tier.get, key)
                if entry is not None and entry.meta.stored_at <= await self.purges.purged_at(key):
                    await self._tier("write", self.tier.delete, key)  # purged meanwhile: not to be brought back
                elif entry is not None:
                    await self._publish(key, entry, newer_only=True)
                    done += 1
            except BucketDown:
                self._pending[key] = None  # the outage goes on, or this one object failed: tried again later
                continue
            if key not in self._pending:
                await self._tier("write", asyncio.to_thread, self.local.unmark_pending, key)
        if done:
            logger.info("cargo-cache: caught up %d entries into bucket %s (%d still to go)", done,
                        self.bucket.target, len(self._pending))

    async def _queue(self, key: str) -> None:
        self._pending[key] = None
        await self._tier("write", asyncio.to_thread, self.local.mark_pending, key)

    async def _unqueue(self, key: str) -> None:
        if key in self._pending:
            del self._pending[key]
            await self._tier("write", asyncio.to_thread, self.local.unmark_pending, key)

    async def _tier(self, action: str, call, *args):
        """A local tier read or write whose failure (locked, full, damaged) must not fail a request the bucket can
        answer: logged, None returned (a miss)."""
        try:
            return await call(*args)
        except Exception as e:
            logger.warning("cargo-cache: local tier %s failed (%s: %s)", action, type(e).__name__, e)
            return None

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.bucket.target, "local_tier": str(self.directory),
                "pending": len(self._pending), **self.bucket.health()}

    async def close(self) -> None:
        await self.tier.close()


def _meta(raw: bytes, key: str) -> Meta | None:
    """A meta record, if every field has the right type and range (a damaged one is ignored: a miss)."""
    r = load_record(raw)
    if problem := meta_problem(r, time.time(), MAX_ENTRY_BYTES):
        logger.warning("cargo-cache: bucket entry %s has an unreadable meta (%s): ignored", key, problem)
        return None
    return Meta(r["sha256"], r["size"], r["upstream"], float(r["stored_at"]), float(r["checked_at"]),
                r.get("etag"), r.get("last_modified"))
