"""Range scans of the local store's diskcache key index, and the persistent request counters kept in it.

A scan reads the table directly (one short query a page, keyset-paged by key), without diskcache's `get`: with
least-recently-used eviction every `get` is also a write of the entry's access time, so a listing through it would
rewrite every row and make everything listed "recently used".
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import time
from typing import Any

import diskcache

logger = logging.getLogger(__name__)

META_PREFIX = "meta:"
META_INDEX = "Cache_meta_listing"
_META_TERMS = "key >= 'meta:' AND key < 'meta;'"  # ';' follows ':': every key starting with "meta:", no other


class KeyScan:
    def __init__(self, cache: diskcache.Cache):
        self._cache = cache

    def prefixed(self, prefix: str) -> list[str]:
        """The stored keys starting with `prefix`, in order: a range scan of the key index, not of every row."""
        # diskcache has no prefix query; its table is documented (Cache.key holds str keys as TEXT, indexed).
        rows = self._cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key", _key_range(prefix))
        return [key for (key,) in rows if isinstance(key, str)]

    def ensure_index(self) -> bool:
        """Create the covering index of the meta records if it is missing (once per folder; on a large cache the
        first start after an upgrade takes a few seconds for it). False if the folder cannot take it (read-only):
        listings then read the table itself."""
        sql = self._cache._sql
        try:
            if sql("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (META_INDEX,)).fetchone():
                return True  # no write at all on an ordinary start
            sql(f"CREATE INDEX IF NOT EXISTS {META_INDEX} ON Cache(key, mode, filename, value) WHERE {_META_TERMS}")
            # into the database file now, not left in the WAL: the schema's first page must be where a check of the
            # file (recovery.py) reads it
            sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError as e:
            logger.warning("cargo-cache: the listing index of %s could not be created (%s): listings read the whole "
                           "table", self._cache.directory, e)
            return False
        return True

    def page(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any]]:
        """Up to `limit` (key, value) of the keys starting with `prefix` and above `after` (None: from the first), in
        key order; values stored in the database only (a value kept as a file reads as None). No recency update.
        The meta records are read from their covering index (`META_INDEX`): a listing reads those records in key order
        and none of the table's pages, which hold the bytes of every small entry beside them."""
        low, high = _key_range(prefix)
        above = ">" if after is not None else ">="
        covered = f"{_META_TERMS} AND " if prefix.startswith(META_PREFIX) else ""  # the partial index's own terms
        rows = self._cache._sql(f"SELECT key, mode, filename, value FROM Cache WHERE {covered}key {above} ? "
                                "AND key < ? ORDER BY key LIMIT ?", (low if after is None else after, high, limit)
                                ).fetchall()
        fetch = self._cache.disk.fetch
        return [(key, _value(fetch, mode, filename, value) if value is not None else None)
                for key, mode, filename, value in rows if isinstance(key, str)]

    def value(self, key: str, read: bool = False) -> Any:
        """The value stored under `key` (with `read`, a value kept as a file comes as an open file), or None; what
        diskcache's `get` returns, without its write of the access time (the caller tells the recency later, in
        batches: `MemoryTier.note_hit`)."""
        row = self._cache._sql("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1 "
                               "AND (expire_time IS NULL OR expire_time > ?)", (key, time.time())).fetchone()
        if row is None:
            return None
        mode, filename, value = row
        try:
            return _value(self._cache.disk.fetch, mode, filename, value) if not read or filename is None else \
                self._cache.disk.fetch(mode, filename, value, True)
        except OSError:
            return None  # its file was deleted meanwhile (evicted): as diskcache's get, a miss

    def key_page(self, prefix: str, after: str | None, limit: int) -> list[str]:
        """Like `page`, the keys only."""
        low, high = _key_range(prefix)
        above = ">" if after is not None else ">="
        rows = self._cache._sql(f"SELECT key FROM Cache WHERE key {above} ? AND key < ? ORDER BY key LIMIT ?",
                                (low if after is None else after, high, limit)).fetchall()
        return [key for (key,) in rows if isinstance(key, str)]

    def count(self, prefix: str) -> int:
        """How many keys start with `prefix`, without reading them."""
        (count,) = self._cache._sql("SELECT COUNT(*) FROM Cache WHERE key >= ? AND key < ?",
                                    _key_range(prefix)).fetchone()
        return count

    def add_counts(self, counts: dict[str, int]) -> None:
        """Add to the persistent request counters (shared by all workers)."""
        for name, n in counts.items():
            if n:
                self._cache.incr(f"count:{name}", n)

    def counts(self) -> dict[str, int]:
        return {k[6:]: self._cache.get(k, 0) for k in self.prefixed("count:")}


def _value(fetch, mode: int, filename: str | None, value: Any) -> Any:
    if mode == diskcache.core.MODE_PICKLE and value is not None:
        return pickle.loads(value)  # a meta record: what `Disk.fetch` does, without its file object
    return fetch(mode, filename, value, False)


def _key_range(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the TEXT keys that start with `prefix` (SQLite compares TEXT bytewise)."""
    return prefix, prefix + "\U0010ffff"
