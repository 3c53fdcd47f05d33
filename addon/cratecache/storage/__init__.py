"""Where cached entries live. One asynchronous interface, two backends:

- `disk` (default): diskcache in the cache folder, shared by the workers of one host (`disk.py`);
- `s3`: a bucket on S3-compatible object storage shared by a fleet of gateways, with each gateway's
  cache folder as a bounded local tier in front of it (`s3.py`, `bucket.py`).

Nothing outside this package knows which backend runs: the resolver, the addon and the command line
call `open_storage(cache_settings)` and use `Storage`. Both backends pass one contract test suite
(tests/test_storage_contract.py).

An entry is bytes plus `Meta` (checksum, size, the upstream that supplied them, when they were stored
and last confirmed, the upstream's validators). Keys: `config/{registry}`, `index/{registry}/{name}`,
`crate/{registry}/{name}/{version}`, `upstream-config/{registry}/{upstream}`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..config import CacheSettings
from .entries import add_up
from .faults import Writability
from .integrity import Damage
from .local import FILE_THRESHOLD, Entry, LocalStore, Meta, make_entry, sha256_hex
from .removal import Chooser
from .spool import Spool, Spooled

DELETE_CONCURRENCY = 64  # deletes a removal has in flight (the s3 backend's)

__all__ = ["FILE_THRESHOLD", "Entry", "Meta", "Spool", "Spooled", "Storage", "StorageUnavailable", "make_entry",
           "open_storage", "sha256_hex"]


class StorageUnavailable(RuntimeError):
    """The shared store cannot be reached for an operation that needs it (listing, purging)."""


class Storage(ABC):
    backend: str
    directory: Path  # this host's cache folder (the whole cache, or the local tier)
    poll_seconds: float  # how often a waiter re-checks another holder's lease
    on_call: Callable[[str, str, float, bool], None] | None = None  # (backend, operation, seconds, ok) of remote calls
    writability: Writability  # whether this host's cache folder takes writes now (disk full, read-only: faults.py)
    damage: Damage  # the damaged entries found (bit rot): told once, counted by kind (`damage.on_found`: metrics)

    # -- in memory, safe on the event loop --------------------------------------------------
    @abstractmethod
    def peek(self, key: str) -> Entry | None:
        """The entry if this process holds it in memory; never does I/O."""

    @abstractmethod
    def note_hit(self, key: str) -> None:
        """A hit served from memory (for recency on disk, applied by `maintain`)."""

    # -- entries ----------------------------------------------------------------------------
    @abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The entry, or None. Never a partial one: bytes whose checksum or size is wrong are a miss."""

    @abstractmethod
    async def latest(self, key: str) -> Entry | None:
        """The newest entry in the shared store (for export), whatever this host holds."""

    @abstractmethod
    async def meta(self, key: str) -> Meta | None:
        """The shared store's meta for `key` (without reading the bytes)."""

    @abstractmethod
    async def put(self, key: str, body: bytes, upstream: str, etag: str | None = None,
                  last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        """Store verified bytes; the entry becomes visible complete or not at all. `release`: this process fetched
        them under its lease on `key`, which it gives back with the write."""

    def spool(self) -> Spool:
        """Where an answer that may be large is written while it arrives (memory, then a partial file; in the
        temporary folder if the cache folder cannot take it)."""
        return Spool(self.directory, FILE_THRESHOLD, self.writability, room=self.make_room)

    @abstractmethod
    async def make_room(self, incoming: int) -> None:
        """Before `incoming` bytes of a download are written to this host's cache folder: evict what it takes to keep
        the folder within its size limit (room.py). Never raises."""

    def keeps(self) -> bool:
        """Whether to write the next answer (False: serve it without trying, the cache folder refuses writes; see
        `faults.keep`)."""
        return self.writability.keep()

    @property
    def on_fault(self) -> Callable[[str], None] | None:
        """Called with the operation of each write the cache folder refused (e.g. metrics)."""
        return self.writability.on_error

    @on_fault.setter
    def on_fault(self, callback: Callable[[str], None] | None) -> None:
        self.writability.on_error = callback

    @abstractmethod
    async def put_file(self, key: str, spooled: Spooled, upstream: str, etag: str | None = None,
                       last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        """Store verified bytes that were spooled to a file: moved into the cache, visible complete or not at all
        (`release` as for `put`)."""

    @abstractmethod
    async def put_entry_file(self, key: str, meta: Meta, path: Path) -> None:
        """Like put_entry, for bytes in a file in this host's cache folder, which is moved into the cache."""

    @abstractmethod
    async def put_entry(self, key: str, meta: Meta, body: bytes) -> None:
        """Store bytes with recorded provenance (import). The caller has verified `meta.sha256`."""

    @abstractmethod
    async def evict_damaged(self, key: str, sha256: str, actual: str) -> None:
        """The bytes of `key` stored as `sha256` were read back as `actual` (a streamed file found damaged): told,
        counted and evicted from this host's cache folder, so that the next request fetches them again."""

    @abstractmethod
    async def mark_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        """Record an upstream's confirmation (304) of the stored bytes, if they are still `sha256`."""

    @abstractmethod
    async def set_negative(self, key: str, reason: str, ttl: float) -> None:
        """Remember for `ttl` seconds that no upstream has `key`."""

    @abstractmethod
    async def negative(self, key: str) -> str | None: ...

    # -- leases: one fetch per key across processes (and, with s3, gateways) ----------------
    @abstractmethod
    async def claim(self, key: str, ttl: float, usable: Callable[[Entry], bool] | None = None
                    ) -> tuple[bool, Entry | None, str | None]:
        """Take the lease on `key`; if taken, also return its current entry and negative record. With `usable`, a
        stored entry it accepts (no fetch needed) may come back instead, without the lease: (False, entry, None)."""

    @abstractmethod
    async def lease_holder(self, key: str) -> str | None:
        """Who holds a live lease on `key` (an opaque token that changes when another holder takes it over), or
        None. A dead holder's lease ends within its ttl."""

    @abstractmethod
    async def release_lease(self, key: str) -> None: ...

    # -- inspection and maintenance ----------------------------------------------------------
    @abstractmethod
    async def entries(self, prefix: str = "") -> list[tuple[str, Meta]]:
        """(key, meta) of every entry whose key starts with `prefix`, in key order (the shared store's)."""

    async def entry_pages(self, prefix: str = "", size: int = 1000) -> AsyncIterator[list[tuple[str, Meta]]]:
        """The same (key, meta) as `entries`, in key order, at most `size` at a time, each page read when the caller
        asks for it: what a listing of any size iterates (both backends hold one page in memory; this default, for a
        store without a paged listing, reads the whole listing first)."""
        found = await self.entries(prefix)
        for start in range(0, len(found), size):
            yield found[start:start + size]

    async def totals(self) -> dict[str, list[int]]:
        """{kind: [entries, bytes]} of every entry (the shared store's); this default, the s3 backend's, sums a
        listing page by page; the disk backend sums in SQL."""
        found: dict[str, list[int]] = {}
        async for page in self.entry_pages():
            add_up(found, page)
        return found

    async def remove_where(self, chosen: Chooser) -> list[str]:
        """Delete every entry `chosen(key, meta)` accepts, page by page, then the bytes no entry names any more; the
        keys removed. This default, the s3 backend's: each page's chosen entries deleted `DELETE_CONCURRENCY` at a
        time, then garbage collection; the disk backend reads the listing once (removal.py)."""
        removed: list[str] = []
        async for page in self.entry_pages():
            gone = [key for key, meta in page if chosen(key, meta)]
            for start in range(0, len(gone), DELETE_CONCURRENCY):
                await asyncio.gather(*(self.delete(key) for key in gone[start:start + DELETE_CONCURRENCY]))
            removed += gone
        await self.collect_garbage()
        return removed

    @abstractmethod
    async def keys(self, prefix: str = "") -> list[str]:
        """Keys of the entries starting with `prefix` (what is cached, without reading it)."""

    @abstractmethod
    async def delete(self, key: str) -> bool: ...

    @abstractmethod
    async def clear(self) -> int: ...

    @abstractmethod
    async def collect_garbage(self) -> int:
        """Delete stored bytes no entry names any more; returns how many."""

    @abstractmethod
    async def figures(self) -> dict[str, Any]:
        """This host's cache folder: {"bytes": n, "entries": {kind: n}} (cheap; for status and metrics)."""

    @abstractmethod
    async def add_counts(self, counts: dict[str, int]) -> None:
        """Add to the persistent request counters of this host."""

    @abstractmethod
    async def counts(self) -> dict[str, int]: ...

    @abstractmethod
    async def maintain(self) -> None:
        """Periodic upkeep (every few seconds): recency of memory hits, catching up a shared store."""

    @abstractmethod
    async def flush(self) -> None:
        """Before a command ends: store what is still only local; StorageUnavailable if that fails."""

    def rotate_credentials(self, s3: Any) -> None:
        """The s3 backend's keys changed (a reload): used from the next call on. Nothing to do for disk."""
        return None

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """Backend, where it is (no credentials), state, latency and errors; for status and metrics."""

    @abstractmethod
    async def close(self) -> None: ...


def open_storage(cache: CacheSettings, memory_bytes: int | None = None, lean: bool = False) -> Storage:
    """`memory_bytes`: the in-memory tier's budget (default: the proxy's); a command that reads each entry once
    (a listing, an export) gains nothing from holding them. `lean`: for a command (cli.py), SQLite's memory kept
    small (storage/lean.py)."""
    local = LocalStore(cache.directory, cache.size_limit, cache.eviction_policy, lean=lean,
                       **({} if memory_bytes is None else {"hot_bytes": memory_bytes}))
    local.warn_if_larger_than_disk()
    if cache.backend == "s3":
        from .s3 import S3Storage  # obstore is only imported when a bucket is configured

        return S3Storage(local, cache.s3)
    from .disk import DiskStorage

    return DiskStorage(local)
