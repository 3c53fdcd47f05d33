"""A cache folder that cannot be written when the store opens (a read-only mount, a folder the proxy's user may not
write): its database read without writing, behind the calls the local store makes on diskcache's `Cache`.

diskcache cannot open its database there: it creates its tables and sets WAL mode at every opening, and SQLite in
WAL mode creates the `-shm` file beside the database even to read it (so `?mode=ro` fails as well). SQLite still
reads it as an immutable file (`file:...?immutable=1`: no locks, no `-shm`, the `-wal` not read, so what a crash left
only in the `-wal` is not seen: a miss). `ReadOnlyCache` reads the Cache table over such a connection (plain
`?mode=ro` first, which does see a `-wal`, where SQLite allows it) and decodes values and opens value files with
diskcache's own `Disk`, so values read exactly as diskcache wrote them. Every write raises the error the folder
answered (EROFS, EACCES), which the callers handle as when the folder turns read-only while running (faults.py):
hits are served, misses passed through and not kept. The local store (local.py) opens this when the folder refuses
writes (`faults.refusal`), and diskcache again once a probe finds the folder writable.

A database that is missing (a folder never used) or that SQLite cannot read (damaged) reads as an empty cache:
nothing can be set aside on a folder that cannot be written (recovery.py does that at the next opening that can).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache

from . import recovery
from .faults import Throttle
from .recovery import DATABASE

logger = logging.getLogger(__name__)

_ENOVAL = object()
# diskcache's schema (diskcache.core.Cache.__init__), for a folder with no readable database: an empty cache
_EMPTY_SCHEMA = """
CREATE TABLE Settings (key TEXT NOT NULL UNIQUE, value);
CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER, store_time REAL, expire_time REAL,
    access_time REAL, access_count INTEGER DEFAULT 0, tag BLOB, size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0,
    filename TEXT, value BLOB);
"""
_LIVE = "(expire_time IS NULL OR expire_time > ?)"
_read_warnings = Throttle()


class ReadOnlyCache:
    """The reading half of diskcache's `Cache` on a folder that refuses writes; the writing half raises `refused`."""

    def __init__(self, directory: Path, refused: OSError | sqlite3.DatabaseError,
                 disk: type[diskcache.Disk] = diskcache.Disk, read: bool = True):
        """`read=False`: empty, whatever the folder holds (its database was found damaged)."""
        self.directory, self.refused = directory, refused
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int, int] | None = None
        self._changed = False
        self._uri, problem = _readable(directory / DATABASE) if read else (None, None)
        if self._uri is not None:
            problem = self._problem()
        if problem is not None:
            logger.warning("cargo-cache: the cache database %s cannot be read (%s) and cannot be set aside in a "
                           "folder that refuses writes: nothing is served from it until the folder can be written",
                           directory / DATABASE, problem)
            self._uri = None
        # an immutable reading holds only while the file does not change (another process that can write the folder
        # now, e.g. a worker that reopened it first): SQLite would mix pages it cached with new ones, so a changed file
        # reads as an empty cache until this process reopens it for writing too
        immutable = self._uri is not None and self._uri.endswith("immutable=1")
        self._signature = _signature(directory / DATABASE) if immutable else None
        settings = {**diskcache.DEFAULT_SETTINGS, **dict(self._rows("SELECT key, value FROM Settings"))}
        self.size_limit = settings["size_limit"]
        self.eviction_policy = settings["eviction_policy"]
        self._disk = disk(str(directory), **{k[5:]: v for k, v in settings.items() if k.startswith("disk_")})

    @property
    def disk(self) -> diskcache.Disk:
        """diskcache's `Cache.disk`: what decodes a row's value (keyscan.py reads rows with it)."""
        return self._disk

    @property
    def opened(self) -> str:
        """How the database was opened (for the log): its URI, or why none was."""
        return self._uri or "no readable database: empty"

    # -- reads ------------------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, read: bool = False) -> Any:
        db_key, raw = self._disk.put(key)
        rows = self._rows(f"SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ? AND {_LIVE}",
                          (db_key, raw, time.time()))
        if not rows:
            return default
        ((mode, filename, value),) = rows
        try:
            return self._disk.fetch(mode, filename, value, read)
        except OSError:  # its file is gone (evicted after what this database shows): a miss, as in diskcache
            return default

    def __contains__(self, key: Any) -> bool:
        db_key, raw = self._disk.put(key)
        return bool(self._rows(f"SELECT rowid FROM Cache WHERE key = ? AND raw = ? AND {_LIVE}",
                               (db_key, raw, time.time())))

    def iterkeys(self) -> Iterator[Any]:
        for key, raw in self._rows("SELECT key, raw FROM Cache ORDER BY key ASC, raw ASC"):
            yield self._disk.get(key, raw)

    def volume(self) -> int:
        ((page_count,),) = self._rows("PRAGMA page_count") or [(0,)]
        ((page_size,),) = self._rows("PRAGMA page_size") or [(0,)]
        return page_count * page_size + self.reset("size")

    def _sql(self, statement: str, args: tuple = ()) -> sqlite3.Cursor:
        """diskcache's raw query (the key scans of keyscan.py)."""
        return self._connection().execute(statement, args)

    def reset(self, key: str, value: Any = _ENOVAL, update: bool = True) -> Any:
        """A setting: read from the database; set for this process only (`update=False`); never written."""
        if value is _ENOVAL:
            rows = self._rows("SELECT value FROM Settings WHERE key = ?", (key,))
            return rows[0][0] if rows else diskcache.DEFAULT_SETTINGS.get(key, 0)
        if update:
            raise self._refusal()
        setattr(self, key, value)
        return value

    # -- writes: refused, as the folder refused them --------------------------------------------

    @contextlib.contextmanager
    def transact(self, retry: bool = False) -> Iterator[None]:
        """Reads inside it just read; a write inside it raises (nothing is begun, so nothing to roll back)."""
        yield

    def set(self, *args: Any, **kwargs: Any) -> bool:
        raise self._refusal()

    add = incr = delete = clear = touch = pop = set

    def cull(self, retry: bool = False) -> int:
        return 0  # nothing can be evicted, and nothing is added

    def expire(self, now: float | None = None, retry: bool = False) -> int:
        return 0

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    # -- the connection ---------------------------------------------------------------------------

    def _refusal(self) -> OSError | sqlite3.DatabaseError:
        if isinstance(self.refused, OSError):
            return OSError(self.refused.errno, self.refused.strerror or str(self.refused), str(self.directory))
        return type(self.refused)(*self.refused.args)

    def _connection(self) -> sqlite3.Connection:
        if self._signature is not None and _signature(self.directory / DATABASE) != self._signature:
            if not self._changed:
                self._changed = True
                logger.warning("cargo-cache: the cache database %s changed while it was read as an immutable file "
                               "(another process writes it now): misses until this process reopens it for writing",
                               self.directory / DATABASE)
            return self._empty()
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self._uri is None:
                return self._empty()
            connection = sqlite3.connect(self._uri, uri=True, check_same_thread=False, isolation_level=None)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _empty(self) -> sqlite3.Connection:
        """An empty cache in memory (diskcache's tables, no rows), this thread's."""
        connection = getattr(self._local, "empty", None)
        if connection is None:
            connection = self._local.empty = sqlite3.connect(":memory:", check_same_thread=False)
            connection.executescript(_EMPTY_SCHEMA)
            with self._lock:
                self._connections.append(connection)
        return connection

    def _rows(self, statement: str, args: tuple = ()) -> list[tuple]:
        """The rows of a read; none if SQLite cannot read the database now (an immutable file changed under it:
        another process reopened it for writing; damage): a miss, and the next read reconnects."""
        try:
            return self._connection().execute(statement, args).fetchall()
        except sqlite3.DatabaseError as e:
            self._drop()
            if _read_warnings.allow(time.monotonic()):
                logger.warning("cargo-cache: reading the read-only cache database %s failed (%s): a miss",
                               self.directory / DATABASE, e)
            return []

    def _drop(self) -> None:
        """Close this thread's connection; the next read opens another."""
        connection, self._local.connection = getattr(self._local, "connection", None), None
        if connection is not None:
            with self._lock, contextlib.suppress(ValueError):
                self._connections.remove(connection)
            connection.close()

    def _problem(self) -> str | None:
        """The database's check as opened read-only (bounded: recovery.py; whole up to recovery.FULL_CHECK_BYTES); the
        problem, or None."""
        full = recovery.database_bytes(self.directory) <= recovery.FULL_CHECK_BYTES
        try:
            return (None if full else recovery.header_problem(self.directory / DATABASE)) or \
                recovery.check_connection(self._connection(), full)
        except sqlite3.DatabaseError as e:
            self._drop()
            return str(e)


def _signature(database: Path) -> tuple[int, int, int, int] | None:
    try:
        found = os.stat(database)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def _readable(database: Path) -> tuple[str | None, str | None]:
    """The URI SQLite reads `database` with, without writing anything beside it: read-only where SQLite allows that
    (it reads a `-wal` then), else as an immutable file. (None, None) if there is no database; (None, why) if SQLite
    cannot read it."""
    if not database.exists():
        return None, None
    path = urllib.parse.quote(str(database.absolute()))
    problem = None
    for uri in (f"file:{path}?mode=ro", f"file:{path}?immutable=1"):
        try:
            connection = sqlite3.connect(uri, uri=True)
            try:
                connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
            finally:
                connection.close()
        except sqlite3.DatabaseError as e:
            problem = str(e)
            continue
        return uri, None
    return None, problem
