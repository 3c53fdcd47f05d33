"""The local store's records beside its entries: leases, negative records (in the entries' diskcache) and
pending-upload marks (in a cache of their own, which the size limit's culling never touches)."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

import diskcache

from . import faults, readonly, recovery


class HostLeases:
    """Leases and negative records of the processes sharing one cache folder (so local to this host)."""

    def __init__(self, cache: diskcache.Cache):
        self._cache = cache
        self._holder = (os.getpid(), uuid.uuid4().hex)  # this store's identity in leases

    def set_negative(self, key: str, reason: str, ttl: float) -> None:
        """Remember for `ttl` seconds that no upstream has `key`."""
        if ttl > 0:
            self._cache.set(f"negative:{key}", reason, expire=ttl)

    def negative(self, key: str) -> str | None:
        return self._cache.get(f"negative:{key}")

    def acquire(self, key: str, ttl: float) -> bool:
        """Take the right to fetch `key` from upstreams; other processes sharing the folder wait.

        A lease expires after `ttl`, and one whose holder process has died is taken over at once
        (the folder is local to this host, so the holder's PID can be checked).
        """
        if self._cache.add(f"lease:{key}", self._holder, expire=ttl):
            return True
        return self.holder(key) is None and self._cache.add(f"lease:{key}", self._holder, expire=ttl)

    def holder(self, key: str) -> str | None:
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

    def release(self, key: str) -> None:
        """Give the lease back if it is still ours (it may have expired and been taken since); inside a
        transaction."""
        if self._cache.get(f"lease:{key}") == self._holder:
            self._cache.delete(f"lease:{key}")


class PendingMarks:
    """Keys still to be uploaded to a shared store (they survive restarts); the cache is opened on first use."""

    def __init__(self, directory: Path):
        self._directory = directory
        self._marks: diskcache.Cache | None = None

    @property
    def _cache(self) -> diskcache.Cache:
        if self._marks is None:
            self._marks = recovery.open_cache(self._directory, eviction_policy="none", statistics=False)
        return self._marks

    def mark(self, key: str) -> None:
        self._cache.set(key, time.time())

    def unmark(self, key: str) -> None:
        self._cache.delete(key)

    def keys(self) -> list[str]:
        """Keys marked pending, oldest first; in a folder that refuses writes, read without opening it for writing
        (a mark or unmark then raises the folder's error, which the caller handles)."""
        try:
            cache = self._cache
        except (OSError, sqlite3.Error):
            refused = faults.refusal(self._directory)
            if refused is None:
                raise
            marks = readonly.ReadOnlyCache(self._directory, refused)
            try:
                return _oldest_first(marks)
            finally:
                marks.close()
        return _oldest_first(cache)

    def clear(self) -> None:
        if self._marks is not None or self._directory.exists():
            self._cache.clear()

    def close(self) -> None:
        if self._marks is not None:
            self._marks.close()


def _oldest_first(marks: diskcache.Cache | readonly.ReadOnlyCache) -> list[str]:
    found = [(key, marks.get(key, 0)) for key in marks.iterkeys()]
    return [key for key, _ in sorted(found, key=lambda m: m[1] or 0)]


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
