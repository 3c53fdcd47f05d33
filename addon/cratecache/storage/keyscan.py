"""Range scans of the local store's diskcache key index, and the persistent request counters kept in it."""

from __future__ import annotations

import diskcache


class KeyScan:
    def __init__(self, cache: diskcache.Cache):
        self._cache = cache

    def prefixed(self, prefix: str) -> list[str]:
        """The stored keys starting with `prefix`, in order: a range scan of the key index, not of every row."""
        # diskcache has no prefix query; its table is documented (Cache.key holds str keys as TEXT, indexed).
        rows = self._cache._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key", _key_range(prefix))
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


def _key_range(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the TEXT keys that start with `prefix` (SQLite compares TEXT bytewise)."""
    return prefix, prefix + "\U0010ffff"
