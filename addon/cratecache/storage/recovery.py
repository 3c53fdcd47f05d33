"""A damaged cache database: found when the store is opened, set aside, and the cache started afresh.

diskcache keeps every key and meta record in one SQLite file (`cache.db`, with `-wal` and `-shm` beside it)
and the larger values as files named by chance. When that file is truncated or overwritten, SQLite refuses
it (`file is not a database`, `database disk image is malformed`) and every start would fail the same way.
`open_cache` opens it, checks it (`check`), and on damage moves the database and the stored files it
named into `damaged-<UTC time>/` in the cache folder, with a `REASON` file, logs one line naming them, and
opens a new, empty database. The keys lived only in the damaged file, so nothing can be rebuilt from the
stored files: the entries are fetched again on demand (or imported again). A stale `-wal` or `-shm` left by
a crash is SQLite's own business: it replays or ignores it, and the store opens as it was.

How much is checked at an opening is bounded: a database up to FULL_CHECK_BYTES (256 MiB,
`CARGO_CACHE_FULL_CHECK_BYTES`) gets SQLite's whole `quick_check` (under a second), a larger one `check(full=False)`:
its header, and reads through both ends of the table and of its key index, which is what a truncated or overwritten
file fails (a million entries is several GB, and its `quick_check` takes 10 s and more, at every start of every
worker and every command). No whole check runs in the background: run while another process writes to the database
(a purge), `quick_check` reported damage that was not there then (measured at 1M entries: "2nd reference to page",
"Page N is never used", then "ok" once the purge ended) — measured with Debian's SQLite 3.40.1, which has the
WAL-reset bug (sqlitelib.py), the likeliest cause; not measured again with the fixed SQLite. Damage elsewhere in a
large file is found by the read that meets it
(SQLite raises it; local.py sets the database aside then).
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
FULL_CHECK_BYTES = int(os.environ.get("CARGO_CACHE_FULL_CHECK_BYTES", 256 * 1024 * 1024))
SAMPLE_ROWS = 64
_SAMPLES = (  # each walks one edge of a b-tree: the table's both ends by rowid, the key index's both ends
    "SELECT count(*) FROM Settings",
    f"SELECT rowid, key, raw, size FROM Cache ORDER BY rowid DESC LIMIT {SAMPLE_ROWS}",
    f"SELECT rowid, key, raw, size FROM Cache ORDER BY rowid ASC LIMIT {SAMPLE_ROWS}",
    f"SELECT key, raw FROM Cache WHERE key > '' ORDER BY key DESC, raw DESC LIMIT {SAMPLE_ROWS}",
    f"SELECT key, raw FROM Cache WHERE key > '' ORDER BY key ASC, raw ASC LIMIT {SAMPLE_ROWS}",
)


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


def open_cache(directory: Path, full_check_bytes: int | None = None,
               cache_class: type[diskcache.Cache] = diskcache.Cache, **settings) -> diskcache.Cache:
    """diskcache's Cache (or `cache_class`) on `directory`; a damaged database is set aside first (and logged), never
    raised. The database is checked whole up to `full_check_bytes` (default FULL_CHECK_BYTES), else in bounded time."""
    directory.mkdir(parents=True, exist_ok=True)
    with _folder_lock(directory):
        try:
            cache = cache_class(str(directory), **settings)
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            problem = str(e)
        else:
            limit = FULL_CHECK_BYTES if full_check_bytes is None else full_check_bytes
            problem = check(directory / DATABASE, full=database_bytes(directory) <= limit)
            if problem is None:
                return cache
            cache.close()
        aside = set_damaged_aside(directory, problem)
        # a warning: mitmdump exits on an error logged during startup, and this must not stop it from serving
        logger.warning("cargo-cache: the cache database %s is damaged (%s): set aside in %s (%s); starting with an "
                     "empty cache, entries are fetched again as they are asked for", directory / DATABASE, problem,
                     aside.folder, _what(aside))
        return cache_class(str(directory), **settings)


def database_bytes(directory: Path) -> int:
    """The database's size with its -wal (0 when there is none)."""
    total = 0
    for name in (DATABASE, f"{DATABASE}-wal"):
        try:
            total += os.stat(directory / name).st_size
        except OSError:
            pass
    return total


def check(database: Path, full: bool = True) -> str | None:
    """The database's problem, or None: SQLite's quick_check of all of it (`full`), or the bounded check (the module
    docstring), on a connection of its own."""
    if not full and (problem := header_problem(database)) is not None:
        return problem
    try:
        connection = sqlite3.connect(database, timeout=60)
        try:
            return check_connection(connection, full)
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise
        return str(e)


def check_connection(connection: sqlite3.Connection, full: bool) -> str | None:
    """`check` on an open connection (a read-only one too); SQLite's damage errors are raised."""
    if not full:
        for sql in _SAMPLES:
            connection.execute(sql).fetchall()
        return None
    rows = connection.execute("PRAGMA quick_check(1)").fetchall()
    found = rows[0][0] if rows else "ok"
    return None if found == "ok" else "quick_check: " + " ".join(str(found).split())  # one line


def header_problem(database: Path) -> str | None:
    """What the first 100 bytes of the file say is wrong with it (pure reading, no SQLite): not an SQLite file. (Its
    page count against the file's size is not a sign: a checkpoint of another process writes page 1 before the pages
    it counts; a truncated file fails the reads at the table's end instead.)"""
    try:
        with open(database, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return None
    if not header:
        return None  # a new database
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return "file is not a database (its header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"file is not a database (page size {page_size} in its header)"
    return None


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
