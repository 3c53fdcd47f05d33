"""A damaged cache database: found when the store is opened, set aside, and the cache started afresh.

diskcache keeps every key and meta record in one SQLite file (`cache.db`, with `-wal` and `-shm` beside it)
and the larger values as files named by chance. When that file is truncated or overwritten, SQLite refuses
it (`file is not a database`, `database disk image is malformed`) and every start would fail the same way.
`open_cache` opens it, runs SQLite's `quick_check`, and on damage moves the database and the stored files it
named into `damaged-<UTC time>/` in the cache folder, with a `REASON` file, logs one line naming them, and
opens a new, empty database. The keys lived only in the damaged file, so nothing can be rebuilt from the
stored files: the entries are fetched again on demand (or imported again). A stale `-wal` or `-shm` left by
a crash is SQLite's own business: it replays or ignores it, and the store opens as it was.

Processes sharing the folder (workers, a command) open it one at a time under a lock file, so only the first
one sets the damaged files aside and the others open the new database. Damage found while the proxy runs (the file
overwritten under it) is set aside the same way, by the store's reopening a few seconds later (local.py); a folder
that refuses writes is never taken for damage (`is_damage`: it is opened read-only, readonly.py).
`set_aside(folder)` lists what was set aside (for `stats`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import diskcache

logger = logging.getLogger(__name__)

DATABASE = "cache.db"  # diskcache's file name (diskcache.core.DBNAME)
LOCK_FILE = ".open.lock"
ASIDE_PREFIX = "damaged-"
REASON_FILE = "REASON"
_VALUE_FOLDER = re.compile(r"^[0-9a-f]{2}\Z")  # diskcache's files: <2 hex>/<2 hex>/<random>.val
DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # and their extended codes (SQLITE_CORRUPT_INDEX, ...)


@dataclass(frozen=True)
class SetAside:
    folder: Path
    when: str  # UTC, as in the folder's name: 20261207T170501Z
    reason: str
    files: int
    bytes: int


def is_damage(error: BaseException) -> bool:
    """Whether an error opening or checking the database says its file is damaged (not locked, full or read-only,
    which are passing or the disk's state, and must not throw the cache away)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    name = getattr(error, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(DAMAGE_CODES)
    text = str(error)
    return "file is not a database" in text or "malformed" in text


def open_cache(directory: Path, cache_class: type[diskcache.Cache] = diskcache.Cache, **settings) -> diskcache.Cache:
    """diskcache's Cache (or `cache_class`) on `directory`; a damaged database is set aside first (and logged), never
    raised."""
    directory.mkdir(parents=True, exist_ok=True)
    with _folder_lock(directory):
        try:
            cache = cache_class(str(directory), **settings)
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            problem = str(e)
        else:
            problem = _check(directory / DATABASE)
            if problem is None:
                return cache
            cache.close()
        aside = set_damaged_aside(directory, problem)
        # a warning: mitmdump exits on an error logged during startup, and this must not stop it from serving
        logger.warning("cargo-cache: the cache database %s is damaged (%s): set aside in %s (%s); starting with an "
                     "empty cache, entries are fetched again as they are asked for", directory / DATABASE, problem,
                     aside.folder, _what(aside))
        return cache_class(str(directory), **settings)


def _check(database: Path) -> str | None:
    """SQLite's quick_check of the database (its pages and records, without comparing the indexes to the table: a
    fraction of a second for 100k entries), on a connection of its own; the problem, or None."""
    try:
        connection = sqlite3.connect(database, timeout=60)
        try:
            rows = connection.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise
        return str(e)
    found = rows[0][0] if rows else "ok"
    return None if found == "ok" else f"quick_check: {found}"


def set_damaged_aside(directory: Path, reason: str, now: float | None = None) -> SetAside:
    """Move the database (with its -wal and -shm) and diskcache's value folders into `damaged-<UTC time>/`."""
    when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    folder = directory / f"{ASIDE_PREFIX}{when}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = directory / f"{ASIDE_PREFIX}{when}-{suffix}"
    folder.mkdir()
    for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"):
        if (directory / name).exists():
            os.rename(directory / name, folder / name)
    for child in directory.iterdir():
        if child.is_dir() and _VALUE_FOLDER.match(child.name):
            os.rename(child, folder / child.name)
    (folder / REASON_FILE).write_text(f"{reason}\n", encoding="utf-8")
    return _describe(folder)


def set_aside(directory: Path) -> list[SetAside]:
    """What was set aside in the cache folder and its subfolders' databases (`pending/`), oldest first, for `stats`."""
    if not directory.is_dir():
        return []
    found = [*directory.glob(f"{ASIDE_PREFIX}*"), *directory.glob(f"*/{ASIDE_PREFIX}*")]
    return [_describe(p) for p in sorted(found, key=lambda p: p.name) if p.is_dir()]


def _describe(folder: Path) -> SetAside:
    try:
        reason = (folder / REASON_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        reason = "unknown"
    files = size = 0
    for path in folder.rglob("*"):
        if path.is_file() and path.name != REASON_FILE:
            files += 1
            size += path.stat().st_size
    return SetAside(folder, folder.name[len(ASIDE_PREFIX):], reason, files, size)


def _what(aside: SetAside) -> str:
    names = ", ".join(sorted(p.name for p in aside.folder.iterdir() if p.name.startswith(DATABASE)))
    return f"{names}, {aside.files} files, {aside.bytes} bytes; delete the folder once it is not needed"


class _folder_lock:
    """An exclusive lock on the cache folder's lock file while the database is opened (and maybe set aside)."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE

    def __enter__(self):
        try:
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only folder: nothing can be set aside there anyway
            self.fd = None
            return self
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        return False
