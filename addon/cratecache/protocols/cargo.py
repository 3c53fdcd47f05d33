"""Cargo's sparse registries over the engine: config.json (rewritten so that downloads come through the proxy),
index files (validated, revalidated conditionally, re-asked after a publish, revalidated ahead: cargo_ahead.py)
and crates (verified against the cksum of their index line, fetched from the `dl` of the upstream that vouched
for it, on its own host or its `download_hosts`). Offline, only staged versions may be listed."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from urllib.parse import urlsplit

import httpx

from ..config import Registry
from ..engine import Expected, Item, NotFound, NotStaged, Served, Unavailable
from ..storage import Entry
from ..upstreams.client import Attempt, UpstreamClient, UpstreamError, download_allowed, status_outcome, summary
from . import sparse
from .base import Protocol
from .cargo_ahead import Ahead
from .routes import ConfigRoute, CrateRoute, IndexRoute

FORCED_REVALIDATION_SECONDS = 10.0  # a re-ask or an unlisted version revalidates an index file at most this often
FORCED_KEPT = 10_000
CRATE_DEADLINE = 600.0  # seconds for a whole .crate download (up to max_crate_size at ~100 kB/s)
INDEX_HEADERS = {"Accept": "text/plain", "cargo-protocol": "version=1"}
CARGO_NOT_STAGED = 403  # Cargo takes an index 404 for "no such crate"; another 4xx it prints with the body, unretried


def config_item(reg: Registry, force: bool = False) -> Item:
    return Item(ConfigRoute(reg).key, reg, "config.json", reg.index_ttl, held=True, force=force)


def index_item(reg: Registry, name: str, force: bool = False) -> Item:
    return Item(IndexRoute(reg, name).key, reg, f"crate {name}", reg.index_ttl, held=True, force=force)


class Cargo(Protocol):
    routes = (ConfigRoute, IndexRoute, CrateRoute)

    def __init__(self, engine):
        super().__init__(engine)
        self.ahead = Ahead(engine, index_item, self._fetch_index)
        self._forced: dict[str, float] = {}  # index key -> when a download last forced its revalidation

    async def resolve(self, route, reasked: bool = False, pinned: str | None = None) -> Served:
        if self.engine.settings.cache.offline:
            return await self._offline(route)
        if isinstance(route, CrateRoute):
            return await self.crate(route.registry, route.name, route.version)
        if isinstance(route, IndexRoute):
            force = reasked and self._may_force(route.key)
            if force:
                self._forced[route.key] = self.engine.clock()
            return await self.index(route.registry, route.name, force=force)
        return await self.config(route.registry)

    @staticmethod
    def not_staged_status(route) -> int:
        """Cargo reads a 404 on an index file (or config.json) as "no such crate" and never shows why, so those get
        CARGO_NOT_STAGED; a .crate's 404 body Cargo shows."""
        return CARGO_NOT_STAGED if isinstance(route, (IndexRoute, ConfigRoute)) else 404

    async def _offline(self, route) -> Served:
        """Serve what is cached whatever its age; never contact an upstream."""
        cached = await self.engine.offline(route.key, _describe(route), self.not_staged_status(route))
        if isinstance(route, IndexRoute) and self.engine.settings.cache.offline_prune_index:
            staged = set(await self.engine.store.keys(f"crate/{route.registry.name}/{route.name.lower()}/"))
            return await asyncio.to_thread(self._pruned_index, route, cached, staged)
        return Served(cached, "cache", "hit")

    def _pruned_index(self, route: IndexRoute, cached: Entry, staged: set[str]) -> Served:
        """The index with only staged versions, so Cargo's resolver picks one of them."""
        def is_staged(entry: sparse.IndexEntry) -> bool:
            return CrateRoute(route.registry, entry.name, entry.version).key in staged

        body = sparse.prune_index(cached.body, is_staged)
        if not body:
            raise NotStaged(f"no version of crate {route.name} was staged (offline mode)", self.not_staged_status(route))
        meta = replace(cached.meta, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
        return Served(Entry(meta, body), "cache", "hit")

    # -- config.json -------------------------------------------------------------------------

    async def config(self, reg: Registry, force: bool = False) -> Served:
        item, since = config_item(reg, force), self.engine.clock()
        cached = await self.engine.read(item)
        if self.engine.fresh(item, cached):
            return Served(cached, "cache", "hit")
        if cached is not None and not force and not self.engine.fetching(item.key):
            self.ahead.start_in_use(reg)  # a Cargo session after a pause: what it used last time is expired too
        return await self.engine.once(item, since, lambda c: self._fetch_config(reg, item, c), cached)

    async def _fetch_config(self, reg: Registry, item: Item, cached: Entry | None) -> Served:
        async def attempt(client: UpstreamClient):
            upstream_config = await self._upstream_config(reg, client, force=True)
            return Attempt(client.name, "ok", "HTTP 200"), (client.name, upstream_config)

        engine = self.engine
        result, attempts = await engine.walk(engine.order(reg), attempt, item.key)  # priority order, as for index files
        if result is None:
            return await engine.without_answer(item.key, cached, attempts, item.what)
        name, upstream_config = result
        answered = urlsplit(reg.upstream(name).url)
        own_index = (answered.netloc.lower(), answered.path) == (reg.index_host, reg.index_path)
        body = sparse.client_config(upstream_config, reg.download_root, keep_api=own_index)
        if cached is not None and cached.body == body:
            return Served(await engine.touch(item.key, cached), name, "revalidated", tuple(attempts))
        return Served(await engine.save(item.key, body, name), name, "miss", tuple(attempts))

    async def _upstream_config(self, reg: Registry, client: UpstreamClient, force: bool = False) -> dict:
        """An upstream's own config.json (for its `dl`), kept in the shared store for the TTL."""
        key, store = f"upstream-config/{reg.name}/{client.name}", self.engine.store
        if not force:
            # Memory first, then the disk: another worker may have fetched it.
            stored = store.peek(key) or await store.get(key)
            if stored is not None and self.engine.clock() - stored.meta.checked_at < max(reg.index_ttl, 60):
                return sparse.parse_config(stored.body)
        return await self.engine.single(key, lambda: self._fetch_upstream_config(key, client))

    async def _fetch_upstream_config(self, key: str, client: UpstreamClient) -> dict:
        got = await client.get(client.url("config.json"), {"Accept": "application/json"},
                               self.engine.settings.cache.max_index_size)
        if status_outcome(got.status) != "ok":
            raise UpstreamError(f"config.json: HTTP {got.status}")
        try:
            parsed = sparse.parse_config(got.body)
        except ValueError as e:
            raise UpstreamError(f"invalid config.json: {e}") from None
        await self.engine.save(key, got.body, client.name)
        return parsed

    # -- index files -------------------------------------------------------------------------

    async def index(self, reg: Registry, name: str, force: bool = False) -> Served:
        item, since = index_item(reg, name, force), self.engine.clock()
        self.ahead.asked(reg, name, since)
        cached = await self.engine.read(item)
        if self.engine.fresh(item, cached):
            return Served(cached, "cache", "hit")
        if cached is not None and not force and not self.engine.fetching(item.key):
            self.ahead.start_ahead(reg, name, cached)

        async def fetch(stored: Entry | None) -> Served:
            if cached is None and stored is not None and not force:  # expired, read from disk under the lease
                self.ahead.start_ahead(reg, name, stored)
            return await self._fetch_index(reg, name, stored)
        return await self.engine.once(item, since, fetch, cached)

    async def _fetch_index(self, reg: Registry, name: str, cached: Entry | None) -> Served:
        def check(body: bytes) -> None:
            try:
                sparse.validate_index(body, name)
            except ValueError as e:
                raise UpstreamError(f"invalid index file: {e}") from None

        # Always in priority order: once a preferred upstream is back, the next revalidation returns to it
        # (and with it the downloads, which follow the index's upstream).
        return await self.engine.conditional(index_item(reg, name), cached, sparse.index_path(name),
                                             self.engine.settings.cache.max_index_size, INDEX_HEADERS, check)

    def _may_force(self, key: str) -> bool:
        now = self.engine.clock()
        if len(self._forced) > FORCED_KEPT:
            self._forced = {k: t for k, t in self._forced.items() if now - t < FORCED_REVALIDATION_SECONDS}
        return now - self._forced.get(key, float("-inf")) >= FORCED_REVALIDATION_SECONDS

    # -- crates ------------------------------------------------------------------------------

    async def crate(self, reg: Registry, name: str, version: str) -> Served:
        item = Item(CrateRoute(reg, name, version).key, reg, f"{name} {version}", immutable=True)
        since = self.engine.clock()
        cached = await self.engine.read(item)
        if cached is not None:
            return Served(cached, "cache", "hit")
        return await self.engine.once(item, since, lambda c: self._fetch_crate(reg, name, version, item))

    async def _fetch_crate(self, reg: Registry, name: str, version: str, item: Item) -> Served:
        index = await self.index(reg, name.lower())
        listed = sparse.find_version(index.entry.body, name, version)
        if listed is None and index.state == "hit":
            # A lockfile may name a version published after our copy of the index was checked: revalidate,
            # at most once per index per FORCED_REVALIDATION_SECONDS, so that made-up versions cannot each
            # cost an authenticated upstream request.
            if not self._may_force(index_key := IndexRoute(reg, name.lower()).key):  # not remembered as missing
                raise NotFound(f"{name} {version} is not listed in the index (checked less than "
                               f"{FORCED_REVALIDATION_SECONDS:.0f} s ago)")
            self._forced[index_key] = self.engine.clock()
            index = await self.index(reg, name.lower(), force=True)
            listed = sparse.find_version(index.entry.body, name, version)
        if listed is None and index.state == "stale":
            raise Unavailable(f"{name} {version}: not in the cached index, and no upstream could be asked "
                              f"({summary(index.attempts)})", index.attempts)
        if listed is None and sparse.listed_unverifiable(index.entry.body, name, version):
            raise NotFound(f"{name} {version}: its index line has no valid cksum, so its download cannot be verified "
                           "and is not served")
        if listed is None:
            reason = f"{name} {version} is not listed in the index"
            await self.engine.remember_missing(item.key, reason)
            raise NotFound(reason)

        async def url(client: UpstreamClient) -> str:
            dl = (await self._upstream_config(reg, client))["dl"]
            url = sparse.download_url(dl, listed.name, version, listed.cksum)
            if not download_allowed(url, client.upstream):
                raise UpstreamError(f"its config.json's dl names {httpx.URL(url).host}, which is neither its own host "
                                    "nor in its download_hosts: not asked")
            return url

        # A large crate goes to a partial file as it arrives, hashed on the way; from the index's upstream first.
        expected = Expected(listed.cksum, f"{name} {version}", "index")
        return await self.engine.fetch_verified(item, url, expected, self.engine.settings.cache.max_crate_size,
                                                CRATE_DEADLINE, preferred=index.entry.meta.upstream)


def _describe(route) -> str:
    if isinstance(route, CrateRoute):
        return f"crate {route.name} {route.version}"
    if isinstance(route, IndexRoute):
        return f"the index file of crate {route.name}"
    return "config.json"
