"""Range scans of the local store's diskcache key index, and the persistent request counters kept in it.

A scan reads the table directly (one short query a page, keyset-paged by key), without diskcache's `get`: with
least-recently-used eviction every `get` is also a write of the entry's access time, so a listing through it would
rewrite every row and make everything listed "recently used".

Each meta record also carries its entry's size in diskcache's `tag` column (`store_meta`): `totals` then sums
entries and bytes per kind in SQL, over a small index of (key, size), without decoding a record.
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
PAGE = 1000  # records a query of `_untagged` reads
META_INDEX = "Cache_meta_listing"
SIZES_INDEX = "Cache_meta_sizes"
_META_TERMS = "key >= 'meta:' AND key < 'meta;'"  # ';' follows ':': every key starting with "meta:", no other
_KIND = "substr(key, 6, instr(substr(key, 6), '/') - 1)"  # 'meta:crate/crates-io/…' -> 'crate'


def store_meta(cache: diskcache.Cache, key: str, meta: dict[str, Any]) -> None:
    """Write the meta record of `key`, its entry's size also in the row's `tag` (what `KeyScan.totals` sums)."""
    cache.set(f"{META_PREFIX}{key}", meta, tag=meta["size"])


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
        return self._ensure(META_INDEX, "key, mode, filename, value", "listings read the whole table")

    def _ensure(self, name: str, columns: str, otherwise: str) -> bool:
        sql = self._cache._sql
        try:
            if self._has(name):
                return True  # no write at all on an ordinary start
            sql(f"CREATE INDEX IF NOT EXISTS {name} ON Cache({columns}) WHERE {_META_TERMS}")
            # into the database file now, not left in the WAL: the schema's first page must be where a check of the
            # file (recovery.py) reads it
            sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError as e:
            logger.warning("cargo-cache: the index %s of %s could not be created (%s): %s", name,
                           self._cache.directory, e, otherwise)
            return False
        return True

    def totals(self, writable: bool) -> dict[str, list[int]] | None:
        """{kind: [entries, bytes]} of the meta records, summed by SQLite over the sizes index (about a second at a
        million entries); the index is created by the first call (seconds on a large cache that had none). Records
        stored before sizes were tagged are read and, when `writable`, tagged (a page a transaction), once. None if
        there is no sizes index and the folder cannot take one (the caller sums the records it lists)."""
        indexed = self._ensure(SIZES_INDEX, "key, tag", "totals read every record") if writable else \
            self._has(SIZES_INDEX)
        if not indexed:
            return None
        found: dict[str, list[int]] = {}
        for kind, entries, size in self._cache._sql(f"SELECT {_KIND} AS kind, COUNT(*), TOTAL(tag) FROM Cache WHERE "
                                                     f"{_META_TERMS} GROUP BY kind"):
            found[kind] = [entries, int(size)]
        for kind, size in self._untagged(writable):
            found.setdefault(kind, [0, 0])[1] += size
        return found

    def _untagged(self, writable: bool) -> list[tuple[str, int]]:
        """(kind, size) of the meta records without a tag, tagging them when `writable`."""
        found, after = [], ""
        while True:
            rows = self._cache._sql(f"SELECT rowid, key, mode, filename, value FROM Cache WHERE key > ? AND "
                                    f"{_META_TERMS} AND tag IS NULL ORDER BY key LIMIT ?", (after, PAGE)).fetchall()
            sizes = [(rowid, key, _value(self._cache.disk.fetch, mode, filename, value)) for rowid, key, mode, filename,
                     value in rows]
            sizes = [(rowid, key, meta["size"]) for rowid, key, meta in sizes if isinstance(meta, dict)]
            found += [(key[5:].split("/", 1)[0], size) for _, key, size in sizes]
            if writable and sizes:
                try:
                    with self._cache.transact():
                        for rowid, key, size in sizes:
                            self._cache._sql("UPDATE Cache SET tag = ? WHERE rowid = ? AND key = ?", (size, rowid, key))
                except sqlite3.OperationalError as e:
                    logger.debug("cargo-cache: tagging sizes failed: %s", e)
                    writable = False
            if len(rows) < PAGE:
                return found
            after = rows[-1][1]

    def _has(self, name: str) -> bool:
        return self._cache._sql("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
                                ).fetchone() is not None

    def page(self, prefix: str, after: str | None, limit: int) -> list[tuple[str, Any]]:
        """Up to `limit` (key, value) of the keys starting with `prefix` and above `after` (None: from the first), in
        key order; values stored in the database only (a value kept as a file reads as None). No recency update.
        The meta records are read from their covering index (`META_INDEX`): a listing reads those records in key order
        and none of the table's pages, which hold the bytes of every small entry beside them."""
        low, high = _key_range(prefix)
        above = ">" if after is not None else ">="
        # the partial index's own terms, after the page's bounds: SQLite seeks to the first lower bound on `key` it
        # is given, so with 'meta:' first each page scanned the index from its start (a whole listing was quadratic:
        # 84 s at 1M entries, 2 s with this order)
        covered = f" AND {_META_TERMS}" if prefix.startswith(META_PREFIX) else ""
        rows = self._cache._sql(f"SELECT key, mode, filename, value FROM Cache WHERE key {above} ? AND key < ?{covered} "
                                "ORDER BY key LIMIT ?", (low if after is None else after, high, limit)).fetchall()
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
