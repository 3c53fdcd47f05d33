"""Room in the cache folder: before bytes are written to it, the least recently used entries are evicted so that the
folder stays within its size limit while it fills, not only at the next upkeep.

What counts (`Usage`) is what the folder holds on disk: diskcache's volume (the database's pages and the values kept
as files), its write-ahead log, and the partial files of downloads in progress (spool.py), which all grow while a
cold fetch runs. A write that would take that past the limit first evicts down to `LOW_WATER` of it less the write
(`to_free`, pure), so that the next writes find room without evicting one entry each. Eviction takes the eviction
policy's own order (diskcache's query and index: the oldest first, a range read of an index, its cost does not grow
with the number of entries), `BATCH` rows per step; a step on its own is one short transaction (the write lock is
held that long), inside a caller's transaction (a batch of the store thread) it joins it and the evicted values'
files are removed once that commits (`Evictor`).

The upkeep's `cull` (every few seconds) stays: it also drops expired records and evicts what other processes wrote.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import diskcache

logger = logging.getLogger(__name__)

LOW_WATER = 0.95  # an eviction for a write goes down to this share of the limit (du's blocks and folders: the rest)
BATCH = 32  # rows per eviction step


@dataclass(frozen=True)
class Usage:
    volume: int  # diskcache's: database pages plus values kept as files
    log: int  # the database's write-ahead log
    partial: int  # partial files of downloads in progress

    @property
    def total(self) -> int:
        return self.volume + self.log + self.partial


def to_free(usage: Usage, incoming: int, limit: int, low_water: float = LOW_WATER) -> int:
    """Bytes to evict before writing `incoming` more: none while it fits within `limit`; else down to `low_water` of
    the limit less the write (at most everything evictable, the volume)."""
    if limit <= 0 or usage.total + incoming <= limit:
        return 0
    return min(usage.volume, usage.total + incoming - int(limit * low_water))


def folder_bytes(folder: Path) -> int:
    """The bytes of the files directly in `folder` (none if it is missing)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as found:
        for item in found:
            with contextlib.suppress(FileNotFoundError):
                total += item.stat(follow_symlinks=False).st_size
    return total


class Evictor:
    """Evicts for writes to one diskcache folder. `usage` says what the folder holds now; `deferred` is the thread's
    list of files to remove once the outermost transaction commits (None outside one)."""

    def __init__(self, cache: diskcache.Cache, usage: Callable[[], Usage], deferred: Callable[[], list | None]):
        self._cache, self._usage, self._deferred = cache, usage, deferred
        self._lock = threading.Lock()  # one thread evicts at a time; the others then find room made
        self.evicted = 0  # rows, since the store opened (tests, logs)

    def make_room(self, incoming: int) -> int:
        """Evict until `incoming` more bytes fit within the size limit; returns the rows evicted."""
        limit = self._cache.size_limit
        if not to_free(self._usage(), incoming, limit):
            return 0
        select = diskcache.core.EVICTION_POLICY[self._cache.eviction_policy]["cull"]
        if select is None:  # policy 'none'
            return 0
        select = select.format(fields="rowid, filename, size + COALESCE(length(value), 0)", now=0)
        rows = 0
        with self._lock:
            # measured once, under the lock (another thread may just have made room): freed bytes are counted as the
            # rows go, since a database's pages are only given back when the outermost transaction commits
            short = to_free(self._usage(), incoming, limit)
            while short > 0 and (step := self._step(select, short)):
                rows += step[0]
                short -= step[1]
        if rows:
            self.evicted += rows
            logger.debug("cargo-cache: evicted %d entries to make room for %d bytes", rows, incoming)
        return rows

    def _step(self, select: str, short: int) -> tuple[int, int] | None:
        """Evict the policy's first rows (up to BATCH, fewer once `short` bytes are freed): (rows, bytes), or None if
        there was nothing to evict (or the folder is busy: the write goes on, the upkeep evicts)."""
        deferred = self._deferred()
        try:
            with self._cache._transact() as (sql, cleanup):  # diskcache's table and transaction, as its cull uses
                chosen, freed = [], 0
                for rowid, filename, size in sql(select, (BATCH,)).fetchall():
                    chosen.append((rowid, filename))
                    freed += size or 0
                    if freed >= short:
                        break
                if not chosen:
                    return None
                sql(f"DELETE FROM Cache WHERE rowid IN ({','.join('?' * len(chosen))})", [r for r, _ in chosen])
                for _, filename in chosen:
                    if filename is not None:
                        # inside a caller's transaction, which may still roll back: removed once it commits
                        (deferred.append if deferred is not None else cleanup)(filename)
        except diskcache.Timeout:
            return None
        return len(chosen), max(freed, 1)
