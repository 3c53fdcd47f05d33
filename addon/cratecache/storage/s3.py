"""The s3 backend: a bucket shared by a fleet of gateways, with this gateway's cache folder as a local tier.

Objects under the configured prefix:
- `blob/<sha256>`   the bytes, content-addressed, written create-only (If-None-Match: *).
- `meta/<key>`      JSON `Meta` naming the blob; the commit point, written only after its blob, so an entry
                    is visible complete or not at all. Crates never change: their meta is create-only and
                    the first complete copy wins. Index files and config.json are replaced whole (last
                    writer wins); a revalidation (304) moves `checked_at` forward with If-Match on the meta's
                    ETag, so it can never bring back bytes another gateway has replaced.
- `lease/<key>`     {"holder", "expires_at"}: the gateway fetching a missed key. Created with
                    If-None-Match: *; an expired one is taken over with If-Match (one taker wins).
- `negative/<key>`  {"reason", "expires_at"}: no upstream has it.

Reads go memory -> local tier -> bucket (a bucket hit is copied into the local tier). Freshness travels in
the meta: a gateway whose local copy is due claims the key, and the claim reads the bucket's meta, so one
gateway's revalidation refreshes the entry for all of them.

When the bucket fails it is marked down until `maintain` finds it answering again (bucket.py): meanwhile
reads use the local tier, leases fall back to this host's, and writes go to the local tier with their
keys in a backlog that `maintain` uploads once the bucket is back. Listing, purging and import need the bucket and say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

from ..config import S3Settings
from . import Storage, StorageUnavailable
from .bucket import Bucket, BucketDown
from .disk import DiskStorage
from .local import Entry, LocalStore, Meta, make_entry

logger = logging.getLogger(__name__)

BACKLOG_LIMIT = 10_000
READ_CONCURRENCY = 16
GC_GRACE_SECONDS = 3600  # a blob younger than this may belong to a meta being written
HASH_OFFLOAD_BYTES = 1024 * 1024
CLOCK_SKEW_SECONDS = 2.0  # how far the gateways' clocks may differ (leases compare expiry times)


class S3Storage(Storage):
    backend = "s3"
    poll_seconds = 0.1

    def __init__(self, local: LocalStore, settings: S3Settings, bucket: Bucket | None = None):
        self.tier = DiskStorage(local)
        self.directory = local.directory
        self.bucket = bucket if bucket is not None else Bucket(settings)
        self.bucket.on_call = lambda op, seconds, ok: self.on_call and self.on_call(self.backend, op, seconds, ok)
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._leases: dict[str, float | None] = {}  # our leases: key -> expiry in the bucket, None: this host's
        self._backlog: dict[str, None] = {}  # keys written while the bucket was down, oldest first

    # -- memory ------------------------------------------------------------------------------
    def peek(self, key: str) -> Entry | None:
        return self.tier.peek(key)

    def note_hit(self, key: str) -> None:
        self.tier.note_hit(key)

    # -- entries -----------------------------------------------------------------------------
    async def get(self, key: str) -> Entry | None:
        entry = await self.tier.get(key)
        if entry is not None:
            return entry
        try:
            return await self._pull(key, None)
        except BucketDown:
            return None

    async def meta(self, key: str) -> Meta | None:
        try:
            return await self._remote_meta(key)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def put(self, key: str, body: bytes, upstream: str, etag: str | None = None,
                  last_modified: str | None = None, now: float | None = None) -> Entry:
        if len(body) >= HASH_OFFLOAD_BYTES:
            entry = await asyncio.to_thread(make_entry, body, upstream, etag, last_modified, now)
        else:
            entry = make_entry(body, upstream, etag, last_modified, now)
        failure = None
        try:  # the local tier first: this gateway serves it even if the bucket cannot take it
            await self.tier.put_entry(key, entry.meta, body, True)
        except Exception as e:
            failure = e
        try:
            await self._publish(key, entry)
        except BucketDown:
            self._queue(key)
        if failure is not None:
            raise failure
        return entry

    async def put_entry(self, key: str, meta: Meta, body: bytes) -> None:
        await self.tier.put_entry(key, meta, body)
        try:
            await self._publish(key, Entry(meta, body))
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None

    async def mark_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        local = await self._tier_write(self.tier.mark_checked, key, now, sha256)
        try:
            remote = await self._remote_checked(key, now, sha256)
        except BucketDown:
            self._queue(key)
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
        local = await self.tier.negative(key)
        if local is not None:
            return local
        try:
            return await self._remote_negative(key)
        except BucketDown:
            return None

    # -- leases ------------------------------------------------------------------------------
    async def claim(self, key: str, ttl: float) -> tuple[bool, Entry | None, str | None]:
        if self.bucket.available():
            try:
                expires_at = await self._acquire(key, ttl)
                if expires_at is None:
                    return False, None, None
                self._leases[key] = expires_at
                known = await self.tier.get(key)
                entry = await self._pull(key, known) or known
                return True, entry, None if entry is not None else await self._remote_negative(key)
            except BucketDown:
                pass
        owned, entry, negative = await self.tier.claim(key, ttl)  # this host's workers still coalesce
        if owned:
            self._leases[key] = None
        return owned, entry, negative

    async def lease_held(self, key: str) -> bool:
        if self.bucket.available():
            try:
                got = await self.bucket.get(f"lease/{key}")
                return got is not None and _live(got[0])
            except BucketDown:
                pass
        return await self.tier.lease_held(key)

    async def release_lease(self, key: str) -> None:
        if key not in self._leases:
            return
        expires_at = self._leases.pop(key)
        if expires_at is None:
            await self.tier.release_lease(key)
            return
        path = f"lease/{key}"
        try:
            # Nobody takes a lease over before it expires, so until then it is ours to delete; after that,
            # only if it still names us.
            ours = time.time() < expires_at - CLOCK_SKEW_SECONDS
            if not ours:
                got = await self.bucket.get(path)
                ours = got is not None and _load(got[0]).get("holder") == self._holder
            if ours:
                await self.bucket.delete(path)
        except BucketDown:
            pass  # it expires by itself

    async def _acquire(self, key: str, ttl: float) -> float | None:
        """The lease's expiry if we took it, else None."""
        path, expires_at = f"lease/{key}", time.time() + ttl
        lease = json.dumps({"holder": self._holder, "expires_at": expires_at}).encode()
        if await self.bucket.put(path, lease, create=True):
            return expires_at
        got = await self.bucket.get(path)
        if got is None:  # released meanwhile
            return expires_at if await self.bucket.put(path, lease, create=True) else None
        if _live(got[0]):
            return None
        # Its holder died or hangs: take it over; If-Match lets exactly one of several takers win.
        return expires_at if await self.bucket.put(path, lease, if_match=got[1]) else None

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
            await self._tier_write(self.tier.mark_checked, key, meta.checked_at, meta.sha256)
            return Entry(replace(known.meta, checked_at=meta.checked_at), known.body)
        got = await self.bucket.get(f"blob/{meta.sha256}")
        if got is None or len(got[0]) != meta.size or await _sha256(got[0]) != meta.sha256:
            logger.warning("cargo-cache: bucket entry %s is incomplete or damaged (blob %s): ignored",
                           key, "missing" if got is None else "does not match its checksum")
            return known
        entry = Entry(meta, got[0])
        await self._tier_write(self.tier.put_entry, key, meta, entry.body, True)
        return entry

    async def _publish(self, key: str, entry: Entry) -> None:
        """Blob first, then the meta that names it (the commit point)."""
        await self.bucket.put(f"blob/{entry.meta.sha256}", entry.body, create=True)  # False: already there
        record = json.dumps(asdict(entry.meta)).encode()
        await self.bucket.put(f"meta/{key}", record, create=key.startswith("crate/"))

    async def _remote_checked(self, key: str, now: float, sha256: str | None) -> Meta | None:
        for _ in range(3):  # another gateway may be writing the same meta: retry on a lost race
            got = await self.bucket.get(f"meta/{key}")
            if got is None:
                self._queue(key)  # the bucket lacks what we hold: upload it
                return None
            meta = _meta(got[0], key)
            if meta is None or (sha256 is not None and meta.sha256 != sha256):
                return None
            meta = replace(meta, checked_at=max(meta.checked_at, now))
            if await self.bucket.put(f"meta/{key}", json.dumps(asdict(meta)).encode(), if_match=got[1]):
                return meta
        return None

    async def _remote_negative(self, key: str) -> str | None:
        got = await self.bucket.get(f"negative/{key}")
        record = _load(got[0]) if got is not None else {}
        return record.get("reason") if _number(record.get("expires_at")) > time.time() else None

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
        try:
            return sorted(await self._keys("meta/", prefix))
        except BucketDown:
            return await self.tier.keys(prefix)  # offline serving goes on from the local tier

    async def delete(self, key: str) -> bool:
        removed = await self.tier.delete(key)
        try:
            existed = await self.bucket.get(f"meta/{key}") is not None
            await self.bucket.delete(f"meta/{key}")
            await self.bucket.delete(f"negative/{key}")
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        return removed or existed

    async def clear(self) -> int:
        await self.tier.clear()
        try:
            removed = 0
            for folder in ("meta/", "negative/", "blob/"):
                keys = await self._keys(folder)
                removed += len(keys) if folder == "meta/" else 0
                await self._delete_all(folder, keys)
        except BucketDown as e:
            raise StorageUnavailable(str(e)) from None
        self._backlog.clear()
        return removed

    async def collect_garbage(self) -> int:
        await self.tier.collect_garbage()
        referenced = {meta.sha256 for _, meta in await self.entries()}
        try:
            cutoff = time.time() - GC_GRACE_SECONDS
            orphans = [o["path"][len("blob/"):] for o in await self.bucket.list("blob")
                       if o["path"][len("blob/"):] not in referenced and o["last_modified"].timestamp() < cutoff]
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
        if await self.bucket.probe() and self._backlog:
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Upload what was stored locally while the bucket was down (unless the bucket has newer)."""
        done = 0
        try:
            while self._backlog:
                key = next(iter(self._backlog))
                entry = await self.tier.get(key)
                if entry is not None:
                    remote = await self._remote_meta(key)
                    if remote is None or remote.checked_at < entry.meta.checked_at:
                        await self._publish(key, entry)
                        done += 1
                self._backlog.pop(key, None)
        except BucketDown:
            pass
        if done:
            logger.info("cargo-cache: caught up %d entries into bucket %s (%d still to go)", done,
                        self.bucket.target, len(self._backlog))

    def _queue(self, key: str) -> None:
        self._backlog.pop(key, None)
        self._backlog[key] = None
        while len(self._backlog) > BACKLOG_LIMIT:
            self._backlog.pop(next(iter(self._backlog)))

    async def _tier_write(self, write, *args):
        try:
            return await write(*args)
        except Exception as e:  # a full local disk must not fail a request the bucket can answer
            logger.warning("cargo-cache: local tier write failed (%s: %s)", type(e).__name__, e)
            return None

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": self.bucket.target, "local_tier": str(self.directory),
                "pending": len(self._backlog), **self.bucket.health()}

    async def close(self) -> None:
        await self.tier.close()


def _load(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _meta(raw: bytes, key: str) -> Meta | None:
    record = _load(raw)
    try:
        return Meta(**{f: record[f] for f in Meta.__dataclass_fields__ if f in record})
    except TypeError:
        logger.warning("cargo-cache: bucket entry %s has an unreadable meta: ignored", key)
        return None


def _live(raw: bytes) -> bool:
    return _number(_load(raw).get("expires_at")) > time.time()


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


async def _sha256(body: bytes) -> str:
    if len(body) < HASH_OFFLOAD_BYTES:
        return hashlib.sha256(body).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
