"""The local store: entries (bytes + where they came from) on disk, in diskcache.

It is the whole cache with the disk backend, and each gateway's local tier with the s3 backend.

Layout inside diskcache:
- `blob:<sha256>`  the bytes, content-addressed (diskcache keeps large values as files)
- `meta:<key>`     a small dict naming the blob and its provenance; writing it is the commit point

A blob is always written before the meta that names it, so a reader never sees a half-stored
entry: after a crash there is at worst an unreferenced blob, which eviction removes. The
methods are synchronous; the storage backends call them through `asyncio.to_thread`,
except `peek`.

In front of the disk, a small in-memory tier keeps recently used entries up to `HOT_ITEM_LIMIT`
bytes each (index files, config.json, most crates) so a repeated hit costs no I/O and no thread
hand-off, and concurrent readers of one large crate share a single copy of its bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import diskcache

from . import spool

logger = logging.getLogger(__name__)

KINDS = ("config", "index", "crate", "manifest", "component", "rustup")  # the last three: toolchains
HOT_ITEM_LIMIT = 1024 * 1024
UPKEEP_CHUNK = 256  # recency touches and 304s written per transaction
FILE_THRESHOLD = int(os.environ.get("CARGO_CACHE_FILE_THRESHOLD", 2 * 1024 * 1024))  # BENCHMARKS.md section 5
FILE_KINDS = ("crate/", "component/", "rustup/")  # what may be kept as a file; index files, config.json and
# channel manifests are always read whole
HASH_OFFLOAD_BYTES = 1024 * 1024
DEFAULT_HOT_BYTES = 64 * 1024 * 1024
PURGE_GENERATION = "purge-generation"  # bumped by every delete, so other processes know to drop their memory tier


@dataclass(frozen=True)
class Meta:
    sha256: str
    size: int
    upstream: str  # name of the upstream that supplied the bytes
    stored_at: float  # when the bytes were stored
    checked_at: float  # when an upstream last confirmed them (200 or 304)
    etag: str | None = None  # the upstream's validators, for revalidation
    last_modified: str | None = None


@dataclass(frozen=True)
class Entry:
    """Stored bytes and their provenance. A large entry (above FILE_THRESHOLD) is never read into memory: its
    `body` is None and `file` is the stored file, which the proxy streams to clients."""

    meta: Meta
    body: bytes | None
    file: str | None = None


class _Adopt:
    """A verified partial file to move into diskcache's folder as a value's file (no copy)."""

    def __init__(self, path: Path):
        self.path = path


class _AdoptingDisk(diskcache.Disk):
    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if isinstance(value, _Adopt):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            return os.path.getsize(full_path), diskcache.core.MODE_BINARY, filename, None
        return super().store(value, read, key)


async def sha256_hex(body: bytes) -> str:
    """Hashing a large crate takes tens of milliseconds: not on the event loop."""
    if len(body) < HASH_OFFLOAD_BYTES:
        return hashlib.sha256(body).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())


def as_file(key: str, size: int) -> bool:
    """Whether the entry is served from its file (large crates) rather than from memory."""
    return size > FILE_THRESHOLD and key.startswith(FILE_KINDS)


def make_entry(body: bytes, upstream: str, etag: str | None = None, last_modified: str | None = None,
               now: float | None = None) -> Entry:
    now = time.time() if now is None else now
    return Entry(Meta(hashlib.sha256(body).hexdigest(), len(body), upstream, now, now, etag, last_modified), body)


class LocalStore:
    def __init__(self, directory: Path, size_limit: int, eviction_policy: str = "least-recently-used",
                 hot_bytes: int = DEFAULT_HOT_BYTES):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # cull_limit=0: no eviction inside each write (two more queries per write, on the store thread every miss
        # waits for); `upkeep` evicts down to the size limit every few seconds instead, and `close` once more.
        self._cache = diskcache.Cache(
            str(directory), size_limit=size_limit, eviction_policy=eviction_policy, statistics=False,
            disk=_AdoptingDisk, cull_limit=0,
        )
        spool.sweep(directory)
        self._hot: OrderedDict[str, Entry] = OrderedDict()
        self._hot_bytes, self._hot_limit = 0, hot_bytes
        self._shared: weakref.WeakValueDictionary[str, Entry] = weakref.WeakValueDictionary()
        self._hits: set[str] = set()
        self._checks: dict[str, tuple[float, str]] = {}  # 304s recorded in memory, not yet on disk: (when, sha256)
        self._lock = threading.Lock()
        self._holder = (os.getpid(), uuid.uuid4().hex)  # this store's identity in leases
        self._marks: diskcache.Cache | None = None
        self._generation = self._cache.get(PURGE_GENERATION, 0)  # what this process's memory tier has caught up with

    def transaction(self):
        """One SQLite transaction around several calls (the store thread's batches); calls inside it that open
        their own join it."""
        return self._cache.transact()

    def close(self) -> None:
        self._write_checks()
        self.evict()
        self._cache.close()
        if self._marks is not None:
            self._marks.close()

    @property
    def _pending(self) -> diskcache.Cache:
        """Pending-upload marks, apart from the entries: the size limit's culling must never drop them."""
        if self._marks is None:
            self._marks = diskcache.Cache(str(self.directory / "pending"), eviction_policy="none", statistics=False)
        return self._marks

    def peek(self, key: str) -> Entry | None:
        """The entry if it is in memory; never touches the disk (safe on the event loop)."""
        with self._lock:
            entry = self._hot.get(key)
            if entry is not None:
                self._hot.move_to_end(key)
                return entry
            return self._shared.get(key)

    def get(self, key: str) -> Entry | None:
        """The entry as stored on disk now (another worker may have changed it)."""
        raw = self._cache.get(f"meta:{key}")
        if raw is None:
            self._forget(key)
            return None
        meta = self._with_check(key, Meta(**raw))
        known = self.peek(key)
        if as_file(key, meta.size):
            path = self._blob_file(meta)
            if path is None:
                return None
            entry = Entry(meta, None, path)
        elif known is not None and known.meta.sha256 == meta.sha256 and f"blob:{meta.sha256}" in self._cache:
            entry = Entry(meta, known.body)  # same bytes still stored: skip reading them again
        else:
            body = self._cache.get(f"blob:{meta.sha256}")
            if not isinstance(body, bytes) or len(body) != meta.size:
                return None  # evicted (or damaged): a miss, never a partial answer
            entry = Entry(meta, body)
        self._remember(key, entry)
        return entry

    def _blob_file(self, meta: Meta) -> str | None:
        """The file holding a large blob, if it is stored complete."""
        handle = self._cache.get(f"blob:{meta.sha256}", read=True)
        if handle is None:
            return None
        try:
            path = getattr(handle, "name", None)
            if not isinstance(path, str) or os.fstat(handle.fileno()).st_size != meta.size:
                return None  # kept inline (cannot be, above FILE_THRESHOLD) or damaged: a miss
            return path
        finally:
            handle.close()

    def claim(self, key: str, ttl: float, usable: Callable[[Entry], bool] | None = None
              ) -> tuple[bool, Entry | None, str | None]:
        """In one call: the stored entry if `usable` accepts it (no lease taken); else take the lease on `key`, and
        if taken, read its entry and negative record under it (a fetch may have finished in between)."""
        if usable is not None and (entry := self.get(key)) is not None and usable(entry):
            return False, entry, None
        if not self.acquire_lease(key, ttl):
            return False, None, None
        return True, self.get(key), self.negative(key)

    def _remember(self, key: str, entry: Entry) -> None:
        with self._lock:
            old = self._hot.pop(key, None)
            if old is not None:
                self._hot_bytes -= old.meta.size
            if entry.meta.size > HOT_ITEM_LIMIT:
                self._shared[key] = entry  # kept while a request still holds it
                return
            self._hot[key] = entry
            self._hot_bytes += entry.meta.size
            while self._hot_bytes > self._hot_limit and self._hot:
                _, evicted = self._hot.popitem(last=False)
                self._hot_bytes -= evicted.meta.size

    def _forget(self, key: str) -> None:
        with self._lock:
            old = self._hot.pop(key, None)
            if old is not None:
                self._hot_bytes -= old.meta.size
            self._shared.pop(key, None)

    def meta(self, key: str) -> Meta | None:
        raw = self._cache.get(f"meta:{key}")
        return self._with_check(key, Meta(**raw)) if raw is not None else None

    def _with_check(self, key: str, meta: Meta) -> Meta:
        """`meta` as read from disk, with a later 304 for the same bytes that is still only in memory."""
        with self._lock:
            when, sha256 = self._checks.get(key, (0.0, ""))
        return replace(meta, checked_at=when) if sha256 == meta.sha256 and when > meta.checked_at else meta

    def put(
        self,
        key: str,
        body: bytes,
        upstream: str,
        etag: str | None = None,
        last_modified: str | None = None,
        now: float | None = None,
        release: bool = False,
    ) -> Entry:
        """`release`: give back this store's lease on `key` in the same commit."""
        entry = make_entry(body, upstream, etag, last_modified, now)
        with self._cache.transact():  # one commit (blob first, then the meta naming it) instead of two
            self._cache.set(f"blob:{entry.meta.sha256}", body)
            self._cache.set(f"meta:{key}", asdict(entry.meta))
            if release:
                self._release(key)
        self._remember(key, entry)
        return entry

    def put_file(self, key: str, spooled: spool.Spooled, upstream: str, etag: str | None = None,
                 last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        """Store a verified spooled file by moving it into the cache (the spool's file is gone afterwards)."""
        now = time.time() if now is None else now
        meta = Meta(spooled.sha256, spooled.size, upstream, now, now, etag, last_modified)
        with self._cache.transact():
            self.put_entry_file(key, meta, spooled.path)
            if release:
                self._release(key)
        return self.get(key) or Entry(meta, None, None)

    def put_entry_file(self, key: str, meta: Meta, path: Path) -> None:
        """Like put_entry, for bytes in a file of this cache folder's file system, which is moved in."""
        if self._blob_file(meta) is None:
            self._cache.set(f"blob:{meta.sha256}", _Adopt(path))
        else:
            path.unlink(missing_ok=True)  # the same bytes are stored already
        self._cache.set(f"meta:{key}", asdict(meta))
        self._forget(key)

    def put_entry(self, key: str, meta: Meta, body: bytes, remember: bool = False) -> None:
        """Store bytes with their recorded provenance (import, the shared tier). The caller verified `meta.sha256`."""
        self._cache.set(f"blob:{meta.sha256}", body)
        self._cache.set(f"meta:{key}", asdict(meta))
        if remember:
            self._remember(key, Entry(meta, body))
        else:
            self._forget(key)

    def entries(self, prefix: str = "") -> Iterator[tuple[str, Meta]]:
        """(key, meta) of every entry whose key starts with `prefix`, in key order."""
        for key in self.keys(prefix):
            meta = self.meta(key)
            if meta is not None:
                yield key, meta

    def add_counts(self, counts: dict[str, int]) -> None:
        """Add to the persistent request counters (shared by all workers)."""
        for name, n in counts.items():
            if n:
                self._cache.incr(f"count:{name}", n)

    def counts(self) -> dict[str, int]:
        return {k[6:]: self._cache.get(k, 0) for k in self._prefixed("count:")}

    def mark_checked(self, key: str, now: float | None = None, sha256: str | None = None) -> Meta | None:
        """Record that an upstream confirmed the stored bytes (a 304).

        With `sha256`, only if the stored bytes are still those (another writer may have replaced them).
        """
        meta = self.meta(key)
        if meta is None or (sha256 is not None and meta.sha256 != sha256):
            return None
        meta = replace(meta, checked_at=time.time() if now is None else now)
        self._cache.set(f"meta:{key}", asdict(meta))
        if (known := self.peek(key)) is not None and known.meta.sha256 == meta.sha256:
            self._remember(key, Entry(meta, known.body))
        return meta

    def note_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        """Record a 304 for an entry this process holds in memory, in memory only (no I/O: safe on the event
        loop); `touch_hits` writes it to disk with the recency. None if the entry is not held (or not those bytes).
        Until then another process sharing the folder sees the older check, and revalidates a little sooner."""
        with self._lock:
            known = self._hot.get(key)
            if known is None or known.body is None or (sha256 is not None and known.meta.sha256 != sha256):
                return None
            meta = replace(known.meta, checked_at=now)
            self._hot[key] = Entry(meta, known.body)
            self._hot.move_to_end(key)
            self._checks[key] = (now, meta.sha256)
            return meta

    def _write_checks(self) -> None:
        with self._lock:
            checks, self._checks = self._checks, {}
        for chunk in _chunks(list(checks.items())):
            with self._cache.transact():  # one commit per chunk, not one per 304
                for key, (when, sha256) in chunk:
                    raw = self._cache.get(f"meta:{key}")
                    if raw is not None and raw["sha256"] == sha256 and raw["checked_at"] < when:
                        self._cache.set(f"meta:{key}", {**raw, "checked_at": when})

    def set_negative(self, key: str, reason: str, ttl: float) -> None:
        """Remember for `ttl` seconds that no upstream has `key`."""
        if ttl > 0:
            self._cache.set(f"negative:{key}", reason, expire=ttl)

    def negative(self, key: str) -> str | None:
        return self._cache.get(f"negative:{key}")

    def acquire_lease(self, key: str, ttl: float) -> bool:
        """Take the right to fetch `key` from upstreams; other processes sharing the folder wait.

        A lease expires after `ttl`, and one whose holder process has died is taken over at once
        (the folder is local to this host, so the holder's PID can be checked).
        """
        if self._cache.add(f"lease:{key}", self._holder, expire=ttl):
            return True
        return self.lease_holder(key) is None and self._cache.add(f"lease:{key}", self._holder, expire=ttl)

    def lease_holder(self, key: str) -> str | None:
        """The live lease's holder (its PID and a per-process id), or None."""
        holder = self._cache.get(f"lease:{key}")
        if holder is None:
            return None
        pid = holder[0] if isinstance(holder, tuple) else holder
        if pid == os.getpid() or _alive(pid):
            return repr(holder)
        with self._cache.transact():  # its process was killed mid-fetch: free it, unless retaken meanwhile
            if self._cache.get(f"lease:{key}") == holder:
                self._cache.delete(f"lease:{key}")
        return None

    def release_lease(self, key: str) -> None:
        """Give the lease back, only if it is still ours (it may have expired and been taken since)."""
        with self._cache.transact():
            self._release(key)

    def _release(self, key: str) -> None:  # inside a transaction
        if self._cache.get(f"lease:{key}") == self._holder:
            self._cache.delete(f"lease:{key}")

    def note_hit(self, key: str) -> None:
        """A hit served from memory: remembered so `touch_hits` can tell the disk (LRU, purges)."""
        with self._lock:
            self._hits.add(key)

    def upkeep(self) -> None:
        """The periodic work (every few seconds while the proxy runs): recency and 304s to disk, then eviction."""
        self.touch_hits()
        self.evict()

    def evict(self) -> int:
        """Evict expired records, then the least recently used entries until the cache is within its size limit."""
        try:
            return self._cache.cull()
        except diskcache.Timeout:
            return 0  # the folder is busy: the next upkeep evicts

    def touch_hits(self) -> int:
        """Refresh the disk's recency of entries served from memory, write the 304s recorded in memory, and drop
        any purged meanwhile."""
        self._write_checks()
        generation = self._cache.get(PURGE_GENERATION, 0)
        with self._lock:
            keys, self._hits = self._hits, set()
            if generation != self._generation:  # another process purged: nothing in memory may outlive it
                self._generation = generation
                self._hot.clear()
                self._hot_bytes = 0
                self._shared.clear()
        for chunk in _chunks(list(keys)):
            with self._cache.transact():  # with least-recently-used a read is a write: one commit per chunk
                for key in chunk:
                    raw = self._cache.get(f"meta:{key}")  # the touch
                    if raw is None:
                        self._forget(key)
                        continue
                    handle = self._cache.get(f"blob:{raw['sha256']}", read=True)
                    if hasattr(handle, "close"):
                        handle.close()
        return len(keys)

    def mark_pending(self, key: str) -> None:
        """Remember that `key` still has to be uploaded to a shared store (survives restarts)."""
        self._pending.set(key, time.time())

    def unmark_pending(self, key: str) -> None:
        self._pending.delete(key)

    def pending(self) -> list[str]:
        """Keys marked pending, oldest first."""
        marks = [(key, self._pending.get(key, 0)) for key in self._pending.iterkeys()]
        return [key for key, _ in sorted(marks, key=lambda m: m[1] or 0)]

    def keys(self, prefix: str = "") -> list[str]:
        return [k[5:] for k in self._prefixed(f"meta:{prefix}")]

    def delete(self, key: str) -> bool:
        self._forget(key)
        removed = bool(self._cache.delete(f"meta:{key}"))
        if removed:
            self._cache.incr(PURGE_GENERATION)  # the other processes on this folder drop their memory copies
        return removed

    def count(self, prefix: str = "") -> int:
        """How many entries have keys starting with `prefix`, without reading them."""
        (count,) = self._cache._sql("SELECT COUNT(*) FROM Cache WHERE key >= ? AND key < ?",
                                    _key_range(f"meta:{prefix}")).fetchone()
        return count

    def _prefixed(self, prefix: str) -> list[str]:
        """The stored keys starting with `prefix`, in order: a range scan of the key index, not of every row."""
        # diskcache has no prefix query; its table is documented (Cache.key holds str keys as TEXT, indexed).
        rows = self._cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key", _key_range(prefix))
        return [key for (key,) in rows if isinstance(key, str)]

    def clear(self) -> int:
        with self._lock:
            self._hot.clear()
            self._hot_bytes = 0
            self._shared.clear()
        if self._marks is not None or (self.directory / "pending").exists():
            self._pending.clear()
        removed = self._cache.clear()
        self._cache.incr(PURGE_GENERATION, default=self._generation)
        return removed

    def collect_garbage(self) -> int:
        """Delete blobs no entry names any more; returns how many."""
        referenced = {meta.sha256 for _, meta in self.entries()}
        orphans = [k for k in self._cache.iterkeys()
                   if isinstance(k, str) and k.startswith("blob:") and k[5:] not in referenced]
        for key in orphans:
            self._cache.delete(key)
        return len(orphans)

    def volume(self) -> int:
        return self._cache.volume()


def _key_range(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the TEXT keys that start with `prefix` (SQLite compares TEXT bytewise)."""
    return prefix, prefix + "\U0010ffff"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _chunks(items: list, size: int = UPKEEP_CHUNK) -> Iterator[list]:
    """The upkeep's writes in transactions of `size`: few commits, and SQLite's write lock (which requests' store
    calls wait for) held only briefly each time."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
