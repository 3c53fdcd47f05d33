"""The local store: entries (bytes + where they came from) on disk, in diskcache.

It is the whole cache with the disk backend, and each gateway's local tier with the s3 backend.

Layout inside diskcache:
- `blob:<sha256>`  the bytes, content-addressed (diskcache keeps large values as files)
- `meta:<key>`     a small dict naming the blob and its provenance; writing it is the commit point

A blob is always written before the meta that names it, so a reader never sees a half-stored
entry: after a crash there is at worst an unreferenced blob, which eviction removes. The
methods are synchronous; the storage backends call them through `asyncio.to_thread`,
except `peek`.

A cache folder that refuses writes when the store opens (a read-only mount, no write permission) is opened read-only
(readonly.py) rather than failing: hits are served, misses passed through; the upkeep's probe reopens it for writing
once it can. A database found damaged while the store runs is no longer read (an empty read-only opening instead) and
is set aside by that same reopening (recovery.py).

In front of the disk, a small in-memory tier (memory.py) keeps recently used entries up to `HOT_ITEM_LIMIT`
bytes each (index files, config.json, most crates) so a repeated hit costs no I/O and no thread
hand-off, and concurrent readers of one large crate share a single copy of its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import diskcache

from .. import sqlitelib
from . import faults, readonly, recovery, room, spool
from .entries import Entry, Meta, add_up
from .integrity import Damage
from .keyscan import KeyScan, store_meta
from .lean import LeanCache
from .marks import HostLeases, PendingMarks
from .memory import MemoryTier
from .removal import Removal, short
from .writeback import PURGE_GENERATION, WriteBack

logger = logging.getLogger(__name__)

KINDS = ("config", "index", "crate", "manifest", "component", "rustup")  # the last three: toolchains
FILE_THRESHOLD = int(os.environ.get("CARGO_CACHE_FILE_THRESHOLD", 2 * 1024 * 1024))  # BENCHMARKS.md section 5
FILE_KINDS = ("crate/", "component/", "rustup/")  # what may be kept as a file; index files, config.json and
# channel manifests are always read whole
HASH_OFFLOAD_BYTES = 1024 * 1024
DEFAULT_HOT_BYTES = 64 * 1024 * 1024
ROOM_MARGIN = 1024 * 1024  # evicting for a write on a full disk frees this much more (for SQLite's own pages)
PAGE = 1000  # entries per page of a listing or scan (`entry_page`)


class _Adopt:
    """A verified partial file to move into diskcache's folder as a value's file (no copy)."""

    def __init__(self, path: Path):
        self.path = path


class _AdoptingDisk(diskcache.Disk):
    """diskcache's files, plus: a verified partial file moved in (`_Adopt`), and a note of each file written, so a
    write whose transaction fails (a full disk) leaves none behind (`LocalStore._undoing`)."""

    written = threading.local()

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if isinstance(value, _Adopt):
            filename, full_path = self.filename(key, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
            self._note(full_path, value.path)
            return os.path.getsize(full_path), diskcache.core.MODE_BINARY, filename, None
        return super().store(value, read, key)

    def _write(self, full_path, iterator, mode, encoding=None):
        try:
            size = super()._write(full_path, iterator, mode, encoding)
        except BaseException:
            with contextlib.suppress(OSError):  # diskcache leaves what it wrote of a file that did not fit
                os.unlink(full_path)
            raise
        self._note(full_path, None)
        return size

    def _note(self, full_path: str, source: Path | None) -> None:
        files = getattr(self.written, "files", None)
        if files is not None:
            files.append((full_path, source))


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


def _delete_rows(sql, cleanup, keys: list[str], stored_before: float | None = None) -> int:
    """Delete the rows of `keys` (those stored before `stored_before`, if given) in one statement, inside a diskcache
    transaction (`sql`, `cleanup`: its `_transact`); a value kept as a file is removed once that commits; how many.
    diskcache's triggers keep its count and volume; a SELECT and a DELETE per key through `Cache.delete` cost a purge
    of 100k entries a third of its time."""
    since = " AND store_time < ?" if stored_before is not None else ""
    rows = sql(f"DELETE FROM Cache WHERE key IN ({','.join('?' * len(keys))}) AND raw = 1{since} RETURNING filename",
               [*keys] + ([stored_before] if stored_before is not None else [])).fetchall()
    for (filename,) in rows:
        cleanup(filename)
    return len(rows)


@functools.cache
def _warn_of_sqlite() -> None:
    """Once a process: the SQLite it runs may corrupt a database it shares (sqlitelib.py)."""
    if (why := sqlitelib.problem()) is not None:
        logger.warning("cargo-cache: %s", why)


class LocalStore:
    """Blobs and meta records in diskcache, over collaborators it owns: the memory tier (`memory.MemoryTier`), its
    write-back of hits and 304s (`writeback.WriteBack`), leases and negative records (`marks.HostLeases`) and the
    pending-upload marks (`marks.PendingMarks`), the key scans and request counters (`keyscan.KeyScan`)."""

    def __init__(self, directory: Path, size_limit: int, eviction_policy: str = "least-recently-used",
                 hot_bytes: int = DEFAULT_HOT_BYTES, lean: bool = False):
        """`lean`: for a command, SQLite's memory per connection kept small (lean.py)."""
        self.directory = directory
        _warn_of_sqlite()
        self.writability = faults.Writability(str(directory))
        # cull_limit=0: not diskcache's cull inside each write (two more queries per write, whatever the room left);
        # a write that needs room evicts first (`keep_within`, room.py), `upkeep` every few seconds (expired records,
        # what other processes wrote), `close` once more.
        self._settings = dict(size_limit=size_limit, eviction_policy=eviction_policy, statistics=False,
                              disk=_AdoptingDisk, cull_limit=0, cache_class=LeanCache if lean else diskcache.Cache)
        self._cache = self._open()
        self._database = self._database_file()  # which file this store has open, to notice another process replacing it
        self._retired: list = []  # openings replaced while calls may still use them (closed with the store)
        spool.sweep(directory)
        self._memory = MemoryTier(hot_bytes, self._cache.get(PURGE_GENERATION, 0))
        self._attach()
        self._pending = PendingMarks(directory / "pending")
        self.damage = Damage()
        self._damaged = False  # set_damaged: the next reopening checks the database whole
        self._unevictable: set[str] = set()  # digests of damaged blobs a read-only folder kept: a miss here

    def _open(self) -> diskcache.Cache | readonly.ReadOnlyCache:
        """diskcache on the folder (a damaged database set aside: recovery.py); on a folder that refuses writes, its
        database opened read-only (readonly.py): hits served, misses passed through, said once."""
        try:
            return recovery.open_cache(self.directory, **self._settings)
        except (OSError, sqlite3.Error) as e:
            refused = faults.refusal(self.directory)
            if refused is None:
                raise
            failure = e
        cache = readonly.ReadOnlyCache(self.directory, refused, _AdoptingDisk)
        self.writability.opened_read_only(refused, f"opening it for writing: {type(failure).__name__}: {failure}; "
                                                   f"reading {cache.opened}")
        return cache

    def _attach(self) -> None:
        """The collaborators working on the database (again, after it was reopened for writing)."""
        self._writeback = WriteBack(self._cache, self._memory)
        self._leases = HostLeases(self._cache)
        self._scan = KeyScan(self._cache)
        if not self.read_only:  # a folder opened read-only lists from the table itself
            self._scan.ensure_index()
        self._room = room.Evictor(self._cache, self.usage, self._deferred_removals)
        self._room_left = 0.0  # bytes this process may still write before it measures again (`needs_room`)

    @property
    def read_only(self) -> bool:
        """Whether the database is open read-only (the folder refused writes when it was opened)."""
        return isinstance(self._cache, readonly.ReadOnlyCache)

    def _reopen(self) -> None:
        """The folder takes writes again (the probe wrote a file): diskcache instead of the read-only opening (a
        damaged database is set aside by that opening: recovery.py). Calls in flight finish on the read-only one,
        which is closed with the store."""
        # found damaged: checked whole, however large (else the bounded check of a large one may not see it again)
        cache = recovery.open_cache(self.directory, full_check_bytes=sys.maxsize if self._damaged else None,
                                    **self._settings)
        self._damaged = False
        self._retire()
        self._cache, self._database = cache, self._database_file()
        self._attach()
        logger.warning("cargo-cache: the cache folder %s takes writes again: its database is reopened for writing "
                       "(was: %s)", self.directory, self.writability.error or "read-only")

    def _retire(self) -> None:
        """The opening in use is about to be replaced: kept open for the calls still using it; those replaced before
        (seconds ago at least: the upkeep's interval) are closed."""
        for old in self._retired:
            old.close()
        self._retired = [self._cache]

    def _database_file(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.directory / recovery.DATABASE)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def set_damaged(self, op: str, error: sqlite3.DatabaseError) -> None:
        """The database turned out damaged under the running store (`op` read or wrote it): nothing more is read from
        it (an empty read-only opening instead: misses, passed through; writes raise `error` again), told and counted
        once; the upkeep's probe then reopens the folder, which sets the damaged files aside (`_reopen`)."""
        if not self.read_only:
            self._retire()
            self._cache = readonly.ReadOnlyCache(self.directory, error, _AdoptingDisk, read=False)
            self._attach()
        self._damaged = True
        self.writability.damaged(op, error)

    @contextlib.contextmanager
    def transaction(self):
        """One SQLite transaction around several calls (the store thread's batches); calls inside it that open
        their own join it."""
        with self._undoing(), self._cache.transact():
            yield

    @contextlib.contextmanager
    def _undoing(self):
        """Files written into the cache folder in here are removed again (a file moved in goes back) if it fails:
        a rolled-back transaction must not leave files no entry names (a full disk fails the commit)."""
        written = _AdoptingDisk.written
        if getattr(written, "files", None) is not None:  # an outer one undoes
            yield
            return
        written.files, written.evicted = [], []
        try:
            yield
        except BaseException:
            for full_path, source in reversed(written.files):
                with contextlib.suppress(OSError):
                    if source is not None:
                        os.rename(full_path, source)
                    else:
                        os.unlink(full_path)
            raise
        else:
            for filename in written.evicted:  # files of entries evicted inside the transaction, which committed
                self._cache._disk.remove(filename)
        finally:
            written.files = written.evicted = None

    def _deferred_removals(self) -> list | None:
        """Where an eviction inside this thread's open transaction puts the files to remove once it commits (None
        outside one: they are removed with the eviction's own commit)."""
        if self._cache._txn_id != threading.get_ident():
            return None
        return getattr(_AdoptingDisk.written, "evicted", None)

    def usage(self) -> room.Usage:
        """What the cache folder holds on disk: diskcache's volume, the database's log, partial downloads."""
        try:
            log = os.stat(self.directory / f"{recovery.DATABASE}-wal").st_size
        except OSError:
            log = 0
        return room.Usage(self._cache.volume(), log, room.folder_bytes(self.directory / spool.PARTIAL_FOLDER))

    def keep_within(self, incoming: int) -> int:
        """Before `incoming` bytes are written to the cache folder: evict least recently used entries so that it stays
        within its size limit (room.py); how many were evicted. Never raises: a write goes on without it. Memory
        hits' recency goes to disk first (at most once a second), so that what is served from memory is not taken
        for unused when the cache turns over faster than the upkeep's interval."""
        if self.read_only:
            return 0
        try:
            limit, usage, rows = self._cache.size_limit, self.usage(), 0
            if room.to_free(usage, incoming, limit):
                self.touch_hits()  # first: what was read since the last upkeep is recent (a read writes no recency)
                rows = self._room.make_room(incoming)
                usage = self.usage()
            self._room_left = limit - usage.total - incoming
            return rows
        except Exception as e:  # the write itself meets the problem and says so
            logger.debug("cargo-cache: evicting for a write failed: %s: %s", type(e).__name__, e)
            return 0

    def needs_room(self, incoming: int) -> bool:
        """Whether `incoming` more bytes (a piece of a download being spooled) may take the folder past its limit, by
        what this process measured last and has written since: no I/O, safe on the event loop. If so, the caller
        runs `keep_within` (on the store thread), which measures again."""
        self._room_left -= incoming
        return self._room_left < 0

    def _making_room(self, needed: int, write: Callable[[], Entry]) -> Entry:
        """`write()`; on a full disk, evict least recently used entries to make room for `needed` bytes and try once
        more (if evicting can make that much room at all). Inside a batch's transaction it only raises: the batch is
        rolled back and each call runs again alone (`batches.py`), where it may evict."""
        in_batch = getattr(_AdoptingDisk.written, "files", None) is not None
        try:
            with self._undoing():
                self.keep_within(needed)
                return write()
        except Exception as e:
            if in_batch or not faults.is_full(e) or not self.make_room(needed):
                raise
        with self._undoing():
            return write()

    def make_room(self, needed: int) -> bool:
        """Evict least recently used entries until `needed` bytes (and a margin) are free on the cache's file system,
        below the size limit if need be; False (nothing evicted) if even the whole cache would not free that much."""
        free = shutil.disk_usage(self.directory).free
        short = needed + ROOM_MARGIN - free
        volume = self._cache.volume()
        if short <= 0 or short > volume:
            return False
        limit = self._cache.size_limit
        self._cache.reset("size_limit", max(0, volume - short), update=False)  # this process, for this cull only
        try:
            evicted = self._cache.cull()
        except diskcache.Timeout:
            evicted = 0
        finally:
            self._cache.reset("size_limit", limit, update=False)
        if evicted:
            logger.warning("cargo-cache: disk full: evicted %d least recently used entries to make room for %d bytes",
                           evicted, needed)
        return evicted > 0

    def probe(self) -> None:
        """A small write to the cache folder (a file and the database): raises if it cannot take writes."""
        folder = self.directory / spool.PARTIAL_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{os.getpid()}-probe.part"
        try:
            path.write_bytes(b"\0" * 4096)
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if self.read_only:
            self._reopen()
        self._cache.set("writable-probe", time.time())

    def warn_if_larger_than_disk(self) -> None:
        """A size limit above what the cache's file system can hold is filled to a full disk (then evicting on each
        full write): said at start."""
        try:
            usage = shutil.disk_usage(self.directory)
        except OSError:
            return
        room = usage.free + self._cache.volume()
        if self._cache.size_limit > room:
            logger.warning("cargo-cache: cache size_limit %d bytes is above the space its file system %s can give "
                           "it (%d bytes free, %d in the cache): the disk fills before the limit; entries are then "
                           "evicted when a write finds it full", self._cache.size_limit, self.directory, usage.free,
                           self._cache.volume())

    def close(self) -> None:
        try:
            self._writeback.write_checks()
            self.evict()
        except Exception as e:  # the folder refuses writes: the 304s noted in memory are not kept
            if not self.writability.failed("close", e):
                raise
        for cache in (*self._retired, self._cache):
            cache.close()
        self._pending.close()

    def peek(self, key: str) -> Entry | None:
        """The entry if it is in memory; never touches the disk (safe on the event loop)."""
        return self._memory.peek(key)

    def get(self, key: str) -> Entry | None:
        """The entry as stored on disk now (another worker may have changed it). A read only: the recency of what it
        finds is written back with the memory tier's hits (`touch_hits`, every few seconds, in batches), not by a
        write per read (diskcache's `get` writes the access time of each row it reads: two write transactions a
        hit, which cost more the larger the database; issue 33)."""
        raw = self._scan.value(f"meta:{key}")
        if raw is None:
            self._memory.forget(key)
            return None
        meta = self._memory.with_check(key, Meta(**raw))
        if self._unevictable and meta.sha256 in self._unevictable:
            return None  # found damaged, and the folder would not let it go
        known = self.peek(key)
        if as_file(key, meta.size):
            path = self._blob_file(meta)
            if path is None:
                return None
            entry = Entry(meta, None, path)
        elif known is not None and known.meta.sha256 == meta.sha256 and f"blob:{meta.sha256}" in self._cache:
            entry = Entry(meta, known.body)  # same bytes still stored: skip reading them again
        else:
            body = self._scan.value(f"blob:{meta.sha256}")
            if not isinstance(body, bytes) or len(body) != meta.size:
                return None  # evicted (or damaged): a miss, never a partial answer
            if (actual := hashlib.sha256(body).hexdigest()) != meta.sha256:  # bit rot: a miss, fetched again
                self.evict_damaged(key, meta.sha256, actual)
                return None
            entry = Entry(meta, body)
        self._memory.remember(key, entry)
        self._memory.note_hit(key)
        return entry

    def _blob_file(self, meta: Meta) -> str | None:
        """The file holding a large blob, if it is stored complete."""
        handle = self._scan.value(f"blob:{meta.sha256}", read=True)
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

    def meta(self, key: str) -> Meta | None:
        """The stored entry's record, read without a write: a look (stage's and import's checks, a purge's) is not a
        use, so it leaves the entry's recency as it was (`get` notes a use, written back in batches)."""
        raw = self._scan.value(f"meta:{key}")
        return self._memory.with_check(key, Meta(**raw)) if raw is not None else None

    def put(self, key: str, body: bytes, upstream: str, etag: str | None = None, last_modified: str | None = None,
            now: float | None = None, release: bool = False) -> Entry:
        """`release`: give back this store's lease on `key` in the same commit."""
        entry = make_entry(body, upstream, etag, last_modified, now)

        def write() -> Entry:
            with self._cache.transact():  # one commit (blob first, then the meta naming it) instead of two
                self._cache.set(f"blob:{entry.meta.sha256}", body)
                store_meta(self._cache, key, asdict(entry.meta))
                if release:
                    self._leases.release(key)
            return entry

        self._making_room(len(body), write)
        self._memory.remember(key, entry)
        return entry

    def put_file(self, key: str, spooled: spool.Spooled, upstream: str, etag: str | None = None,
                 last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        """Store a verified spooled file by moving it into the cache (the spool's file is gone afterwards)."""
        now = time.time() if now is None else now
        meta = Meta(spooled.sha256, spooled.size, upstream, now, now, etag, last_modified)

        def write() -> None:
            with self._cache.transact():
                self.put_entry_file(key, meta, spooled.path)
                if release:
                    self._leases.release(key)

        # on a failure the file is moved back to `spooled.path` (`_undoing`): the caller can still serve it; moving it
        # in adds nothing to the folder (its partial file was counted as it was written)
        self._making_room(0, write)
        return self.get(key) or Entry(meta, None, None)

    def put_entry_file(self, key: str, meta: Meta, path: Path) -> None:
        """Like put_entry, for bytes in a file of this cache folder's file system, which is moved in (and back to
        `path` if the write fails)."""
        with self._undoing(), self._cache.transact():
            self.keep_within(0)  # the file is in the folder already
            if self._blob_file(meta) is None:
                self._cache.set(f"blob:{meta.sha256}", _Adopt(path))
            else:
                path.unlink(missing_ok=True)  # the same bytes are stored already
            store_meta(self._cache, key, asdict(meta))
        self._memory.forget(key)

    def put_entry(self, key: str, meta: Meta, body: bytes, remember: bool = False) -> None:
        """Store bytes with their recorded provenance (import, the shared tier). The caller verified `meta.sha256`."""
        def write() -> None:
            with self._cache.transact():
                self._cache.set(f"blob:{meta.sha256}", body)
                store_meta(self._cache, key, asdict(meta))

        self._making_room(len(body), write)
        if remember:
            self._memory.remember(key, Entry(meta, body))
        else:
            self._memory.forget(key)

    def entries(self, prefix: str = "") -> Iterator[tuple[str, Meta]]:
        """(key, meta) of every entry whose key starts with `prefix`, in key order, read a page at a time (memory
        bounded by the page, not the cache) and without making them recently used."""
        after: str | None = None
        while True:
            page, after = self.entry_page(prefix, after)
            yield from page
            if after is None:
                return

    def entry_page(self, prefix: str = "", after: str | None = None, limit: int = PAGE
                   ) -> tuple[list[tuple[str, Meta]], str | None]:
        """Up to `limit` (key, meta) of the entries whose key starts with `prefix`, after key `after`, in key order;
        and the key to continue after (None: this was the last page). One short query: writers are not held up."""
        rows = self._scan.page(f"meta:{prefix}", None if after is None else f"meta:{after}", limit)
        page = [(key[5:], self._memory.with_check(key[5:], Meta(**raw))) for key, raw in rows if isinstance(raw, dict)]
        return page, (rows[-1][0][5:] if len(rows) == limit else None)

    def add_counts(self, counts: dict[str, int]) -> None:
        """Add to the persistent request counters (shared by all workers)."""
        self._scan.add_counts(counts)

    def counts(self) -> dict[str, int]:
        return self._scan.counts()

    def mark_checked(self, key: str, now: float | None = None, sha256: str | None = None) -> Meta | None:
        """Record that an upstream confirmed the stored bytes (a 304).

        With `sha256`, only if the stored bytes are still those (another writer may have replaced them).
        """
        meta = self.meta(key)
        if meta is None or (sha256 is not None and meta.sha256 != sha256):
            return None
        meta = replace(meta, checked_at=time.time() if now is None else now)
        store_meta(self._cache, key, asdict(meta))
        if (known := self.peek(key)) is not None and known.meta.sha256 == meta.sha256:
            self._memory.remember(key, Entry(meta, known.body))
        return meta

    def note_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        """Record a 304 for an entry this process holds in memory, in memory only (no I/O: safe on the event
        loop); `touch_hits` writes it to disk with the recency. None if the entry is not held (or not those bytes).
        Until then another process sharing the folder sees the older check, and revalidates a little sooner."""
        return self._memory.note_checked(key, now, sha256)

    def set_negative(self, key: str, reason: str, ttl: float) -> None:
        """Remember for `ttl` seconds that no upstream has `key`."""
        self._leases.set_negative(key, reason, ttl)

    def negative(self, key: str) -> str | None:
        return self._leases.negative(key)

    def acquire_lease(self, key: str, ttl: float) -> bool:
        """Take the right to fetch `key` from upstreams; other processes sharing the folder wait (`HostLeases`)."""
        return self._leases.acquire(key, ttl)

    def lease_holder(self, key: str) -> str | None:
        """The live lease's holder (its PID and a per-process id), or None."""
        return self._leases.holder(key)

    def release_lease(self, key: str) -> None:
        """Give the lease back, only if it is still ours (it may have expired and been taken since)."""
        with self._cache.transact():
            self._leases.release(key)

    def note_hit(self, key: str) -> None:
        """A hit served from memory: remembered so `touch_hits` can tell the disk (LRU, purges)."""
        self._memory.note_hit(key)

    def upkeep(self) -> None:
        """The periodic work (every few seconds while the proxy runs): recency and 304s to disk, then eviction. A
        database another process sharing the folder set aside as damaged (and replaced) is left for the new one."""
        if not self.read_only and self._database is not None and self._database_file() not in (self._database, None):
            self._retire()
            self._cache, self._database = recovery.open_cache(self.directory, **self._settings), self._database_file()
            self._attach()
            logger.warning("cargo-cache: the cache database in %s was replaced by another process (a damaged one set "
                           "aside): reopened", self.directory)
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
        return self._writeback.touch_hits()

    def mark_pending(self, key: str) -> None:
        """Remember that `key` still has to be uploaded to a shared store (survives restarts)."""
        self._pending.mark(key)

    def unmark_pending(self, key: str) -> None:
        self._pending.unmark(key)

    def pending(self) -> list[str]:
        """Keys marked pending, oldest first."""
        return self._pending.keys()

    def keys(self, prefix: str = "") -> list[str]:
        return [k[5:] for k in self._scan.prefixed(f"meta:{prefix}")]

    def delete(self, key: str) -> bool:
        self._memory.forget(key)
        removed = bool(self._cache.delete(f"meta:{key}"))
        if removed:
            self._cache.incr(PURGE_GENERATION)  # the other processes on this folder drop their memory copies
        return removed

    def evict_damaged(self, key: str, sha256: str, actual: str) -> None:
        """Bytes stored as `sha256` read back as `actual` (bit rot): told once and counted (`integrity.Damage`),
        then the blob is deleted (every entry naming it becomes a miss, and a new copy of those bytes is stored
        anew rather than taken for one already there) with `key`'s meta if it still names it. A cache folder that
        cannot be written (read-only) keeps them: they stay a miss on every read, never served."""
        self.damage.found(key, sha256, actual, "cache folder")
        self._memory.forget(key)
        try:
            with self._cache.transact():
                raw = self._cache.get(f"meta:{key}")
                if raw is not None and raw.get("sha256") == sha256:
                    self._cache.delete(f"meta:{key}")
                self._cache.delete(f"blob:{sha256}")
                self._cache.incr(PURGE_GENERATION, default=self._memory.generation)  # other workers drop theirs
        except Exception as e:
            self._unevictable.add(sha256)
            logger.warning("cargo-cache: damaged entry %s could not be evicted (%s: %s); it stays a miss", key,
                           type(e).__name__, e)

    def totals(self) -> dict[str, list[int]]:
        """{kind: [entries, bytes]} of every entry, summed in SQL (`KeyScan.totals`), else from a whole listing."""
        found = self._scan.totals(writable=not self.read_only)
        return add_up({}, self.entries()) if found is None else found

    def count(self, prefix: str = "") -> int:
        """How many entries have keys starting with `prefix`, without reading them."""
        return self._scan.count(f"meta:{prefix}")

    def clear(self) -> int:
        self._memory.clear()
        self._pending.clear()
        removed = self._cache.clear()
        self._cache.incr(PURGE_GENERATION, default=self._memory.generation)
        return removed

    def collect_garbage(self) -> int:
        """Delete blobs no entry names any more; returns how many. Memory: 64 bits of each named digest (a blob
        whose prefix collides with a named one is kept, never the other way round); the blobs a page at a time."""
        referenced = {short(meta.sha256) for _, meta in self.entries()}
        removed, after = 0, None
        while True:
            keys = self._scan.key_page("blob:", after, PAGE)
            orphans = [key for key in keys if short(key[5:]) not in referenced]
            if orphans:
                with self._cache.transact():
                    removed += sum(bool(self._cache.delete(key)) for key in orphans)
            if len(keys) < PAGE:
                return removed
            after = keys[-1]

    def remove_page(self, removal: Removal, after: str | None) -> str | None:
        """Delete the entries of one page of the listing (after key `after`) that `removal` chooses, in one
        transaction; the key to continue after (None: that was the last page)."""
        with self._cache._transact() as (sql, cleanup):  # diskcache's own transaction, as its deletes use
            page, following = self.entry_page("", after)
            gone = removal.sort(page)
            if gone:
                _delete_rows(sql, cleanup, [f"meta:{key}" for key in gone])
                for key in gone:
                    self._memory.forget(key)
                self._cache.incr(PURGE_GENERATION, default=self._memory.generation)  # other workers drop theirs
        return following

    def drop_unnamed(self, removal: Removal) -> int:
        """Delete the blobs that only the entries `removal` removed named, unless stored again since it began; how
        many."""
        dropped, unnamed = 0, removal.unnamed()
        for start in range(0, len(unnamed), PAGE):
            keys = [f"blob:{sha256}" for sha256 in unnamed[start:start + PAGE]]
            with self._cache._transact() as (sql, cleanup):
                dropped += _delete_rows(sql, cleanup, keys, stored_before=removal.started)
        return dropped

    def volume(self) -> int:
        return self._cache.volume()

    def read_blob(self, sha256: str):
        """A blob's bytes as they are on disk now, unchecked (for `verify`): an open file for one kept as a file (the
        caller closes it), bytes for one kept in the database, None if there is none. Not a use: no recency written
        (diskcache's `get` would write each row's access time, a write transaction per entry verified)."""
        return self._scan.value(f"blob:{sha256}", read=True)

    def has_blob(self, sha256: str) -> bool:
        """Whether the database still names the blob (eviction may have dropped it before the meta naming it)."""
        return f"blob:{sha256}" in self._cache

    def delete_blob(self, sha256: str) -> bool:
        """Drop a blob whose bytes went bad, so the next store of those bytes writes them again (`put_entry_file`
        keeps a blob of the right size that is already there)."""
        return bool(self._cache.delete(f"blob:{sha256}"))
