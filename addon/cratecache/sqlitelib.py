"""Which SQLite this process runs: one with the fix for the WAL-reset bug, the same one for every module.

SQLite 3.7.0 to 3.51.2 (but for the backports 3.44.6 and 3.50.7) has a data race between connections that write and
checkpoint one database in WAL mode (https://sqlite.org/wal.html#walresetbug): a checkpoint misses that another
connection reset the log, and a later one copies part of a transaction into the database, corrupting it or losing
commits. The cache database is written by every worker, by the upkeep of each, and by commands run beside the proxy
(`purge`, `stage`, `import`): exactly those connections. Debian 12's libsqlite3, which Python's `sqlite3` links, is
3.40.1; measured here: a 1M-entry cache read back "Rowid out of order" (`integrity_check`, idle) after a `purge` ran
beside a serving proxy.

The `pysqlite3` wheel is the standard library's module built with its own SQLite (3.53.4). `use_bundled` installs it
as `sqlite3` for the whole process before anything imports that (diskcache imports `sqlite3` itself), so that one
library holds the database's POSIX locks: two libraries in one process would release each other's locks. If
`sqlite3` was imported already, the process keeps it (and `problem` says why that is a risk).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)

FIXED = ((3, 44, 6), (3, 50, 7), (3, 51, 3))  # the first fixed release of each line (3.44, 3.50, from 3.51 on)


def use_bundled() -> bool:
    """`pysqlite3` as `sqlite3` from now on, unless `sqlite3` is imported already or the wheel is missing."""
    if "sqlite3" in sys.modules:
        return sys.modules["sqlite3"].__name__ == "pysqlite3"
    try:
        import pysqlite3
        import pysqlite3.dbapi2
    except ImportError:
        return False
    sys.modules["sqlite3"] = pysqlite3
    sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
    return True


def has_wal_reset_bug(version: tuple[int, int, int]) -> bool:
    """Whether SQLite `version` has the WAL-reset data race."""
    if version < (3, 7, 0):
        return False  # no WAL mode at all
    line = version[:2]
    for fixed in FIXED:
        if line == fixed[:2]:
            return version < fixed
    return version < FIXED[-1]


def problem() -> str | None:
    """Why the SQLite this process runs may corrupt a shared cache database, or None."""
    import sqlite3

    version = sqlite3.sqlite_version_info
    if not has_wal_reset_bug(version):
        return None
    return (f"SQLite {sqlite3.sqlite_version} (of the Python module {sqlite3.__name__}) has the WAL-reset bug "
            "(https://sqlite.org/wal.html#walresetbug): with several workers, or a command such as purge run beside "
            "the proxy, the cache database can be corrupted; install the pysqlite3 wheel (requirements.txt), which "
            "bundles a fixed SQLite, or run one worker and no commands while it serves")


use_bundled()
