"""Resolution of config.json, index files, crates and rustup's dist files: cache -> upstreams in priority
order -> verify -> cache. Cargo's resolution is `protocols/cargo.py` over the engine (`engine/`); rustup's dist
files are resolved here (they move to their own protocol module next).

The resolver knows nothing about mitmproxy; the addon (and the command-line tools) call it.
Failures are raised as `NotFound` (every upstream said "not here"; `NotStaged` in offline mode, with the
status under which the client shows why) or `Unavailable` (something failed and nothing is cached;
`ManifestsDisagree` when the manifests that may vouch for a component list different hashes for it);
`handler` turns them into HTTP answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import httpx

from . import dist, freshness
from .config import Registry, Settings, Source, Toolchains
from .engine import Engine, NotFound, NotStaged, ResolveError, Served, Unavailable
from .health import Health
from .protocols.cargo import Cargo
from .routes import ConfigRoute, DistRoute, IndexRoute, Route
from .storage import Entry, Spooled, Storage, make_entry
from .upstreams import Attempt, UpstreamClient, UpstreamError, status_outcome, summary, walk

__all__ = ["ManifestsDisagree", "NotFound", "NotStaged", "ResolveError", "Resolver", "Served", "Unavailable",
           "not_staged_status"]

logger = logging.getLogger(__name__)

DIST_DEADLINE = 1800.0  # seconds for a whole toolchain component (rustc is ~70 MB)
CHECKSUM_LIMIT = 4096  # a .sha256 file is one line
PARSES_AT_ONCE = 2  # manifests parsed at the same time (distinct bytes; the same bytes are parsed once)
LISTINGS_KEPT = 4  # parsed manifests kept (their file tables only), by the SHA-256 of their bytes
TABLE_INLINE = 64 << 10  # a stored hash table larger than this is read in a worker thread
MANIFEST_RETRIES = 2  # an upstream whose manifest and .sha256 disagree is asked this many more times (it moved)

CARGO_NOT_STAGED = 403  # Cargo takes an index 404 for "no such crate"; another 4xx it prints with the body, unretried
RUSTUP_NOT_STAGED = 503  # rustup takes any 4xx on the nightly channel's manifest as a missing nightly, and panics


def not_staged_status(route: Route) -> int:
    """The status of an offline answer for something not staged, per client (see ../shared/*-protocol.md):
    Cargo reads a 404 on an index file (or config.json) as "no such crate" and never shows why, so those get
    CARGO_NOT_STAGED; rustup, for the undated nightly channel, reads any 4xx on its manifest as "no nightly today"
    and walks back day by day from the date of a manifest it never got ("Malformed manifest date" panic), so that
    manifest gets RUSTUP_NOT_STAGED, a failed download it reports. Everything else keeps 404 (a .crate's body is
    shown by Cargo; rustup reports a missing stable, beta or dated toolchain as no release found)."""
    if isinstance(route, (IndexRoute, ConfigRoute)):
        return CARGO_NOT_STAGED
    if isinstance(route, DistRoute) and route.file.path == "dist/channel-rust-nightly.toml":
        return RUSTUP_NOT_STAGED
    return 404


class ManifestsDisagree(Unavailable):
    """The manifests that may vouch for a component list different hashes for it: it is not served."""


class Resolver:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.engine = Engine(settings, store, clock, transport)
        self.cargo = Cargo(self.engine)
        self.clock = clock
        self._tables: dict[tuple[str, str], dict[str, str]] = {}  # (key, sha256) -> what a stored table vouches for
        self._listings: dict[str, asyncio.Future] = {}  # manifest sha256 -> its parse (off the loop, once per bytes)
        self.parse_listing: Callable[[bytes], dist.Listing] = dist.parse_listing  # runs in a worker thread
        self._parses = asyncio.Semaphore(PARSES_AT_ONCE)
        self._inflight: dict[str, asyncio.Task] = {}
        self._leases: set[str] = set()  # keys this process fetches under its lease (given back with their write)

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    @property
    def store(self) -> Storage:
        return self.engine.store

    @store.setter
    def store(self, store: Storage) -> None:
        self.engine.store = store

    @property
    def clients(self) -> dict[tuple[str, str], UpstreamClient]:
        return self.engine.clients

    @property
    def health(self) -> Health:
        return self.engine.health

    @property
    def on_attempt(self) -> Callable[[UpstreamClient, Attempt], None] | None:
        return self.engine.on_attempt

    @on_attempt.setter
    def on_attempt(self, observe: Callable[[UpstreamClient, Attempt], None] | None) -> None:
        self.engine.on_attempt = observe

    def reconfigure(self, settings: Settings) -> None:
        self.engine.reconfigure(settings)

    async def aclose(self) -> None:
        await self.engine.aclose()

    async def resolve(self, route: Route, reasked: bool = False, pinned: str | None = None) -> Served:
        """`reasked`: the client asks again for an index file it was given on this connection (Cargo does so when
        a locked version is missing from it). `pinned`: the SHA-256 this client was just given in a manifest's
        `.sha256`; it gets that manifest."""
        if isinstance(route, DistRoute):
            return await self.dist_file(route.registry, route.file, pinned)
        if isinstance(route, Cargo.routes):
            return await self.cargo.resolve(route, reasked=reasked, pinned=pinned)
        raise TypeError(f"not a route: {route!r}")

    async def config(self, reg: Registry, force: bool = False) -> Served:
        return await self.cargo.config(reg, force)

    async def index(self, reg: Registry, name: str, force: bool = False) -> Served:
        return await self.cargo.index(reg, name, force)

    async def crate(self, reg: Registry, name: str, version: str) -> Served:
        return await self.cargo.crate(reg, name, version)

    def _save_fetched(self, key: str):
        """Store a fetched answer under `key` with the upstream's validators (for `_revalidating_walk`)."""
        return lambda upstream, got: self._save(key, got.body, upstream, got.headers.get("etag"),
                                                got.headers.get("last-modified"))

    async def _revalidating_walk(self, reg: Source, attempt, key: str, cached: Entry | None, what: str,
                                 save: Callable[[str, object], Awaitable[Entry]]) -> Served:
        """The priority walk for an entry that may be held: no answer -> stale, not found or unavailable; an
        answer of None (a 304, an unchanged .sha256) -> the held bytes, revalidated; else `save(upstream, got)`."""
        result, attempts = await self._walk(self._order(reg), attempt, key)
        if result is None:
            return await self._without_answer(key, cached, attempts, what)
        upstream, got = result
        if got is None:  # the stored bytes are still current
            return Served(await self._touch(key, cached), upstream, "revalidated", tuple(attempts))
        return Served(await save(upstream, got), upstream, "miss" if cached is None else "updated", tuple(attempts))

    # -- rustup's dist files -----------------------------------------------------------------

    async def dist_file(self, src: Toolchains, f: dist.DistFile, pinned: str | None = None) -> Served:
        """A file of the dist layout. A `.sha256` is made from the file it checks (the manifest, rustup-init) or
        from the manifest hash of a component, so a manifest and its `.sha256` are always one pair."""
        if f.checksum:
            return await self._dist_checksum(src, f)
        key = f"{f.kind}/{f.path}"
        if f.kind == "manifest" and pinned and (held := await self._pinned(f, pinned)) is not None:
            return held
        if self.settings.cache.offline:
            cached = await self.store.get(key)
            if cached is None:
                raise NotStaged(f"{f.path} was not staged (offline mode: no upstream is contacted)",
                                not_staged_status(DistRoute(src, f)))
            return Served(cached, "cache", "hit")
        kind, since = "immutable" if f.immutable else "moving", self.clock()
        cached = await self._read(key, kind, src, False)
        if self._decide(kind, cached, src, False) == freshness.FRESH:
            return Served(cached, "cache", "hit")
        fetch = {"pair": self._fetch_paired, "manifest": self._fetch_component, "none": self._fetch_plain}[f.checked_by]
        return await self._once(key, since, kind, src, False, lambda c: fetch(src, f, key, c), cached)

    async def _dist_checksum(self, src: Toolchains, f: dist.DistFile) -> Served:
        if f.checked_by == "manifest":
            body = dist.checksum_body(await self._component_hash(src, f), f.name)
            return Served(make_entry(body, "manifest", now=self.clock()), "cache", "hit")
        served = await self.dist_file(src, replace(f, checksum=False))
        meta = served.entry.meta
        body = dist.checksum_body(meta.sha256, f.name)
        return Served(make_entry(body, meta.upstream, now=meta.stored_at), served.source, served.state, served.attempts)

    async def _pinned(self, f: dist.DistFile, sha256: str) -> Served | None:
        """The manifest (current or the one before) whose hash this client was just given."""
        for key in (f"manifest/{f.path}", f"dist-previous/{f.path}"):
            entry = self.store.peek(key) or await self.store.get(key)
            if entry is not None and entry.meta.sha256 == sha256:
                return Served(entry, "cache", "hit")
        return None

    async def _fetch_paired(self, src: Toolchains, f: dist.DistFile, key: str, cached: Entry | None) -> Served:
        """A file with its own upstream `.sha256` (a channel manifest, rustup-init): the `.sha256` first (all a
        revalidation costs when it is unchanged), then the file, which must match it."""
        manifest = f.kind == "manifest"
        limit = self.settings.cache.max_index_size if manifest else src.max_file_size

        async def attempt(client: UpstreamClient):
            got = await client.get(client.url(f.path + ".sha256"), None, CHECKSUM_LIMIT)
            if status_outcome(got.status) != "ok":
                return Attempt(client.name, status_outcome(got.status), f"HTTP {got.status} for {f.name}.sha256"), None
            expected = _checksum(got.body, f.name)
            if cached is not None and cached.meta.sha256 == expected:
                return Attempt(client.name, "not_modified", "unchanged (.sha256)"), (client.name, None)
            for retry in range(MANIFEST_RETRIES + 1):
                status, spooled = await self._download(client, client.url(f.path), limit, None if manifest else DIST_DEADLINE)
                if spooled is None:
                    return Attempt(client.name, status_outcome(status), f"HTTP {status}"), None
                if spooled.sha256 == expected:
                    break
                spooled.discard()
                moved = _checksum((await client.get(client.url(f.path + ".sha256"), None, CHECKSUM_LIMIT)).body, f.name)
                if moved == expected or retry == MANIFEST_RETRIES:  # not moving: the bytes are bad
                    raise UpstreamError(f"checksum mismatch for {f.path}: its .sha256 says {expected[:16]}…, "
                                        f"got {spooled.sha256[:16]}…")
                expected = moved  # the upstream published a new one between the two requests: ask again
            if manifest:  # a manifest is read whole (it is parsed for its hashes): below max_index_size
                body = spooled.body if spooled.body is not None else await asyncio.to_thread(spooled.path.read_bytes)
                spooled.discard()
                try:
                    await self._listing(body, spooled.sha256)
                except ValueError as e:
                    raise UpstreamError(f"invalid channel manifest {f.path}: {e}") from None
                return Attempt(client.name, "ok", "HTTP 200"), (client.name, body)
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, spooled)

        async def save(upstream: str, got) -> Entry:
            if not manifest:
                return await self._store_spooled(key, got, upstream)
            if cached is not None:  # a client that was given the old one's .sha256 may still ask for it
                await self._best_effort(self.store.put_entry, f"dist-previous/{f.path}", cached.meta, cached.body)
            stored = await self._save(key, got, upstream)
            await self._save_hashes(f.path, stored.body, stored.meta.sha256, upstream)
            return stored

        return await self._revalidating_walk(src, attempt, key, cached, f.path, save)

    async def _fetch_plain(self, src: Toolchains, f: dist.DistFile, key: str, cached: Entry | None) -> Served:
        """A file nothing verifies (release-stable.toml, a signature): revalidated conditionally."""
        async def attempt(client: UpstreamClient):
            headers = {}
            if cached is not None and client.name == cached.meta.upstream:
                headers = freshness.conditional_headers(cached.meta.etag, cached.meta.last_modified)
            got = await client.get(client.url(f.path), headers, self.settings.cache.max_index_size)
            outcome = status_outcome(got.status)
            if outcome == "not_modified" and headers:
                return Attempt(client.name, outcome, "HTTP 304"), (client.name, None)
            if outcome != "ok":
                return Attempt(client.name, "failed" if outcome == "not_modified" else outcome, f"HTTP {got.status}"), None
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, got)

        return await self._revalidating_walk(src, attempt, key, cached, f.path, self._save_fetched(key))

    async def _fetch_component(self, src: Toolchains, f: dist.DistFile, key: str, cached: Entry | None) -> Served:
        """A component, verified against the hash of a manifest the proxy holds (fetched first if need be)."""
        expected = await self._component_hash(src, f)

        async def attempt(client: UpstreamClient):
            status, spooled = await self._download(client, client.url(f.path), src.max_file_size, DIST_DEADLINE)
            if spooled is None:
                return Attempt(client.name, status_outcome(status), f"HTTP {status}"), None
            if spooled.sha256 != expected:
                spooled.discard()
                raise UpstreamError(f"checksum mismatch for {f.name}: the manifest says {expected[:16]}…, "
                                    f"got {spooled.sha256[:16]}…")
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, spooled)

        result, attempts = await self._walk(self._order(src), attempt, key)
        if result is None:
            return await self._without_answer(key, None, attempts, f.path)
        upstream, spooled = result
        return Served(await self._store_spooled(key, spooled, upstream), upstream, "miss", tuple(attempts))

    async def _component_hash(self, src: Toolchains, f: dist.DistFile) -> str:
        """The SHA-256 the manifests of a component's channel and date list for it (`dist.vouches`); if none is
        held, its dated manifest is fetched. ManifestsDisagree if they list different hashes."""
        if digest := await self._listed_hash(f):
            return digest
        channel, problem = dist.component_channel(f.name), None
        if not self.settings.cache.offline:
            manifest = dist.DistFile("manifest", f"dist/{f.date}/channel-rust-{channel}.toml", True, "pair")
            try:
                await self.dist_file(src, manifest)
            except NotFound:
                pass
            except Unavailable as e:
                problem = str(e)
            else:
                if digest := await self._listed_hash(f):
                    return digest
        if problem:
            raise Unavailable(f"{f.name}: its manifest (dist/{f.date}/channel-rust-{channel}.toml) could not be "
                              f"fetched to verify it ({problem})")
        raise NotFound(f"{f.name} is not listed in any channel manifest of {f.date} ({channel}), so it cannot be "
                       "verified and is not served")

    async def _listed_hash(self, f: dist.DistFile) -> str | None:
        prefix = f"dist-hashes/{f.date}/"
        tables = {key[len(prefix):]: await self._hash_table(key, f.date) for key in await self.store.keys(prefix)}
        try:
            return dist.agreed_hash(f.path, tables)
        except dist.ManifestConflict as e:
            raise ManifestsDisagree(str(e)) from None

    async def _hash_table(self, key: str, folder: str) -> dict[str, str]:
        entry = self.store.peek(key) or await self.store.get(key)
        if entry is None:
            return {}
        table = self._tables.get((key, entry.meta.sha256))
        if table is None:
            if len(self._tables) > 256:
                self._tables.clear()
            path = key.split("/", 2)[2]
            read = functools.partial(dist.read_vouched, path, folder, entry.body)
            table = read() if len(entry.body) < TABLE_INLINE else await asyncio.to_thread(read)
            self._tables[(key, entry.meta.sha256)] = table
        return table

    async def _listing(self, body: bytes, sha256: str) -> dist.Listing:
        """What a manifest lists, parsed in a worker thread (a big manifest takes seconds and hundreds of MB to
        parse), once for concurrent callers with the same bytes. ValueError if it is not a v2 manifest."""
        task = self._listings.pop(sha256, None)
        if task is None:
            task = asyncio.ensure_future(self._parse_listing(body))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._listings[sha256] = task  # the most recent last: a manifest is checked, then saved, then its aliases
        while len(self._listings) > LISTINGS_KEPT:
            del self._listings[next(iter(self._listings))]
        return await asyncio.shield(task)

    async def _parse_listing(self, body: bytes) -> dist.Listing:
        async with self._parses:  # each parse of a big manifest holds a few hundred MB while it runs
            return await asyncio.to_thread(self.parse_listing, body)

    async def _save_hashes(self, path: str, body: bytes, sha256: str, upstream: str) -> None:
        """What a new manifest vouches for (`dist.vouches`: files of its channel and date), kept with the cache under
        its date so that its components can be verified; nothing of the parsed document is kept."""
        listing = await self._listing(body, sha256)
        record = await asyncio.to_thread(lambda: listing.vouched_by(path).record())  # a big manifest lists 100k files
        await self._save(f"dist-hashes/{listing.date}/{path}", record, upstream)

    async def store_manifest(self, path: str, entry: Entry) -> None:
        """Keep a manifest under another name (staging's aliases), with what it lists."""
        await self.store.put_entry(f"manifest/{path}", entry.meta, entry.body)
        await self._save_hashes(path, entry.body, entry.meta.sha256, entry.meta.upstream)

    # -- shared ------------------------------------------------------------------------------

    async def _download(self, client: UpstreamClient, url: str, limit: int,
                        deadline: float | None = None) -> tuple[int, Spooled | None]:
        """GET a file that may be large into a spool (hashed on the way): (status, the spooled 200) or
        (status, None). Cut short, too large or timed out: nothing is left behind, and the error is raised."""
        spool = self.store.spool()
        try:
            got = await client.get(url, None, limit, deadline, spool)
            if status_outcome(got.status) != "ok":
                spool.discard()
                return got.status, None
            return got.status, spool.finish()
        except BaseException:
            spool.discard()
            raise

    async def _store_spooled(self, key: str, spooled: Spooled, upstream: str) -> Entry:
        if spooled.body is not None:
            return await self._save(key, spooled.body, upstream)
        return await self._save_file(key, spooled, upstream)

    async def _read(self, key: str, kind: str, reg: Registry, force: bool) -> Entry | None:
        """Memory first. The store only when memory has nothing fresh (another worker may have refreshed it), except
        on the disk backend for an entry held in memory: it is revalidated with the upstream next anyway, and reading
        the disk first would cost a thread hand-off and an SQLite read per revalidation to save, at best, the 304 of
        a file another worker revalidated moments ago. (On s3 the shared store is how a fleet shares revalidations.)
        On the disk backend, None means "read the store under the lease" (see `_leased`)."""
        hot = self.store.peek(key)
        if hot is not None and self._decide(kind, hot, reg, force) == freshness.FRESH:
            self.store.note_hit(key)
            return hot
        if self.store.backend == "disk":
            # An expired index file or config.json held here is revalidated as it is. Anything else is read from
            # the store by the lease's claim (`_leased`), in the same hand-off to the store thread: a miss costs
            # one hand-off there, not a read and then a claim.
            return hot if hot is not None and hot.body is not None and kind in ("index", "config") else None
        return await self.store.get(key)

    def _decide(self, kind: str, cached: Entry | None, reg: Source, force: bool) -> str:
        ttl = 0 if force else reg.index_ttl
        return freshness.decide(kind, cached.meta.checked_at if cached else None, ttl, self.clock())

    def _order(self, reg: Source, preferred: str | None = None) -> list[UpstreamClient]:
        """Active upstreams by priority; `preferred` (for a download: the upstream whose index gave its checksum) first."""
        current = next((s for s in self.settings.sources if s.name == reg.name), None)  # after a reload: the new order
        clients = [self.clients[key] for up in (current or reg).active_upstreams if (key := (reg.name, up.name)) in self.clients]
        clients.sort(key=lambda c: c.name != preferred)  # stable sort keeps priority order otherwise
        return clients

    async def _walk(self, clients, attempt, what: str = ""):
        return await walk(clients, attempt, self.health, self.clock, self.on_attempt, what)

    async def _save(self, key: str, body: bytes, upstream: str, etag: str | None = None,
                    last_modified: str | None = None) -> Entry:
        """Store an answer; if the cache cannot be written (disk full), still answer."""
        stored = await self._write_entry(self.store.put, key, body, upstream, etag, last_modified, self.clock())
        return stored or make_entry(body, upstream, etag, last_modified, self.clock())

    async def _save_file(self, key: str, spooled: Spooled, upstream: str) -> Entry:
        """Store a verified spooled file; if the cache cannot take it, the request still fails cleanly."""
        stored = await self._write_entry(self.store.put_file, key, spooled, upstream, None, None, self.clock())
        if stored is None or stored.file is None:
            spooled.discard()
            raise Unavailable(f"{key}: fetched and verified, but the cache could not store it (see the log)")
        return stored

    async def _write_entry(self, write, key: str, *args) -> Entry | None:
        """`_best_effort` for `put`/`put_file`: a lease this process holds on `key` is given back with the write."""
        release = key in self._leases
        stored = await self._best_effort(write, key, *args, release)
        if stored is not None and release:
            self._leases.discard(key)
        return stored

    async def _touch(self, key: str, cached: Entry) -> Entry:
        """Record an upstream's 304 for the bytes we hold; a failed write only costs an earlier revalidation."""
        meta = await self._best_effort(self.store.mark_checked, key, self.clock(), cached.meta.sha256)
        if meta is None:
            # Not recorded: the write failed, or another writer replaced the bytes meanwhile; either
            # way answer with what we revalidated, under its own validators.
            return Entry(replace(cached.meta, checked_at=self.clock()), cached.body)
        return Entry(meta, cached.body)

    async def _best_effort(self, write, key: str, *args):
        """A cache write whose failure (full disk, ...) must not fail the request: logged, None returned."""
        try:
            return await write(key, *args)
        except Exception as e:
            logger.error("cache write failed for %s (%s: %s) in %s", key, type(e).__name__, e, write.__name__)
            return None

    async def _without_answer(self, key: str, cached: Entry | None, attempts: list[Attempt], what: str) -> Served:
        decision = freshness.without_answer(cached is not None, [a.outcome for a in attempts])
        if decision == freshness.SERVE_STALE:
            logger.warning("serving stale %s: every upstream failed (%s)", key, summary(attempts))
            return Served(cached, "cache", "stale", tuple(attempts))
        if decision == freshness.NOT_FOUND:
            reason = f"{what} not found on any upstream"
            await self._best_effort(self.store.set_negative, key, reason, self.settings.cache.negative_ttl)
            raise NotFound(reason, attempts)
        raise Unavailable(f"{what}: no upstream could answer ({summary(attempts)})", attempts)

    async def _single(self, key: str, make: Callable[[], Awaitable]):
        """Concurrent callers for one key share one run of `make` (in this process)."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._inflight[key] = task
            task.add_done_callback(lambda t: (self._inflight.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    async def _once(
        self, key: str, since: float, kind: str, reg: Source, force: bool,
        fetch: Callable[[Entry | None], Awaitable[Served]], cached: Entry | None = None,
    ) -> Served:
        """Concurrent misses for one key share one upstream fetch, in this process and across processes. On the
        disk backend a revalidation of a small entry held here (`cached`: an index file, config.json, a channel
        manifest) takes no lease: it is one conditional request, cheaper than the lease's two store
        transactions, and workers that revalidate one file at the same moment cost a few 304s. (On s3 the lease
        stays: reading under it is how one gateway's revalidation refreshes the entry for the whole fleet.)"""
        if cached is not None and cached.body is not None and self.store.backend == "disk":
            return await self._single(key, lambda: fetch(cached))
        return await self._single(key, lambda: self._leased(key, since, kind, reg, force, fetch))

    async def _leased(
        self, key: str, since: float, kind: str, reg: Registry, force: bool,
        fetch: Callable[[Entry | None], Awaitable[Served]],
    ) -> Served:
        """Fetch under a lease in the shared store; while another process holds it, wait for its result."""
        lease = self.settings.cache.lease_seconds
        deadline, waiting_on = time.monotonic() + lease, None

        def usable(stored: Entry) -> bool:  # what the store holds answers without a fetch (and without the lease)
            return self._answered_meanwhile(stored, None, since, kind, reg, force) is not None
        while True:
            # Read under the lease: a fetch that finished meanwhile (here or in another process) may answer.
            owned, cached, negative = await self.store.claim(key, lease, usable=usable)
            if not owned and cached is not None:
                return Served(cached, "cache", "hit")
            if owned:
                self._leases.add(key)
            if not owned and (holder := await self.store.lease_holder(key)) != waiting_on:
                # Another holder than the one we waited for (it took over a dead holder's lease just now, or the
                # first one we see): it gets a whole lease period before we fetch without the lease.
                deadline, waiting_on = time.monotonic() + lease, holder
            overdue = not owned and time.monotonic() >= deadline  # that holder hangs: fetch without the lease
            if overdue:
                logger.warning("cargo-cache: %s: its lease holder (%s) has not finished within %d s; fetching "
                               "without the lease", key, waiting_on, lease)
                cached, negative = await self.store.get(key), None
            if owned or overdue:
                try:
                    if answered := self._answered_meanwhile(cached, negative, since, kind, reg, force):
                        return answered
                    return await fetch(cached)
                finally:
                    if owned and key in self._leases:  # not given back with a write of the entry
                        self._leases.discard(key)
                        await self._best_effort(self.store.release_lease, key)
            await asyncio.sleep(self.store.poll_seconds)  # never a busy loop, even if the lease ends at once
            while time.monotonic() < deadline and waiting_on is not None \
                    and await self.store.lease_holder(key) == waiting_on:
                await asyncio.sleep(self.store.poll_seconds)

    def _answered_meanwhile(
        self, cached: Entry | None, negative: str | None, since: float, kind: str, reg: Registry, force: bool
    ) -> Served | None:
        if cached is not None:
            if cached.meta.checked_at > since or self._decide(kind, cached, reg, force) == freshness.FRESH:
                return Served(cached, "cache", "hit")
            return None
        if negative:
            raise NotFound(f"{negative} (remembered)")
        return None


def _checksum(body: bytes, name: str) -> str:
    try:
        return dist.parse_checksum(body)
    except ValueError as e:
        raise UpstreamError(f"{name}.sha256: {e}") from None
