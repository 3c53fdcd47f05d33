"""Revalidating index files ahead of Cargo (which ones: `ahead.py`, pure): when an expired index file is being
revalidated, the expired cached index files it leads to; when config.json is, the index files in use. Each
revalidation ahead shares its fetch with a request that arrives meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..config import Registry
from ..engine import Engine, Item, Served
from ..storage import Entry
from . import ahead

logger = logging.getLogger(__name__)

IndexItem = Callable[[Registry, str], Item]  # (registry, crate name) -> the item of its index file
FetchIndex = Callable[[Registry, str, Entry | None], Awaitable[Served]]


class Ahead:
    def __init__(self, engine: Engine, index_item: IndexItem, fetch_index: FetchIndex):
        self.engine, self.index_item, self.fetch_index = engine, index_item, fetch_index
        self.in_use: dict[str, ahead.InUse] = {}  # registry -> the index files its clients asked for lately

    def asked(self, reg: Registry, name: str, when: float) -> None:
        in_use = self.in_use.get(reg.name) or self.in_use.setdefault(reg.name, ahead.InUse())
        in_use.asked(name, when)

    def start_ahead(self, reg: Registry, name: str, cached: Entry) -> None:
        """An expired index file is being revalidated: start its cached dependencies' revalidations too."""
        limit = self.engine.settings.cache.revalidate_ahead
        if not limit or not reg.index_ttl or cached.body is None:  # index_ttl 0: every request revalidates anyway
            return
        self.engine.in_background(self._revalidate_ahead(reg, name, cached.body, limit))

    def start_in_use(self, reg: Registry) -> None:
        """An expired config.json is being revalidated: start the revalidations of the expired index files in use."""
        limit, in_use = self.engine.settings.cache.revalidate_ahead, self.in_use.get(reg.name)
        if not limit or not reg.index_ttl or in_use is None:
            return
        self.engine.in_background(self._revalidate_in_use(reg, in_use.recent(self.engine.clock()), limit))

    async def _revalidate_in_use(self, reg: Registry, names: list[str], limit: int) -> None:
        started = []
        for name in names:
            if len(started) >= limit:
                break
            item = self.index_item(reg, name)
            if not self.engine.fetching(item.key) and (cached := await self.engine.held(item.key)) is not None \
                    and not self.engine.fresh(item, cached):
                started.append(self._once(reg, name, item, cached))
        await _report(started, f"in use, with {reg.name}'s config.json")

    async def _revalidate_ahead(self, reg: Registry, root: str, body: bytes, limit: int) -> None:
        """Revalidate, concurrently, up to `limit` expired cached index files reachable from `body` through the
        cached copies' dependencies (ahead.py); each shares its fetch with a request that arrives meanwhile."""
        seen, frontier, started = {root}, [body], []
        while frontier and len(started) < limit and len(seen) < 4 * limit:
            bodies = []
            for dep in sorted(set().union(*map(ahead.dependency_names, frontier)) - seen):
                seen.add(dep)
                item = self.index_item(reg, dep)
                if self.engine.fetching(item.key):
                    continue  # its revalidation was started by a request (which walks from it) or by a walk
                cached = await self.engine.held(item.key)
                if cached is None:
                    continue  # never asked for through this cache: not fetched ahead
                bodies.append(cached.body)
                if self.engine.fresh(item, cached):
                    continue
                if len(started) < limit:
                    started.append(self._once(reg, dep, item, cached))
            frontier = bodies
        await _report(started, f"dependencies of {root}")

    def _once(self, reg: Registry, name: str, item: Item, cached: Entry) -> asyncio.Future:
        fetch = lambda stored: self.fetch_index(reg, name, stored)  # noqa: E731
        return asyncio.ensure_future(self.engine.once(item, self.engine.clock(), fetch, cached))


async def _report(started: list[asyncio.Future], why: str) -> None:
    if not started:
        return
    results = await asyncio.gather(*started, return_exceptions=True)
    states = [r.state if isinstance(r, Served) else "failed" for r in results]
    logger.info("cargo-cache: revalidated %d index files ahead of Cargo (%s): %d unchanged, %d updated, "
                "%d not answered", len(started), why, states.count("revalidated"),
                states.count("updated") + states.count("miss"), states.count("failed") + states.count("stale"))
