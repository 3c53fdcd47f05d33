"""The local store's in-memory tier: recently used entries, the hits served from it and the 304s it recorded.

Entries up to `HOT_ITEM_LIMIT` bytes each are kept (least recently used first out) up to a byte budget, so a
repeated hit costs no I/O and no thread hand-off; a larger one is kept only while a request still holds it, so
concurrent readers of one large crate share a single copy of its bytes. The hits and 304s noted here wait for
the write-back (`writeback.WriteBack`) to tell the disk. Every method is in memory only: safe on the event loop.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .entries import Entry, Meta

HOT_ITEM_LIMIT = 1024 * 1024


class MemoryTier:
    def __init__(self, limit: int, generation: int):
        self._hot: OrderedDict[str, Entry] = OrderedDict()
        self._hot_bytes, self._hot_limit = 0, limit
        self._shared: weakref.WeakValueDictionary[str, Entry] = weakref.WeakValueDictionary()
        self._hits: dict[str, None] = {}  # in order of last use: the write-back touches them in that order (LRU)
        self._checks: dict[str, tuple[float, str]] = {}  # 304s recorded in memory, not yet on disk: (when, sha256)
        self._lock = threading.Lock()
        self.generation = generation  # the purge generation this memory tier has caught up with

    def peek(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._hot.get(key)
            if entry is not None:
                self._hot.move_to_end(key)
                return entry
            return self._shared.get(key)

    def remember(self, key: str, entry: Entry) -> None:
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

    def forget(self, key: str) -> None:
        with self._lock:
            old = self._hot.pop(key, None)
            if old is not None:
                self._hot_bytes -= old.meta.size
            self._shared.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:  # under the lock
        self._hot.clear()
        self._hot_bytes = 0
        self._shared.clear()

    def with_check(self, key: str, meta: Meta) -> Meta:
        """`meta` as read from disk, with a later 304 for the same bytes that is still only in memory."""
        with self._lock:
            when, sha256 = self._checks.get(key, (0.0, ""))
        return replace(meta, checked_at=when) if sha256 == meta.sha256 and when > meta.checked_at else meta

    def note_checked(self, key: str, now: float, sha256: str | None = None) -> Meta | None:
        """Record a 304 for an entry held here; None if it is not held (or not those bytes)."""
        with self._lock:
            known = self._hot.get(key)
            if known is None or known.body is None or (sha256 is not None and known.meta.sha256 != sha256):
                return None
            meta = replace(known.meta, checked_at=now)
            self._hot[key] = replace(known, meta=meta)
            self._hot.move_to_end(key)
            self._checks[key] = (now, meta.sha256)
            return meta

    def note_hit(self, key: str) -> None:
        with self._lock:
            self._hits.pop(key, None)
            self._hits[key] = None

    def take_checks(self) -> dict[str, tuple[float, str]]:
        """The 304s noted since the last call, for the disk."""
        with self._lock:
            checks, self._checks = self._checks, {}
        return checks

    def take_hits(self, generation: int) -> list[str]:
        """The keys hit since the last call, for the disk; drops every entry if another process purged since
        (`generation` is the folder's purge generation now): nothing in memory may outlive a purge."""
        with self._lock:
            keys, self._hits = list(self._hits), {}
            if generation != self.generation:
                self.generation = generation
                self._clear()
        return keys
