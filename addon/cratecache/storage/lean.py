"""diskcache for a command that runs once over the cache (stage, export, import, ls): SQLite's memory per connection
kept small, so that what the command holds follows its own work and not the size of the database.

The proxy's connections map up to 64 MiB of the database into memory and keep a page cache of 8,192 pages (32 MiB):
worth it for hits served over hours, and counted in a command's RSS as soon as it reads that much (an export of a
5,000-crate lockfile read 5,000 index files: +170 MB of peak RSS, ~80 MB of it SQLite's). Here each connection of this
process runs without memory-mapped I/O and with a small page cache. The pragmas are set per connection, never through
diskcache's settings, which it writes into the database for every process that opens it later (a proxy would then run
with the command's).
"""

from __future__ import annotations

import diskcache

LEAN_PRAGMAS = ("PRAGMA mmap_size = 0", "PRAGMA cache_size = -4096")  # no mapping; a 4 MiB page cache


class LeanCache(diskcache.Cache):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _lean(self._con)  # diskcache's opening set its stored pragmas on this thread's connection again

    @property
    def _con(self):
        fresh = getattr(self._local, "con", None) is None
        con = diskcache.Cache._con.fget(self)  # a new connection gets diskcache's stored pragmas (through `_con`)
        if fresh:
            _lean(con)
        return con


def _lean(con) -> None:
    for pragma in LEAN_PRAGMAS:
        con.execute(pragma)
