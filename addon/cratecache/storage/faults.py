"""When the cache folder cannot be written (disk full, read-only, permission denied): which errors say so, whether
the next answer is written to the cache folder ("keep") or passed through without it, and when to say so.

A failed write never fails a request: the answer is served from where it was spooled and simply not kept. While
the folder is not writable, answers are passed through without trying it, except one every `RETRY_SECONDS`, which
tells when space (or write access) is back; the first write that succeeds makes the cache writable again, with no
restart. The warning is logged once a minute (`Throttle`), not per request; every failure is counted (`on_error`,
the metrics' `cargo_cache_store_errors_total{op}`).

A folder that refuses writes already when the store opens (`refusal`) starts in the same state (`opened_read_only`,
one warning); so does a database found damaged under the running store (`damaged`), whose writes are refused too.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from .recovery import is_damage

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0  # while not writable, one answer this often is written to the cache folder again (a probe)
WARN_SECONDS = 60.0  # one warning a minute while writes keep failing

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


def describe(error: BaseException) -> str | None:
    """What a write's error says about the cache folder ("disk full", "read-only file system", ...), or None if it
    is not a fault of the folder (a programming error, diskcache's busy timeout)."""
    if isinstance(error, OSError):
        if error.errno in _FULL:
            return f"disk full ({error.strerror or 'no space left on device'})"
        if error.errno in _READ_ONLY:
            return "read-only file system"
        if error.errno in _DENIED:
            return f"permission denied ({error.strerror or 'not writable'})"
        # diskcache gives up creating a file's folder silently and then reports the file as missing, which on
        # a writable folder does not happen: the folder cannot be written
        return f"cannot write ({error.strerror or type(error).__name__})"
    if isinstance(error, sqlite3.OperationalError | sqlite3.DatabaseError):
        if is_damage(error):  # the database file changed under the running store (overwritten, truncated)
            return f"damaged database ({error})"
        text = str(error).lower()
        if "full" in text:
            return "disk full (database or disk is full)"
        if "readonly" in text or "read-only" in text:
            return "read-only file system (attempt to write a readonly database)"
        if "i/o" in text or "unable to open" in text:
            return f"cannot write ({error})"
    return None


def refusal(folder: str | os.PathLike) -> OSError | None:
    """The error the cache folder answers a write with (read-only file system, permission denied), or None if it takes
    one: the folder created if missing, a file created in it and deleted again. For the opening of the store: a folder
    that refuses writes is opened read-only (readonly.py), not failed, and not taken for a damaged database."""
    probe = os.path.join(folder, f".probe-{os.getpid()}-{threading.get_ident()}")
    try:
        os.makedirs(folder, exist_ok=True)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except FileExistsError:
        return None
    except OSError as e:
        return e if e.errno in _READ_ONLY | _DENIED | _FULL else None
    return None


def is_full(error: BaseException) -> bool:
    """A full disk (which evicting may cure), as opposed to a read-only or denied folder."""
    return (description := describe(error)) is not None and description.startswith("disk full")


def keep(writable: bool, last_attempt: float | None, now: float, retry_seconds: float = RETRY_SECONDS) -> bool:
    """Write the next answer to the cache folder (True) or pass it through (False): always while writable; while
    not, once every `retry_seconds`, to find out when it is writable again."""
    return writable or last_attempt is None or now - last_attempt >= retry_seconds


class Throttle:
    """At most one `allow()` per `interval` seconds; how many were refused since the last one allowed."""

    def __init__(self, interval: float = WARN_SECONDS):
        self.interval = interval
        self._last: float | None = None
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return False
        self._last = now
        return True

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


class Writability:
    """Whether the cache folder takes writes now, since when not and why; the failures per operation."""

    def __init__(self, where: str, clock: Callable[[], float] = time.time):
        self.where, self.clock = where, clock
        self.writable = True
        self.since: float | None = None  # when it stopped being writable
        self.error = ""
        self.last_attempt: float | None = None
        self.errors: dict[str, int] = {}
        self.throttle = Throttle()  # not reset when writes succeed again: a disk that flaps warns once a minute
        self._recoveries = Throttle()
        self.on_error: Callable[[str], None] | None = None  # (operation) of each failure; e.g. metrics

    def keep(self) -> bool:
        """Whether to write the next answer to the cache folder (see `keep`); a try while not writable is noted."""
        now = self.clock()
        if keep(self.writable, self.last_attempt, now):
            if not self.writable:
                self.last_attempt = now
            return True
        return False

    def failed(self, op: str, error: BaseException, key: str = "") -> bool:
        """Record a failed write: True if it is a fault of the cache folder (then it is counted and warned about,
        once a minute), False if it is some other error, which the caller reports as before."""
        description = describe(error)
        if description is None:
            return False
        if description.startswith("cannot write"):  # SQLite says "disk I/O error" on a folder turned read-only
            description = self._folder_state() or description
        now = self._count(op, description)
        if self.throttle.allow(now):
            more = self.throttle.take_suppressed()
            logger.warning("cargo-cache: cache write failed%s (%s: %s) in %s: the cache folder %s cannot be written "
                           "(%s): answers are passed through without being kept here, hits are served; trying again "
                           "every %.0f s%s", f" for {key}" if key else "", type(error).__name__, error, op,
                           self.where, description, RETRY_SECONDS,
                           f" ({more} more failed write(s) in the last minute)" if more else "")
        return True

    def opened_read_only(self, refused: OSError, how: str = "") -> None:
        """The store opened the cache folder read-only because it refuses writes (`refusal`): not writable from the
        start, said in one warning (which is this minute's: the failed writes that follow are counted, not warned
        about again within it)."""
        now = self.clock()
        self.writable, self.since, self.last_attempt = False, now, now
        self.error = describe(refused) or str(refused)
        self.throttle.allow(now)
        logger.warning("cargo-cache: the cache folder %s cannot be written (%s): opened read-only%s: serving hits "
                       "from it, passing misses through, not caching; checking every %.0f s whether it can be written "
                       "again", self.where, self.error, f" ({how})" if how else "", RETRY_SECONDS)

    def damaged(self, op: str, error: BaseException) -> None:
        """The cache database turned out damaged under the running store (`op` found it): counted, not writable, said
        once a minute; the store reads nothing more from it, and its upkeep sets it aside (local.py)."""
        now = self._count(op, describe(error) or str(error))
        if self.throttle.allow(now):
            logger.warning("cargo-cache: the cache database in %s is damaged (%s: %s, found by %s): answers are passed "
                           "through without being kept, nothing more is read from it; it is set aside and the cache "
                           "started afresh within %.0f s", self.where, type(error).__name__, error, op, RETRY_SECONDS)

    def _count(self, op: str, description: str) -> float:
        """A failed write (or a damaged database) in `op`: counted, told to the metrics, the folder not writable from
        now if it was; the time."""
        now = self.clock()
        self.errors[op] = self.errors.get(op, 0) + 1
        if self.on_error is not None:
            self.on_error(op)
        if self.writable:
            self.writable, self.since = False, now
        self.error, self.last_attempt = description, now
        return now

    def _folder_state(self) -> str | None:
        """What the file system says of itself, when the error does not."""
        try:
            stat = os.statvfs(self.where)
        except OSError:
            return None
        if stat.f_flag & os.ST_RDONLY:
            return "read-only file system"
        if stat.f_bavail == 0:
            return "disk full"
        probe = os.path.join(self.where, f".probe-{os.getpid()}")  # a file system the kernel turned read-only after
        try:  # an error (ext4's emergency read-only) does not say so in statvfs: creating a file does
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.unlink(probe)
        except FileExistsError:
            return None
        except OSError as e:
            found = describe(e)
            return found if found and not found.startswith("cannot write") else None
        return None

    def succeeded(self) -> None:
        """A write to the cache folder succeeded: it is writable (again)."""
        if self.writable:
            return
        if self._recoveries.allow(self.clock()):
            logger.warning("cargo-cache: the cache folder %s is writable again after %.0f s (%s): caching resumes",
                           self.where, self.clock() - (self.since or self.clock()), self.error)
        self.writable, self.since, self.error, self.last_attempt = True, None, "", None

    def snapshot(self) -> dict[str, Any]:
        """For status.json and /metrics."""
        return {"writable": self.writable, "since": self.since, "error": self.error, "errors": dict(self.errors)}
