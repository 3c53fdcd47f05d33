"""The engine: cache -> lease -> upstreams in priority order (with back-off) -> verify -> store, for any protocol.

A protocol module (`protocols/`) describes each entry as an `Item` (key, source, ttl, immutable) and says how it is
fetched, in one of three ways: `conditional` (a moving file: its path, headers and a check of the body; revalidated
with the held copy's validators), `fetch_verified` (a download: its URL on each upstream and the digest it must
have, `Expected`, checked as the bytes stream to a spool), or its own `attempt` per upstream through
`revalidating_walk`/`walk` (what neither fits). The engine reads the cache, decides freshness, coalesces concurrent
misses (`flights.py`), walks the upstreams, stores what is verified, records revalidations, and serves the stale
copy when every upstream fails. It knows no protocol.

When the cache folder cannot be written (disk full, read-only: `storage/faults.py`), an answer is still served,
verified as usual, and not kept: a small one from memory, a large one from its spooled file (in the temporary
folder, or the cache folder's `partial/`), which is deleted once served (`PASSED_FILE_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import httpx

from ..config import Settings, Source
from ..storage import Entry, Meta, Spooled, Storage, make_entry
from ..upstreams.client import Attempt, UpstreamClient, UpstreamError, status_outcome, summary, walk
from ..upstreams.health import Health
from . import freshness
from .flights import Fetch, Flights
from .item import Expected, Item
from .outcomes import NotFound, NotStaged, Served, Unavailable
from .writes import best_effort

logger = logging.getLogger(__name__)

PASSED_FILE_SECONDS = 120.0  # a large answer the cache could not keep: its file is deleted this long after (the
# clients it answers open it at once: see boundary/blobs.py)

# attempt(client) -> (what happened, None or (upstream name, the answer)); the answer None means "unchanged"
Attempting = Callable[[UpstreamClient], Awaitable[tuple[Attempt, tuple[str, object] | None]]]


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.settings, self.store, self.clock, self.transport = settings, store, clock, transport
        self.clients: dict[tuple[str, str], UpstreamClient] = {
            (src.name, up.name): UpstreamClient(up, transport, src.name)
            for src in settings.sources
            for up in src.active_upstreams
        }
        self.flights = Flights(lambda: self.store, lambda: self.settings.cache.lease_seconds, self.fresh)
        self.background: set[asyncio.Task] = set()  # work started ahead of the clients (e.g. revalidations)
        cache = settings.cache
        self.health = Health(backoff=cache.upstream_backoff, threshold=cache.backoff_after)
        self.on_attempt: Callable[[UpstreamClient, Attempt], None] | None = None  # e.g. metrics
        self.passing: dict[str, asyncio.TimerHandle] = {}  # files of answers served without being kept -> deletion

    def reconfigure(self, settings: Settings) -> None:
        """Run with new settings (a reload) on the same store: a client is kept for each upstream whose settings
        did not change (its pooled connections and in-flight requests go on), replaced where they did (new
        credentials, timeout, TLS), and the old one closed once its requests in flight end. Upstream health,
        coalescing and leases carry over."""
        wanted = {(src.name, up.name): up for src in settings.sources for up in src.active_upstreams}
        for key in [k for k, c in self.clients.items() if wanted.get(k) != c.upstream]:
            self.clients.pop(key).retire()
        for key, up in wanted.items():
            if key not in self.clients:
                self.clients[key] = UpstreamClient(up, self.transport, key[0])
        self.health.backoff, self.health.threshold = settings.cache.upstream_backoff, settings.cache.backoff_after
        self.settings = settings

    async def aclose(self) -> None:
        for path, timer in list(self.passing.items()):
            timer.cancel()
            _delete(path)
        self.passing.clear()
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self.clients.values()), return_exceptions=True)

    def in_background(self, work: Awaitable) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- reading and freshness ---------------------------------------------------------------

    async def read(self, item: Item) -> Entry | None:
        """Memory first. The store only when memory has nothing fresh (another worker may have refreshed it), except
        on the disk backend for an entry held in memory: it is revalidated with the upstream next anyway, and reading
        the disk first would cost a thread hand-off and an SQLite read per revalidation to save, at best, the 304 of
        a file another worker revalidated moments ago. (On s3 the shared store is how a fleet shares revalidations.)
        On the disk backend, None means "read the store under the lease" (see `Flights`)."""
        hot = self.store.peek(item.key)
        if hot is not None and self.fresh(item, hot):
            self.store.note_hit(item.key)
            return hot
        if self.store.backend == "disk":
            # An expired small moving entry held here (`Item.held`) is revalidated as it is. Anything else is read
            # from the store by the lease's claim, in the same hand-off to the store thread: a miss costs one
            # hand-off there, not a read and then a claim.
            return hot if hot is not None and hot.body is not None and item.held else None
        return await self.store.get(item.key)

    async def held(self, key: str) -> Entry | None:
        """A stored entry with its bytes, from memory or the store."""
        cached = self.store.peek(key) or await self.store.get(key)
        return cached if cached is not None and cached.body is not None else None

    def fresh(self, item: Item, cached: Entry | None) -> bool:
        ttl = 0 if item.force else item.ttl
        return freshness.decide(item.kind, cached.meta.checked_at if cached else None, ttl,
                                self.clock()) == freshness.FRESH

    async def offline(self, key: str, what: str, status: int) -> Entry:
        """Offline mode: what is cached whatever its age; never an upstream."""
        cached = await self.store.get(key)
        if cached is None:
            raise NotStaged(f"{what} was not staged (offline mode: no upstream is contacted)", status)
        return cached

    # -- fetching ----------------------------------------------------------------------------

    async def single(self, key: str, make: Callable[[], Awaitable]):
        return await self.flights.single(key, make)

    async def once(self, item: Item, since: float, fetch: Fetch, cached: Entry | None = None) -> Served:
        return await self.flights.once(item, since, fetch, cached)

    def fetching(self, key: str) -> bool:
        """A fetch of `key` is under way in this process."""
        return key in self.flights.inflight

    def order(self, src: Source, preferred: str | None = None) -> list[UpstreamClient]:
        """Active upstreams by priority; `preferred` (e.g. the upstream that vouched for a download's digest) first."""
        current = next((s for s in self.settings.sources if s.name == src.name), None)  # after a reload: the new order
        clients = [self.clients[key] for up in (current or src).active_upstreams if (key := (src.name, up.name)) in self.clients]
        clients.sort(key=lambda c: c.name != preferred)  # stable sort keeps priority order otherwise
        return clients

    async def walk(self, clients: list[UpstreamClient], attempt: Attempting, what: str = ""):
        return await walk(clients, attempt, self.health, self.clock, self.on_attempt, what)

    async def revalidating_walk(self, item: Item, attempt: Attempting, cached: Entry | None,
                                save: Callable[[str, object], Awaitable[Entry]]) -> Served:
        """The priority walk for an entry that may be held: no answer -> stale, not found or unavailable; an
        answer of None (a 304, an unchanged digest) -> the held bytes, revalidated; else `save(upstream, got)`."""
        result, attempts = await self.walk(self.order(item.source), attempt, item.key)
        if result is None:
            return await self.without_answer(item.key, cached, attempts, item.what)
        upstream, got = result
        if got is None:  # the stored bytes are still current
            return Served(await self.touch(item.key, cached), upstream, "revalidated", tuple(attempts))
        return Served(await save(upstream, got), upstream, "miss" if cached is None else "updated", tuple(attempts))

    async def conditional(self, item: Item, cached: Entry | None, path: str, limit: int,
                          headers: dict[str, str] | None = None, check: Callable[[bytes], None] | None = None) -> Served:
        """A moving file revalidated with the validators of the copy held, sent to the upstream that served it: a 304
        keeps the held bytes, a 200 whose body `check` accepts (it raises UpstreamError if not) replaces them."""
        async def attempt(client: UpstreamClient):
            conditions = {}
            if cached is not None and client.name == cached.meta.upstream:
                conditions = freshness.conditional_headers(cached.meta.etag, cached.meta.last_modified)
            got = await client.get(client.url(path), (headers or {}) | conditions, limit)
            outcome = status_outcome(got.status)
            if outcome == "not_modified":
                if not conditions:
                    raise UpstreamError("HTTP 304 to an unconditional request")
                return Attempt(client.name, outcome, "HTTP 304"), (client.name, None)
            if outcome != "ok":
                return Attempt(client.name, outcome, f"HTTP {got.status}"), None
            if check is not None:
                check(got.body)
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, got)

        return await self.revalidating_walk(item, attempt, cached, self.save_fetched(item.key))

    async def fetch_verified(self, item: Item, url: Callable[[UpstreamClient], Awaitable[str]], expected: Expected,
                             limit: int, deadline: float | None, preferred: str | None = None) -> Served:
        """A download whose digest is known before it is asked for: streamed to a spool, hashed on the way, stored
        only if the hash is `expected`; an upstream whose bytes differ is a failed attempt."""
        async def attempt(client: UpstreamClient):
            status, spooled = await self.download(client, await url(client), limit, deadline)
            if spooled is None:
                return Attempt(client.name, status_outcome(status), f"HTTP {status}"), None
            if spooled.sha256 != expected.sha256:
                spooled.discard()
                raise UpstreamError(f"checksum mismatch for {expected.name}: {expected.says} says "
                                    f"{expected.sha256[:16]}…, got {spooled.sha256[:16]}…")
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, spooled)

        result, attempts = await self.walk(self.order(item.source, preferred), attempt, item.key)
        if result is None:
            return await self.without_answer(item.key, None, attempts, item.what)
        upstream, spooled = result
        return Served(await self.store_spooled(item.key, spooled, upstream), upstream, "miss", tuple(attempts))

    async def download(self, client: UpstreamClient, url: str, limit: int,
                       deadline: float | None = None) -> tuple[int, Spooled | None]:
        """GET a file that may be large into a spool (hashed on the way): (status, the spooled 200) or
        (status, None). Cut short, too large or timed out: nothing is left behind, and the error is raised."""
        spool = self.store.spool()
        try:
            got = await client.get(url, None, limit, deadline, spool)
            if status_outcome(got.status) != "ok":
                spool.discard()
                return got.status, None
            return got.status, await spool.afinish()
        except BaseException:
            spool.discard()
            raise

    async def without_answer(self, key: str, cached: Entry | None, attempts: list[Attempt], what: str) -> Served:
        decision = freshness.without_answer(cached is not None, [a.outcome for a in attempts])
        if decision == freshness.SERVE_STALE:
            logger.warning("serving stale %s: every upstream failed (%s)", key, summary(attempts))
            return Served(cached, "cache", "stale", tuple(attempts))
        if decision == freshness.NOT_FOUND:
            reason = f"{what} not found on any upstream"
            await self.remember_missing(key, reason)
            raise NotFound(reason, attempts)
        raise Unavailable(f"{what}: no upstream could answer ({summary(attempts)})", attempts)

    # -- storing -----------------------------------------------------------------------------

    async def save(self, key: str, body: bytes, upstream: str, etag: str | None = None,
                   last_modified: str | None = None) -> Entry:
        """Store an answer; if the cache cannot be written (disk full, read-only), still answer (not kept)."""
        stored = None
        if self.store.keeps():
            stored = await self._write_entry(self.store.put, key, body, upstream, etag, last_modified, self.clock())
        return stored or make_entry(body, upstream, etag, last_modified, self.clock())

    def save_fetched(self, key: str) -> Callable[[str, object], Awaitable[Entry]]:
        """Store a fetched answer under `key` with the upstream's validators (for `revalidating_walk`)."""
        return lambda upstream, got: self.save(key, got.body, upstream, got.headers.get("etag"),
                                               got.headers.get("last-modified"))

    async def store_spooled(self, key: str, spooled: Spooled, upstream: str) -> Entry:
        if spooled.passing:  # the cache folder could not take it while it arrived
            return self.passed(spooled, upstream)
        if spooled.body is not None:
            return await self.save(key, spooled.body, upstream)
        return await self._save_file(key, spooled, upstream)

    async def _save_file(self, key: str, spooled: Spooled, upstream: str) -> Entry:
        """Store a verified spooled file; if the cache cannot take it (disk full, read-only), serve it from the spool
        without keeping it; if it is gone too, the request fails cleanly."""
        # (not `writability.keep()` again: the spool decided to keep it, and wrote it to the cache folder)
        stored = await self._write_entry(self.store.put_file, key, spooled, upstream, None, None, self.clock())
        if stored is not None and stored.file is not None:
            return stored
        if spooled.path is not None and spooled.path.exists():  # a failed write moved it back (local.py `_undoing`)
            return self.passed(spooled, upstream)
        spooled.discard()
        raise Unavailable(f"{key}: fetched and verified, but the cache could not store it (see the log)")

    def passed(self, spooled: Spooled, upstream: str) -> Entry:
        """A verified spooled file answered without being kept: served from where it is, deleted a while after (or
        from memory, where the temporary folder could not take it either)."""
        now, path = self.clock(), str(spooled.path)
        if spooled.body is not None:
            return Entry(Meta(spooled.sha256, spooled.size, upstream, now, now), spooled.body)

        def delete() -> None:
            self.passing.pop(path, None)
            _delete(path)

        self.passing[path] = asyncio.get_running_loop().call_later(PASSED_FILE_SECONDS, delete)
        return Entry(Meta(spooled.sha256, spooled.size, upstream, now, now), None, path)

    async def _write_entry(self, write, key: str, *args) -> Entry | None:
        """`best_effort` for `put`/`put_file`: a lease this process holds on `key` is given back with the write."""
        leases = self.flights.leases
        release = key in leases
        stored = await self.best_effort(write, key, *args, release)
        if stored is not None:
            self.store.writability.succeeded()
            if release:
                leases.discard(key)
        return stored

    async def touch(self, key: str, cached: Entry) -> Entry:
        """Record an upstream's 304 for the bytes we hold; a failed write only costs an earlier revalidation."""
        meta = await self.best_effort(self.store.mark_checked, key, self.clock(), cached.meta.sha256)
        if meta is None:
            # Not recorded: the write failed, or another writer replaced the bytes meanwhile; either
            # way answer with what we revalidated, under its own validators.
            return Entry(replace(cached.meta, checked_at=self.clock()), cached.body)
        return Entry(meta, cached.body)

    async def remember_missing(self, key: str, reason: str) -> None:
        """A negative entry: asked for again within `negative_ttl`, it is not found without an upstream."""
        await self.best_effort(self.store.set_negative, key, reason, self.settings.cache.negative_ttl)

    async def best_effort(self, write, key: str, *args):
        """A cache write whose failure (full disk, ...) must not fail the request (writes.py)."""
        return await best_effort(self.store, write, key, *args)


def _delete(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
