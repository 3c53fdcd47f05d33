"""The s3 backend's entries in the bucket: reading a meta and pulling its blob into the local tier, publishing an
entry (blob first, then the meta naming it), a revalidation's meta update, negative records, listings and bulk
deletes. BucketDown passes up to the caller (s3.py), which decides what an outage means for each operation."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, replace

from .bucket import Bucket
from .disk import DiskStorage
from .local import Entry, Meta, as_file, sha256_hex
from .records import MAX_ENTRY_BYTES, load_record, meta_problem, number
from .spool import Spool, Spooled

logger = logging.getLogger(__name__)

READ_CONCURRENCY = 16
LISTING_TTL = 30.0  # seconds a listing of staged versions is reused (offline index pruning)
LISTINGS_KEPT = 1024


async def local_call(action: str, call, *args):
    """A local tier read or write whose failure (locked, full, damaged) must not fail a request the bucket can
    answer: logged, None returned (a miss). A write the local tier's folder refuses (full, read-only) is counted by
    its `writability` (the store the called method belongs to) and warned about once a minute."""
    try:
        return await call(*args)
    except Exception as e:
        owner = next((o for fn in (call, *args[:1]) if (o := getattr(fn, "__self__", None)) is not None), None)
        writability = getattr(owner, "writability", None)
        if writability is None or not writability.failed(f"local {action}", e):
            logger.warning("cargo-cache: local tier %s failed (%s: %s)", action, type(e).__name__, e)
        return None


class RemoteEntries:
    def __init__(self, bucket: Bucket, tier: DiskStorage, spool: Callable[[], Spool],
                 on_missing: Callable[[str], Awaitable[None]]):
        """`spool` makes a spool for a large blob; `on_missing(key)` is told of an entry this gateway holds that
        the bucket lacks (to upload it)."""
        self.bucket, self.tier = bucket, tier
        self._spool, self._on_missing = spool, on_missing

    async def meta(self, key: str) -> Meta | None:
        got = await self.bucket.get(f"meta/{key}")
        return _meta(got[0], key) if got is not None else None

    async def pull(self, key: str, known: Entry | None) -> Entry | None:
        """The bucket's entry for `key` unless `known` is as new; a new one is copied into the local tier."""
        meta = await self.meta(key)
        if meta is None or (known is not None and known.meta.checked_at >= meta.checked_at):
            return known
        if known is not None and known.meta.sha256 == meta.sha256:  # refreshed elsewhere: same bytes
            await local_call("write", self.tier.mark_checked, key, meta.checked_at, meta.sha256)
            return Entry(replace(known.meta, checked_at=meta.checked_at), known.body)
        if as_file(key, meta.size):
            return await self._pull_file(key, meta, known)
        got = await self.bucket.get(f"blob/{meta.sha256}")
        actual = await sha256_hex(got[0]) if got is not None else None
        if actual is not None and actual != meta.sha256:  # changed in the bucket: a miss, fetched again
            await self._damaged(key, meta.sha256, actual)
            return known
        if got is None or len(got[0]) != meta.size:
            logger.warning("cargo-cache: bucket entry %s is incomplete (%s): ignored", key,
                           "blob missing" if got is None else "size differs from its meta")
            return known
        entry = Entry(meta, got[0])
        await local_call("write", self.tier.put_entry, key, meta, entry.body, True)
        return entry

    async def _pull_file(self, key: str, meta: Meta, known: Entry | None) -> Entry | None:
        """A large blob, streamed from the bucket into the local tier through a spool (verified first)."""
        spool = self._spool()
        try:
            found = await self.bucket.get_into(f"blob/{meta.sha256}", spool)
            spooled = await spool.afinish()
        except BaseException:
            spool.discard()
            raise
        if not found or spooled.sha256 != meta.sha256 or spooled.size != meta.size:
            spooled.discard()
            if found and spooled.sha256 != meta.sha256:
                await self._damaged(key, meta.sha256, spooled.sha256)
            else:
                logger.warning("cargo-cache: bucket entry %s is incomplete (%s): ignored", key,
                               "blob missing" if not found else "size differs from its meta")
            return known
        if spooled.passing:  # the local tier refuses writes (disk full, read-only): served from the spool
            return _unkept(meta, spooled)
        try:
            await self.tier.put_entry_file(key, meta, spooled.path)  # above FILE_THRESHOLD: always spooled to a file
        except Exception as e:
            if not self.tier.writability.failed("put_entry_file", e, key) or not spooled.path.exists():
                spooled.discard()
                raise
            return _unkept(meta, spooled)  # moved back by the failed write (local.py `_undoing`)
        return await local_call("read", self.tier.get, key) or known

    async def _damaged(self, key: str, sha256: str, actual: str) -> None:
        """A blob whose bytes do not hash to its name: told, counted, and deleted from the bucket so that the next
        writer of those bytes (the fetch from an upstream this miss leads to) can create it again."""
        self.tier.damage.found(key, sha256, actual, "bucket")
        await self.bucket.delete(f"blob/{sha256}")

    async def publish(self, key: str, entry: Entry, newer_only: bool = False) -> None:
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

    async def checked(self, key: str, now: float, sha256: str | None) -> Meta | None:
        """Record a revalidation (304) in the bucket's meta."""
        for _ in range(3):  # another gateway may be writing the same meta: retry on a lost race
            got = await self.bucket.get(f"meta/{key}")
            if got is None:
                await self._on_missing(key)  # the bucket lacks what we hold: upload it
                return None
            meta = _meta(got[0], key)
            if meta is None or (sha256 is not None and meta.sha256 != sha256):
                return None
            meta = replace(meta, checked_at=max(meta.checked_at, now))
            if await self.bucket.put(f"meta/{key}", json.dumps(asdict(meta)).encode(), if_match=got[1]) is not None:
                return meta
        return None

    async def set_negative(self, key: str, reason: str, ttl: float) -> None:
        record = json.dumps({"reason": reason, "expires_at": time.time() + ttl}).encode()
        await self.bucket.put(f"negative/{key}", record)

    async def negative(self, key: str) -> str | None:
        got = await self.bucket.get(f"negative/{key}")
        record = load_record(got[0]) if got is not None else {}
        reason = record.get("reason")
        return reason if isinstance(reason, str) and number(record, "expires_at") > time.time() else None

    async def metas(self, keys: list[str]) -> list[Meta | None]:
        """The metas of `keys`, read a few at a time."""
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(key: str) -> Meta | None:
            async with limit:
                return await self.meta(key)

        return await asyncio.gather(*(read(k) for k in keys))

    async def keys(self, folder: str, prefix: str = "") -> list[str]:
        """Keys under `folder` (meta/, blob/, ...) that start with `prefix`."""
        return [key async for page in self.key_pages(folder, prefix) for key in page]

    async def key_pages(self, folder: str, prefix: str = "", size: int = 1000) -> AsyncIterator[list[str]]:
        """The keys of `keys`, `size` at a time in the bucket's order, each page listed when the caller asks for it
        (memory holds a page and a chunk of the listing)."""
        listed = folder + prefix
        parent = listed.rstrip("/") if listed.endswith("/") else listed.rpartition("/")[0]
        page: list[str] = []
        async for chunk in self.bucket.chunks(parent):
            page += [o["path"][len(folder):] for o in chunk if o["path"].startswith(listed)]
            while len(page) >= size:
                yield page[:size]
                del page[:size]
        if page:
            yield page

    async def delete(self, key: str) -> bool:
        """Delete `key`'s meta and negative record; whether it had a meta."""
        existed = await self.bucket.get(f"meta/{key}") is not None
        await self.bucket.delete(f"meta/{key}")
        await self.bucket.delete(f"negative/{key}")
        return existed

    async def delete_everything(self) -> int:
        """Empty the bucket's entries, negative records, leases and blobs; how many entries there were."""
        removed = 0
        for folder in ("meta/", "negative/", "lease/", "blob/"):
            keys = await self.keys(folder)
            removed += len(keys) if folder == "meta/" else 0
            await self.delete_all(folder, keys)
        return removed

    async def unnamed_blobs(self, referenced: set[str], cutoff: float) -> list[str]:
        """The blobs written before `cutoff` (a time) whose SHA-256 is not in `referenced`."""
        return [o["path"][len("blob/"):] async for chunk in self.bucket.chunks("blob") for o in chunk
                if o["path"][len("blob/"):] not in referenced and o["last_modified"].timestamp() < cutoff]

    async def delete_all(self, folder: str, keys: list[str]) -> None:
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def delete(key: str) -> None:
            async with limit:
                await self.bucket.delete(folder + key)

        await asyncio.gather(*(delete(k) for k in keys))



class Listings:
    """The bucket's keys by prefix, each listing reused for LISTING_TTL seconds (offline index pruning asks often)."""

    def __init__(self, remote: RemoteEntries):
        self._remote = remote
        self._listings: dict[str, tuple[float, list[str]]] = {}

    async def keys(self, prefix: str) -> list[str]:
        """BucketDown passes up."""
        listed = self._listings.get(prefix)
        if listed is None or time.monotonic() - listed[0] > LISTING_TTL:
            listed = (time.monotonic(), await self._remote.keys("meta/", prefix))
            if len(self._listings) >= LISTINGS_KEPT:
                self._listings.clear()
            self._listings[prefix] = listed
        return listed[1]

    def clear(self) -> None:
        self._listings.clear()


def _meta(raw: bytes, key: str) -> Meta | None:
    """A meta record, if every field has the right type and range (a damaged one is ignored: a miss)."""
    r = load_record(raw)
    if problem := meta_problem(r, time.time(), MAX_ENTRY_BYTES):
        logger.warning("cargo-cache: bucket entry %s has an unreadable meta (%s): ignored", key, problem)
        return None
    return Meta(r["sha256"], r["size"], r["upstream"], float(r["stored_at"]), float(r["checked_at"]),
                r.get("etag"), r.get("last_modified"))


UNKEPT_FILE_SECONDS = 120.0  # a pulled file the local tier could not keep is deleted this long after (its clients
# open it at once: see boundary/blobs.py)


def _unkept(meta: Meta, spooled: Spooled) -> Entry:
    """A verified pulled file served without being kept in the local tier; deleted a while after."""
    if spooled.body is not None:  # the temporary folder could not take it either: held in memory
        return Entry(meta, spooled.body)
    path = spooled.path
    asyncio.get_running_loop().call_later(UNKEPT_FILE_SECONDS, lambda: path.unlink(missing_ok=True))
    return Entry(meta, None, str(path))
