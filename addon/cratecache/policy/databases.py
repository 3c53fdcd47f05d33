"""The advisory databases the policy uses, loaded and kept current: read at start (before the proxy serves), then
re-read off the event loop when a checkout changes (a `git pull`) or when asked (SIGHUP). A database that cannot be
read keeps the copy already loaded; one never loaded is `None`, and the policy fails closed on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from . import advisories
from .advisories import Database

logger = logging.getLogger(__name__)


class Databases:
    def __init__(self) -> None:
        self._loaded: dict[str, Database] = {}
        self.errors: dict[str, str] = {}  # path -> why its last reading failed
        self.loaded_at: dict[str, float] = {}  # path -> when it was last read

    def get(self, path: str) -> Database | None:
        return self._loaded.get(path)

    @property
    def loaded(self) -> dict[str, Database]:
        return dict(self._loaded)

    def load(self, paths: Iterable[str]) -> None:
        """Read the databases not loaded yet (blocking: at start, or in a thread)."""
        for path in paths:
            if path not in self._loaded:
                self._read(path)

    async def refresh(self, paths: Iterable[str], force: bool = False) -> list[str]:
        """Re-read (off the event loop) each database whose files changed since it was loaded, or every one when
        `force`d, and the ones never loaded. The paths that were (re)loaded."""
        done = []
        for path in dict.fromkeys(paths):
            held = self._loaded.get(path)
            if held is not None and not force:
                try:
                    if await asyncio.to_thread(advisories.fingerprint, path) == held.fingerprint:
                        continue
                except OSError as e:
                    self._failed(path, e)
                    continue
            if await asyncio.to_thread(self._read, path):
                done.append(path)
        return done

    def _read(self, path: str) -> bool:
        try:
            database = advisories.load(path)
        except (OSError, ValueError) as e:
            self._failed(path, e)
            return False
        old = self._loaded.get(path)
        self._loaded[path] = database
        self.loaded_at[path] = time.time()
        self.errors.pop(path, None)
        logger.info("cargo-cache policy: advisory database %s %s: %d advisories (newest %s)%s", path,
                    "re-read" if old else "loaded", database.count, database.newest or "-",
                    f", {len(database.skipped)} files skipped" if database.skipped else "")
        return True

    def _failed(self, path: str, error: Exception) -> None:
        self.errors[path] = f"{type(error).__name__}: {error}"
        kept = " (the copy loaded before stays in use)" if path in self._loaded else ""
        logger.error("cargo-cache policy: advisory database %s cannot be read: %s%s", path, error, kept)
