"""What the channel manifests the proxy holds vouch for: each new manifest is parsed once (in a worker thread, a
few at a time: a big one takes seconds and hundreds of MB), and the hashes of the files of its channel and date
(`dist.vouches`) are kept beside it under `dist-hashes/<date>/<manifest path>`; a component's expected hash is the
one those tables agree on (`dist.agreed_hash`). A table the cache folder could not keep (disk full, read-only) is
held in memory instead (the last `UNKEPT_TABLES`), so the components of a manifest fetched meanwhile still verify."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from ..engine import Engine
from ..storage import Entry
from . import dist

PARSES_AT_ONCE = 2  # manifests parsed at the same time (distinct bytes; the same bytes are parsed once)
LISTINGS_KEPT = 4  # parsed manifests kept (their file tables only), by the SHA-256 of their bytes
TABLE_INLINE = 64 << 10  # a stored hash table larger than this is read in a worker thread
TABLES_KEPT = 256  # hash tables read from the store, kept by (key, sha256)
UNKEPT_TABLES = 16  # hash tables the cache folder could not take, held in memory


class Vouched:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._tables: dict[tuple[str, str], dict[str, str]] = {}  # (key, sha256) -> what a stored table vouches for
        self._unkept: dict[str, Entry] = {}  # key -> a table saved while the cache folder refused writes
        self._listings: dict[str, asyncio.Future] = {}  # manifest sha256 -> its parse (off the loop, once per bytes)
        self.parse_listing: Callable[[bytes], dist.Listing] = dist.parse_listing  # runs in a worker thread
        self._parses = asyncio.Semaphore(PARSES_AT_ONCE)

    async def agreed_hash(self, f: dist.DistFile) -> str | None:
        """The hash the tables of `f`'s date agree on (None: none lists it); dist.ManifestConflict if they differ."""
        prefix = f"dist-hashes/{f.date}/"
        store = self.engine.store
        keys = [*await store.keys(prefix), *(k for k in self._unkept if k.startswith(prefix))]
        tables = {key[len(prefix):]: await self._table(key, f.date) for key in dict.fromkeys(keys)}
        return dist.agreed_hash(f.path, tables)

    async def _table(self, key: str, folder: str) -> dict[str, str]:
        entry = self.engine.store.peek(key) or await self.engine.store.get(key) or self._unkept.get(key)
        if entry is None:
            return {}
        table = self._tables.get((key, entry.meta.sha256))
        if table is None:
            if len(self._tables) > TABLES_KEPT:
                self._tables.clear()
            path = key.split("/", 2)[2]
            read = functools.partial(dist.read_vouched, path, folder, entry.body)
            table = read() if len(entry.body) < TABLE_INLINE else await asyncio.to_thread(read)
            self._tables[(key, entry.meta.sha256)] = table
        return table

    async def listing(self, body: bytes, sha256: str) -> dist.Listing:
        """What a manifest lists, parsed in a worker thread (a big manifest takes seconds and hundreds of MB to
        parse), once for concurrent callers with the same bytes. ValueError if it is not a v2 manifest."""
        task = self._listings.pop(sha256, None)
        if task is None:
            task = asyncio.ensure_future(self._parse(body))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._listings[sha256] = task  # the most recent last: a manifest is checked, then saved, then its aliases
        while len(self._listings) > LISTINGS_KEPT:
            del self._listings[next(iter(self._listings))]
        return await asyncio.shield(task)

    async def _parse(self, body: bytes) -> dist.Listing:
        async with self._parses:  # each parse of a big manifest holds a few hundred MB while it runs
            return await asyncio.to_thread(self.parse_listing, body)

    async def save(self, path: str, body: bytes, sha256: str, upstream: str) -> None:
        """What a new manifest vouches for (`dist.vouches`: files of its channel and date), kept with the cache under
        its date so that its components can be verified; nothing of the parsed document is kept."""
        listing = await self.listing(body, sha256)
        record = await asyncio.to_thread(lambda: listing.vouched_by(path).record())  # a big manifest lists 100k files
        key = f"dist-hashes/{listing.date}/{path}"
        entry = await self.engine.save(key, record, upstream)
        self._unkept.pop(key, None)
        if not self.engine.store.writability.writable:  # most likely not kept: held here meanwhile
            self._unkept[key] = entry
            while len(self._unkept) > UNKEPT_TABLES:
                del self._unkept[next(iter(self._unkept))]
