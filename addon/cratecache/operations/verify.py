"""`verify`: every cached entry re-hashed, and what is wrong with each one found.

What is wrong with an entry is decided by pure functions over plain data: its bytes against the digest and size
stored with it (`digest_problem`), a crate's recorded SHA-256 against the `cksum` of its version's line in the
cached index file (`crate_problem`), a toolchain component's against the hash the held manifests of its date
vouch for (`component_problem`, over the `dist-hashes/` tables the proxy keeps).

The walk reads the entries through their store, on its own connection, so it may run while the proxy serves:
with the disk backend the cache folder; with the s3 backend the bucket's objects and this host's local tier, each
on its own (a bad local copy is dropped from the tier only). Bytes are streamed in pieces, never held whole, except
the index files and hash tables a crate or component is compared with. A problem is confirmed before it is
reported: an entry replaced or evicted by the proxy meanwhile is not bad. `--repair` evicts each bad entry through
the store's delete (and the bad blob with it), so the next request fetches it again.

Memory stays flat whatever the cache holds (issue 33: a million entries): the listing is read a page at a time, each
page checked before the next is read; the index files and hash tables compared with are looked up through the store
when needed, and only the last few are kept (entries come in key order, so a crate's index file, a component's
tables, are used by neighbours).

On the local disk the work per entry is small (a few kilobytes hashed, an index line compared), less than a hand-off
to a thread costs; so the blobs a page names, and the index files its crates are compared with, are read and hashed
on one thread in one go (`_Source.read_page`), and the page's entries are then checked on the event loop with what
was read. Only a suspect entry goes back to the store, one at a time, to be checked again as it is now.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from ..protocols import dist, sparse
from ..storage import Meta, Storage
from ..storage.local import LocalStore

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # a stored file is hashed in pieces this size
BODY_LIMIT = 256 * 1024 * 1024  # an index file or hash table larger than this is not read to compare with
PAGE = 1000  # entries listed, then checked, at a time
INDEXES_KEPT = 64  # index files kept while their crates are checked (entries come in key order)
TABLES_KEPT = 8  # dates whose manifests' hash tables are kept while their components are checked
DIGESTS_KEPT = 4096  # blobs' digests kept, so that a blob several keys name (nearby) is hashed once
BUCKET_READS = 8  # bucket objects hashed at once (each streams in pieces of bucket.BLOB_PART)
PAGE_BODIES = 16 * 1024 * 1024  # index files read with a page, in bytes at most; the rest are read when needed


@dataclass(frozen=True)
class Digest:
    """What the stored bytes hash to, as read now."""

    sha256: str
    size: int


EVICTED = Digest("", -1)  # the bytes were evicted (size limit) before the meta naming them: a miss, not damage


@dataclass(frozen=True)
class Bad:
    key: str
    where: str  # "disk", "bucket" or "local tier"
    problem: str
    bytes_bad: bool  # the stored bytes themselves (their blob goes too), not only what the entry says they are

    @property
    def kind(self) -> str:
        return self.key.split("/", 1)[0]


@dataclass
class Report:
    checked: int = 0
    bytes: int = 0
    bad: list[Bad] = field(default_factory=list)
    evicted: int = 0  # bad entries evicted by --repair
    without_bytes: int = 0  # entries whose bytes the size limit evicted already (the proxy fetches them again)
    seconds: float = 0.0  # wall time of the walks (not of --repair's evictions)

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for bad in self.bad:
            counts[bad.kind] = counts.get(bad.kind, 0) + 1
        return dict(sorted(counts.items()))


# -- what is wrong (pure) ---------------------------------------------------------------------


def digest_problem(meta: Meta, found: Digest | None) -> str | None:
    """The stored bytes against the digest and size recorded when they were stored."""
    if found is None:
        return "its stored bytes are missing"
    if found.size != meta.size:
        return f"{found.size} bytes stored, {meta.size} recorded"
    if found.sha256 != meta.sha256:
        return f"its bytes changed on the storage: SHA-256 {found.sha256[:16]}…, recorded {meta.sha256[:16]}…"
    return None


def crate_problem(key: str, meta: Meta, index_body: bytes | None) -> str | None:
    """A crate (`crate/<registry>/<name>/<version>`) against its version's line in the cached index file; nothing
    to say when the index file is not cached or does not list the version."""
    parts = key.split("/")
    if len(parts) != 4 or index_body is None:
        return None
    listed = sparse.find_version(index_body, parts[2], parts[3])
    if listed is None or listed.cksum == meta.sha256:
        return None
    return f"its SHA-256 {meta.sha256[:16]}… differs from its index line's cksum {listed.cksum[:16]}…"


def component_problem(key: str, meta: Meta, tables: dict[str, dict[str, str]]) -> str | None:
    """A component (`component/dist/<date>/<file>`) against the hash its date's manifests vouch for (manifest path ->
    {file: hash}, as `dist.read_vouched` reads the stored tables); nothing to say when none lists it."""
    try:
        expected = dist.agreed_hash(key.split("/", 1)[1], tables)
    except dist.ManifestConflict as e:
        return str(e)
    if expected is None or expected == meta.sha256:
        return None
    return f"its SHA-256 {meta.sha256[:16]}… differs from the hash its manifest gives, {expected[:16]}…"


def summary(report: Report, repair: bool) -> list[str]:
    """The lines printed at the end: one per bad entry, then the totals."""
    lines = [f"BAD {bad.key} ({bad.where}): {bad.problem}" for bad in report.bad]
    kinds = ", ".join(f"{kind} {n}" for kind, n in report.by_kind().items())
    seconds = max(report.seconds, 0.001)
    total = (f"checked {report.checked} entries ({report.bytes} bytes) in {report.seconds:.2f} s "
             f"({report.checked / seconds:.0f} entries/s, {report.bytes / seconds / 1e6:.1f} MB/s): "
             f"{len(report.bad)} bad")
    total += f" ({kinds})" if kinds else ""
    if report.without_bytes:
        total += f", {report.without_bytes} whose bytes were evicted (a miss, fetched again when asked for)"
    if repair and report.bad:
        total += f"; {report.evicted} evicted, fetched again when next asked for"
    elif report.bad:
        total += "; `verify --repair` evicts them"
    return lines + [total]


def good_body(meta: Meta | None, body: bytes | None) -> bytes | None:
    """A small entry's bytes if they match their stored digest (bad ones are reported as such, not compared with)."""
    if meta is None or not isinstance(body, bytes) or len(body) != meta.size:
        return None
    return body if hashlib.sha256(body).hexdigest() == meta.sha256 else None


def index_key(crate_key: str) -> str | None:
    """The index file a crate (`crate/<registry>/<name>/<version>`) is compared with."""
    parts = crate_key.split("/")
    return f"index/{parts[1]}/{parts[2]}" if len(parts) == 4 and parts[0] == "crate" else None


# -- the walk (I/O) ---------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal; otherwise a plain count now and then. The total is counted before the walk
    (None where it cannot be cheaply: a bucket is only known by listing it all); the proxy may add or evict entries
    meanwhile, so it is what is shown, never what ends the walk (`finish` does)."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every, self._said, self._drawn = every, time.monotonic(), 0.0
        self.done = self.bytes = 0
        self.total: int | None = 0
        self._ended = False

    def start(self, total: int | None, where: str) -> None:
        self.total, self.done, self.bytes, self._ended = total, 0, 0, False
        self.where = where
        if not self.tty:
            self._line(f"verifying {total} entries ({where})" if total is not None else f"verifying every entry ({where})")

    def step(self, key: str, size: int) -> None:
        self.done += 1
        self.bytes += size
        if self.total is not None and self.done > self.total:
            self.total = None  # more than were counted (the proxy stored some meanwhile): no bar, a count
        last = self.done == self.total
        self._ended = False  # whether what is shown is complete and current
        if self.tty and (last or time.monotonic() - self._drawn >= 0.1):
            self._draw(key, last)
            self._ended = last
        elif not self.tty and (last or time.monotonic() - self._said >= self.every):
            self._line(self._count())
            self._ended = True

    def finish(self) -> None:
        """The last line, unless the last step showed it already (the walk may end short of or past the total)."""
        if self._ended:
            return
        self._ended = True
        if self.tty:
            self._draw("", True)
        else:
            self._line(self._count())

    def _draw(self, key: str, last: bool) -> None:
        self._drawn = time.monotonic()
        if self.total is not None:
            width = 30
            filled = min(width, int(width * self.done / max(self.total, 1)))
            shown = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
        else:
            shown = f"{self.done} entries"
        self.stream.write(f"\r{shown} {self.where} {self.bytes >> 20} MiB  {key[-40:]:<40}")
        if last:
            self.stream.write("\n")
        self.stream.flush()

    def _count(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"verified {self.done}{of} entries ({self.where}), {self.bytes} bytes"

    def _line(self, text: str) -> None:
        self._said = time.monotonic()
        self.stream.write(text + "\n")
        self.stream.flush()


class _Source:
    """One place entries are kept: their metas, a page at a time or by key, their bytes hashed, a small body read,
    an entry evicted."""

    where: str
    reads: int = 1

    async def count(self) -> int | None: ...
    def pages(self) -> AsyncIterator[list[tuple[str, Meta]]]: ...
    async def listed(self, prefix: str) -> list[tuple[str, Meta]]: ...
    async def meta(self, key: str) -> Meta | None: ...
    async def digest(self, sha256: str) -> Digest | None: ...
    async def body(self, sha256: str) -> bytes | None: ...
    async def evict(self, bad: Bad, meta: Meta) -> None: ...

    async def read_page(self, blobs: set[str], indexes: set[str]
                        ) -> tuple[dict[str, Digest | None], dict[str, bytes | None]]:
        """What a page's checks need, read in one go where that is cheaper than entry by entry: the digests of
        `blobs` (by SHA-256) and the good bodies of the index files `indexes` (by key, None if not cached or not
        good). What is left out is read when an entry needs it."""
        return {}, {}


class _Local(_Source):
    """The cache folder (the disk backend), or the s3 backend's local tier. Metas are read as a listing reads them
    (`entry_page`), on a thread: with least-recently-used eviction a `get` is also a write of the entry's recency,
    and checking an entry is not a use of it."""

    def __init__(self, local: LocalStore, where: str, delete: Callable[[str], Awaitable[bool]]):
        self.local, self.where, self._delete = local, where, delete

    async def count(self) -> int | None:
        return await asyncio.to_thread(self.local.count, "")

    async def pages(self) -> AsyncIterator[list[tuple[str, Meta]]]:
        after: str | None = None
        while True:
            page, after = await asyncio.to_thread(self.local.entry_page, "", after, PAGE)
            if page:
                yield page
            if after is None:
                return

    async def listed(self, prefix: str) -> list[tuple[str, Meta]]:
        return await asyncio.to_thread(lambda: list(self.local.entries(prefix)))

    async def meta(self, key: str) -> Meta | None:
        return await asyncio.to_thread(self.local.meta, key)

    async def digest(self, sha256: str) -> Digest | None:
        return await asyncio.to_thread(self._hash, sha256)

    async def read_page(self, blobs: set[str], indexes: set[str]
                        ) -> tuple[dict[str, Digest | None], dict[str, bytes | None]]:
        """On one thread: each blob hashed, then index files read until `PAGE_BODIES` bytes are held (each hand-off
        to a thread costs more than a small entry's check, a page of them far less)."""
        return await asyncio.to_thread(self._read_page, blobs, indexes)

    def _read_page(self, blobs: set[str], indexes: set[str]
                   ) -> tuple[dict[str, Digest | None], dict[str, bytes | None]]:
        digests = {sha256: self._hash(sha256) for sha256 in blobs}
        bodies: dict[str, bytes | None] = {}
        held = 0
        for key in sorted(indexes):
            meta = self.local.meta(key)
            if meta is not None and meta.size > BODY_LIMIT:
                bodies[key] = None
                continue
            if meta is not None and held + meta.size > PAGE_BODIES:
                continue  # read when its crates are checked, once these are let go
            bodies[key] = good_body(meta, self._read(meta.sha256) if meta is not None else None)
            held += len(bodies[key] or b"")
        return digests, bodies

    def _hash(self, sha256: str) -> Digest | None:
        stored = self.local.read_blob(sha256)
        if stored is None:  # a row whose file is gone is damage; no row, an eviction
            return None if self.local.has_blob(sha256) else EVICTED
        if isinstance(stored, bytes):
            return Digest(hashlib.sha256(stored).hexdigest(), len(stored))
        with stored:
            h, size = hashlib.sha256(), 0
            while piece := stored.read(CHUNK):
                h.update(piece)
                size += len(piece)
        return Digest(h.hexdigest(), size)

    async def body(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self._read, sha256)

    def _read(self, sha256: str) -> bytes | None:
        stored = self.local.read_blob(sha256)
        if stored is None or isinstance(stored, bytes):
            return stored
        with stored:
            return stored.read(BODY_LIMIT + 1)

    async def evict(self, bad: Bad, meta: Meta) -> None:
        await self._delete(bad.key)
        if bad.bytes_bad:
            await asyncio.to_thread(self.local.delete_blob, meta.sha256)


class _Bucket(_Source):
    """The s3 backend's bucket: metas and blobs as objects, blobs streamed. How many entries it holds is not known
    without listing them all, so the walk does not count them first."""

    where = "bucket"
    reads = BUCKET_READS

    def __init__(self, store):
        self.store = store

    async def count(self) -> int | None:
        return None

    def pages(self) -> AsyncIterator[list[tuple[str, Meta]]]:
        return self.store.entry_pages(size=PAGE)

    async def listed(self, prefix: str) -> list[tuple[str, Meta]]:
        return [entry async for page in self.store.entry_pages(prefix, PAGE) for entry in page]

    async def meta(self, key: str) -> Meta | None:
        return await self.store.remote.meta(key)

    async def digest(self, sha256: str) -> Digest | None:
        sink = _HashingSink()
        if not await self.store.bucket.get_into(f"blob/{sha256}", sink):
            return None
        return Digest(sink.hash.hexdigest(), sink.size)

    async def body(self, sha256: str) -> bytes | None:
        got = await self.store.bucket.get(f"blob/{sha256}")
        return got[0] if got is not None else None

    async def evict(self, bad: Bad, meta: Meta) -> None:
        await self.store.delete(bad.key)  # the local tier's copy too, and a purge record for the other gateways
        if bad.bytes_bad:
            await self.store.bucket.delete(f"blob/{meta.sha256}")


class _HashingSink:
    def __init__(self):
        self.hash, self.size = hashlib.sha256(), 0

    def write(self, piece: bytes) -> None:
        self.hash.update(piece)
        self.size += len(piece)


def sources(store: Storage) -> list[_Source]:
    """Where `store` keeps entries, each verified on its own."""
    local = getattr(store, "local", None)
    if store.backend == "s3":
        return [_Bucket(store), _Local(local, "local tier", store.tier.delete)]
    return [_Local(local, "disk", store.delete)]


async def verify(store: Storage, progress: Progress | None = None, repair: bool = False) -> Report:
    report = Report()
    for source in sources(store):
        await _verify_source(source, report, progress or Progress(), repair)
    return report


async def _verify_source(source: _Source, report: Report, progress: Progress, repair: bool) -> None:
    progress.start(await source.count(), source.where)
    checker = _Checker(source)
    limit = asyncio.Semaphore(source.reads)
    found: list[tuple[Bad, Meta]] = []

    async def one(key: str, meta: Meta) -> None:
        async with limit:
            checked = await checker.check(key, meta)
            if checked is not None and checked[0]:  # checked again, as the store is now: the proxy may have
                checked = await checker.check(key, meta, again=True)  # replaced or evicted it meanwhile
            if checked is None:
                report.without_bytes += 1
            else:
                problems, bytes_bad = checked
                if problems and await _still(source, key, meta):
                    found.append((Bad(key, source.where, "; ".join(problems), bytes_bad), meta))
                report.checked += 1
                report.bytes += meta.size
            progress.step(key, meta.size)

    started = time.monotonic()
    async for page in source.pages():  # each page checked before the next is read: memory holds one
        await checker.read_page(page)
        if source.reads == 1:  # one at a time anyway: no task each
            for key, meta in page:
                await one(key, meta)
        else:
            await asyncio.gather(*(one(k, m) for k, m in page))
    checker.read_page_done()
    report.seconds += time.monotonic() - started
    progress.finish()
    found.sort(key=lambda f: f[0].key)
    report.bad.extend(bad for bad, _ in found)
    if repair:
        for bad, meta in found:
            await source.evict(bad, meta)
            report.evicted += 1
            logger.info("cargo-cache: verify evicted %s (%s): %s", bad.key, bad.where, bad.problem)


async def _still(source: _Source, key: str, meta: Meta) -> bool:
    """Whether the entry is still the one checked."""
    now = await source.meta(key)
    return now is not None and now.sha256 == meta.sha256


class _Kept(dict):
    """A dict of at most `size` items, the first put in dropped first: what the walk keeps beside the page it checks
    stays small whatever the cache holds."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key, value) -> None:
        self.pop(key, None)
        super().__setitem__(key, value)
        while len(self) > self.size:
            del self[next(iter(self))]


class _Checker:
    """The checks of one source's entries, with the index files and hash tables they are compared with (looked up
    through the source, the last few kept)."""

    def __init__(self, source: _Source):
        self.source = source
        self._digests: dict[str, Digest | None] = _Kept(DIGESTS_KEPT)  # blobs named by several keys are hashed once
        self._indexes: dict[str, bytes | None] = _Kept(INDEXES_KEPT)
        self._tables: dict[str, dict[str, dict[str, str]]] = _Kept(TABLES_KEPT)
        self._page_digests: dict[str, Digest | None] = {}  # read with the current page (`read_page`)
        self._page_indexes: dict[str, bytes | None] = {}

    async def read_page(self, page: list[tuple[str, Meta]]) -> None:
        """Read what the page's entries are checked with, in one go where the source can (the last page's let go):
        the blobs not hashed yet, the index files of its crates not kept yet."""
        self.read_page_done()
        blobs = {meta.sha256 for _, meta in page if meta.sha256 not in self._digests}
        indexes = {index for key, _ in page if (index := index_key(key)) is not None and index not in self._indexes}
        self._page_digests, self._page_indexes = await self.source.read_page(blobs, indexes)
        for sha256, digest in self._page_digests.items():  # the last few kept for the next pages' neighbours
            self._digests[sha256] = digest

    def read_page_done(self) -> None:
        self._page_digests, self._page_indexes = {}, {}

    async def check(self, key: str, meta: Meta, again: bool = False) -> tuple[list[str], bool] | None:
        """The problems of one entry, and whether its bytes themselves are bad (`again`: hashed again); None if its
        bytes were evicted (a miss, nothing to check)."""
        if again or (meta.sha256 not in self._page_digests and meta.sha256 not in self._digests):
            digest = self._digests[meta.sha256] = await self.source.digest(meta.sha256)
            if meta.sha256 in self._page_digests:  # the page's other keys naming it see the blob as it is now
                self._page_digests[meta.sha256] = digest
        else:
            digest = self._page_digests.get(meta.sha256, self._digests.get(meta.sha256))
        if digest is EVICTED:
            return None
        problems = []
        if problem := digest_problem(meta, digest):
            problems.append(problem)
        bytes_bad = bool(problems)
        if key.startswith("crate/") and (problem := crate_problem(key, meta, await self._index(key))):
            problems.append(problem)
        if key.startswith("component/") and (problem := component_problem(key, meta, await self._date_tables(key))):
            problems.append(problem)
        return problems, bytes_bad

    async def _index(self, crate_key: str) -> bytes | None:
        key = index_key(crate_key)
        if key is None:
            return None
        if key in self._indexes:
            return self._indexes[key]
        if key in self._page_indexes:
            body = self._page_indexes[key]
        else:
            body = await self._good_body(key, await self.source.meta(key))
        self._indexes[key] = body
        return body

    async def _date_tables(self, component_key: str) -> dict[str, dict[str, str]]:
        parts = component_key.split("/")
        date = parts[2] if len(parts) == 4 and parts[1] == "dist" else None
        if date is None:
            return {}
        if date in self._tables:
            return self._tables[date]
        prefix = f"dist-hashes/{date}/"
        tables = {}
        for key, meta in await self.source.listed(prefix):
            body = await self._good_body(key, meta)
            if body is not None:
                tables[key[len(prefix):]] = dist.read_vouched(key[len(prefix):], date, body)
        self._tables[date] = tables
        return tables

    async def _good_body(self, key: str, meta: Meta | None) -> bytes | None:
        if meta is None or meta.size > BODY_LIMIT:
            return None
        return good_body(meta, await self.source.body(meta.sha256))
