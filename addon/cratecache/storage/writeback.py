"""The local store's write-back: what the memory tier noted (hits, 304s) told to the disk in a few commits.

With least-recently-used eviction a read is a write, so a hit served from memory is "touched" on disk later, in
chunks, with the 304s recorded in memory; entries purged meanwhile are dropped from memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import diskcache

from .keyscan import store_meta
from .memory import MemoryTier

UPKEEP_CHUNK = 256  # recency touches and 304s written per transaction
PURGE_GENERATION = "purge-generation"  # bumped by every delete, so other processes know to drop their memory tier


class WriteBack:
    def __init__(self, cache: diskcache.Cache, memory: MemoryTier):
        self._cache, self._memory = cache, memory

    def write_checks(self) -> None:
        for chunk in _chunks(list(self._memory.take_checks().items())):
            with self._cache.transact():  # one commit per chunk, not one per 304
                for key, (when, sha256) in chunk:
                    raw = self._cache.get(f"meta:{key}")
                    if raw is not None and raw["sha256"] == sha256 and raw["checked_at"] < when:
                        store_meta(self._cache, key, {**raw, "checked_at": when})

    def touch_hits(self) -> int:
        """Refresh the disk's recency of entries served from memory, write the 304s recorded in memory, and drop
        any purged meanwhile."""
        self.write_checks()
        keys = self._memory.take_hits(self._cache.get(PURGE_GENERATION, 0))
        for chunk in _chunks(list(keys)):
            with self._cache.transact():  # with least-recently-used a read is a write: one commit per chunk
                for key in chunk:
                    raw = self._cache.get(f"meta:{key}")  # the touch
                    if raw is None:
                        self._memory.forget(key)
                        continue
                    handle = self._cache.get(f"blob:{raw['sha256']}", read=True)
                    if hasattr(handle, "close"):
                        handle.close()
        return len(keys)


def _chunks(items: list, size: int = UPKEEP_CHUNK) -> Iterator[list]:
    """The upkeep's writes in transactions of `size`: few commits, and SQLite's write lock (which requests' store
    calls wait for) held only briefly each time."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
