"""The advisory databases the policy uses, loaded and kept current: read at start (before the proxy serves), then
re-read off the event loop when a checkout changes (a `git pull`) and the change has settled, or when asked
(SIGHUP). A database that cannot be read, or that changed while it was read, keeps the copy already loaded (a
checkout caught half-way through a pull or a clone would drop advisories); one never loaded is `None`, and the
policy fails closed on it. A failure is logged once, not at every look.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from . import advisories
from .advisories import Database

logger = logging.getLogger(__name__)

FULL_LOOK_EVERY = 12  # looks by the folders' times between two looks at every file


class Databases:
    def __init__(self) -> None:
        self._loaded: dict[str, Database] = {}
        self.errors: dict[str, str] = {}  # path -> why its last reading failed
        self.loaded_at: dict[str, float] = {}  # path -> when it was last read
        self._folders: dict[str, tuple[str, int]] = {}  # path -> (its folders' times at the last look, looks since)
        self._changing: dict[str, tuple] = {}  # path -> its files' fingerprint at the last look, if not the loaded one

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
        """Re-read (off the event loop) each database whose files changed since it was loaded and have not changed
        since the look before (a `git pull` or a new clone under way is read once it is done, never half-way), or
        every one when `force`d, and the ones never loaded. The paths that were (re)loaded."""
        done = []
        for path in dict.fromkeys(paths):
            held = self._loaded.get(path)
            if held is not None and not force:
                try:
                    if path not in self._changing and await asyncio.to_thread(self._same_folders, path):
                        continue
                    now = await asyncio.to_thread(advisories.fingerprint, path)
                except OSError as e:
                    self._failed(path, e)
                    continue
                if now == held.fingerprint:
                    self._changing.pop(path, None)
                    self.errors.pop(path, None)
                    continue
                if self._changing.get(path) != now:  # changed since the last look: maybe still being written
                    self._changing[path] = now
                    continue
            if await asyncio.to_thread(self._read, path):
                done.append(path)
        return done

    def _same_folders(self, path: str) -> bool:
        """Nothing changed since the last look, by the folders' times alone (one stat per crate folder); every
        FULL_LOOK_EVERY looks the whole fingerprint is taken anyway (a file rewritten in place)."""
        seen = advisories.folders(path)
        last, looks = self._folders.get(path, ("", 0))
        same = seen == last and looks < FULL_LOOK_EVERY
        self._folders[path] = (seen, looks + 1 if same else 0)
        return same

    def _read(self, path: str) -> bool:
        try:
            database = advisories.load(path)
            after = advisories.fingerprint(path)
        except (OSError, ValueError) as e:
            self._failed(path, e)
            return False
        if after != database.fingerprint and path in self._loaded:  # changed while it was read: read it once settled
            self._changing[path] = after
            logger.info("cargo-cache policy: advisory database %s changed while it was read; read again once it "
                        "settles (the copy loaded before stays in use)", path)
            return False
        old = self._loaded.get(path)
        self._loaded[path] = database
        self._changing.pop(path, None)
        self.loaded_at[path] = time.time()
        self.errors.pop(path, None)
        logger.info("cargo-cache policy: advisory database %s %s: %d advisories (newest %s)%s", path,
                    "re-read" if old else "loaded", database.count, database.newest or "-",
                    f", {len(database.skipped)} files skipped" if database.skipped else "")
        return True

    def _failed(self, path: str, error: Exception) -> None:
        why = f"{type(error).__name__}: {error}"
        if self.errors.get(path) == why:  # said at the last look already
            return
        self.errors[path] = why
        kept = " (the copy loaded before stays in use)" if path in self._loaded else ""
        logger.error("cargo-cache policy: advisory database %s cannot be read: %s%s", path, error, kept)
