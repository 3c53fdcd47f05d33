"""The disk backend: the local store is the whole cache. Its SQLite work runs on worker threads."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from . import Storage, recovery
from .batches import StoreThread
from .local import KINDS, Entry, LocalStore, Meta
from .removal import Chooser, Removal
from .spool import Spooled

logger = logging.getLogger(__name__)

class DiskStorage(Storage):
    backend = "disk"
    poll_seconds = 0.05

    def __init__(self, local: LocalStore):
        self.local = local
        self.writability = local.writability
        self.directory = local.directory
        self.damage = local.damage
        # One thread for all of this process's SQLite work: the store's writes serialise on SQLite's lock anyway,
        # and several threads waiting for it (busy-handler sleeps) and for the GIL cost the event loop more. Short
        # calls that queue up while it works run together, in one transaction (`batches`).
        self._thread = StoreThread(local.transaction)

    async def _run(self, fn, *args):
        try:
            return await self._thread.run(fn, *args)
        except sqlite3.DatabaseError as e:
            self._found_damage(fn, e)
        return await self._thread.run(fn, *args)

    async def _alone(self, fn, *args):
        """A call that must not join a batch: long (scans, purges) or not undone by a rollback (a file moved in)."""
        try:
            return await self._thread.run(fn, *args, batch=False)
        except sqlite3.DatabaseError as e:
            self._found_damage(fn, e)
        return await self._thread.run(fn, *args, batch=False)

    def _found_damage(self, fn, error: sqlite3.DatabaseError) -> None:
        """A call found the database damaged (overwritten or truncated under the running proxy): the store stops
        reading it (`LocalStore.set_damaged`), and the caller runs the call once more on what replaces it: a read is a
        miss, a write raises as on a folder that refuses writes (the callers pass answers through). Any other error
        is raised."""
        if not recovery.is_damage(error):
            raise error
        if not self.local.read_only:  # (else another call found it first, or it is a refused write: raised again)
            self.local.set_damaged(getattr(fn, "__name__", "read"), error)

    def peek(self, key: str) -> Entry | None:
        return self.local.peek(key)

    def note_hit(self, key: str) -> None:
        self.local.note_hit(key)

    async def get(self, key: str) -> Entry | None:
        return await self._run(self.local.get, key)

    async def latest(self, key: str) -> Entry | None:
        return await self.get(key)

    async def meta(self, key: str) -> Meta | None:
        return await self._run(self.local.meta, key)

    async def put(self, key: str, body: bytes, upstream: str, etag: str | None = None,
                  last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        return await self._run(self.local.put, key, body, upstream, etag, last_modified, now, release)

    async def put_file(self, key: str, spooled: Spooled, upstream: str, etag: str | None = None,
                       last_modified: str | None = None, now: float | None = None, release: bool = False) -> Entry:
        return await self._alone(self.local.put_file, key, spooled, upstream, etag, last_modified, now, release)

    async def put_entry_file(self, key: str, meta: Meta, path: Path) -> None:
        await self._alone(self.local.put_entry_file, key, meta, path)

    async def put_entry(self, key: str, meta: Meta, body: bytes, remember: bool = False) -> None:
        await self._run(self.local.put_entry, key, meta, body, remember)

    async def make_room(self, incoming: int) -> None:
        """On the store thread, with the process's other SQLite work (two threads taking SQLite's write lock wait for
        each other in its busy handler's sleeps); only when what this process measured last says it may be needed."""
        if self.local.needs_room(incoming):
            try:
                await self._thread.run(self.local.keep_within, incoming)
            except Exception as e:  # keep_within never raises; a closed store thread would
                logger.debug("cargo-cache: making room for a download failed: %s", e)

    async def evict_damaged(self, key: str, sha256: str, actual: str) -> None:
        await self._run(self.local.evict_damaged, key, sha256, actual)

    async def mark_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        """A 304 for an entry held in memory is recorded there and written back with the recency (`maintain`):
        no thread hand-off and no SQLite write per revalidation."""
        held = self.local.note_checked(key, now, sha256)
        if held is not None:
            return held
        return await self._run(self.local.mark_checked, key, now, sha256)

    async def set_negative(self, key: str, reason: str, ttl: float) -> None:
        await self._run(self.local.set_negative, key, reason, ttl)

    async def negative(self, key: str) -> str | None:
        return await self._run(self.local.negative, key)

    async def claim(self, key: str, ttl: float, usable: Callable[[Entry], bool] | None = None
                    ) -> tuple[bool, Entry | None, str | None]:
        return await self._run(self.local.claim, key, ttl, usable)

    async def lease_holder(self, key: str) -> str | None:
        return await self._run(self.local.lease_holder, key)

    async def release_lease(self, key: str) -> None:
        await self._run(self.local.release_lease, key)

    async def entries(self, prefix: str = "") -> list[tuple[str, Meta]]:
        return await self._alone(lambda: list(self.local.entries(prefix)))

    async def entry_pages(self, prefix: str = "", size: int = 1000) -> AsyncIterator[list[tuple[str, Meta]]]:
        after: str | None = None
        while True:  # each page one short call on the store thread: requests' calls run between pages
            page, after = await self._alone(self.local.entry_page, prefix, after, size)
            if page:
                yield page
            if after is None:
                return

    async def remove_where(self, chosen: Chooser) -> list[str]:
        removal, after = Removal(chosen, time.time()), None
        while True:  # a page a call: requests' calls run between pages
            after = await self._alone(self.local.remove_page, removal, after)
            if after is None:
                break
        await self._alone(self.local.drop_unnamed, removal)
        return removal.removed

    async def keys(self, prefix: str = "") -> list[str]:
        return await self._alone(self.local.keys, prefix)

    async def delete(self, key: str) -> bool:
        return await self._run(self.local.delete, key)

    async def clear(self) -> int:
        return await self._alone(self.local.clear)

    async def collect_garbage(self) -> int:
        return await self._alone(self.local.collect_garbage)

    async def totals(self) -> dict[str, list[int]]:
        return await self._alone(self.local.totals)

    async def figures(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            return {"bytes": self.local.volume(), "entries": {kind: self.local.count(f"{kind}/") for kind in KINDS}}

        return await self._alone(read)

    async def add_counts(self, counts: dict[str, int]) -> None:
        await self._run(self.local.add_counts, counts)

    async def counts(self) -> dict[str, int]:
        return await self._alone(self.local.counts)

    async def maintain(self) -> None:
        # Background upkeep (a batch of recency touches and 304s, then eviction, every 5 s) on asyncio's pool, not the
        # store thread, so that requests' reads and writes never queue behind it.
        writability = self.writability
        try:
            try:
                await asyncio.to_thread(self.local.upkeep)
            except sqlite3.DatabaseError as e:
                self._found_damage(self.local.upkeep, e)
                await asyncio.to_thread(self.local.upkeep)
        except Exception as e:
            if not writability.failed("upkeep", e):
                raise
        # no miss meanwhile: find out whether it is back; opened read-only, at every upkeep, since a miss's write then
        # only meets the read-only opening, never the folder (the probe reopens it for writing: local.py)
        if not writability.writable and (self.local.read_only or writability.keep()):
            try:
                await asyncio.to_thread(self.local.probe)
            except Exception as e:
                if not writability.failed("probe", e):
                    raise
            else:
                writability.succeeded()

    async def flush(self) -> None:
        pass  # every write is already on disk

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend, "target": str(self.directory), "state": "ok",
                "folder": self.writability.snapshot()}

    async def close(self) -> None:
        self.local.close()
