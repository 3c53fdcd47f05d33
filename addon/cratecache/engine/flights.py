"""One fetch per entry at a time: concurrent misses for one key share one upstream fetch, in this process (a shared
task) and across processes (a lease in the shared store; the others wait for its result, then read it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..storage import Entry, Storage
from .item import Item
from .outcomes import NotFound, Served
from .writes import best_effort

logger = logging.getLogger(__name__)

Fetch = Callable[[Entry | None], Awaitable[Served]]


class Flights:
    """Given by its owner (the engine) what it reads at each fetch: the store in use, the lease period in force (both
    may change while it runs) and whether a stored entry is fresh for an item."""

    def __init__(self, store: Callable[[], Storage], lease_seconds: Callable[[], float],
                 fresh: Callable[[Item, Entry], bool]):
        self.store, self.lease_seconds, self.fresh = store, lease_seconds, fresh
        self.inflight: dict[str, asyncio.Task] = {}
        self.leases: set[str] = set()  # keys this process fetches under its lease (given back with their write)

    async def single(self, key: str, make: Callable[[], Awaitable]):
        """Concurrent callers for one key share one run of `make` (in this process)."""
        task = self.inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self.inflight[key] = task
            task.add_done_callback(lambda t: (self.inflight.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    async def once(self, item: Item, since: float, fetch: Fetch, cached: Entry | None = None) -> Served:
        """Concurrent misses for one key share one upstream fetch, in this process and across processes. On the
        disk backend a revalidation of a small entry held here (`cached`, see `Item.held`) takes no lease: it is one
        conditional request, cheaper than the lease's two store transactions, and workers that revalidate one file
        at the same moment cost a few 304s. (On s3 the lease stays: reading under it is how one gateway's
        revalidation refreshes the entry for the whole fleet.)"""
        if cached is not None and cached.body is not None and self.store().backend == "disk":
            return await self.single(item.key, lambda: fetch(cached))
        return await self.single(item.key, lambda: self._leased(item, since, fetch))

    async def _leased(self, item: Item, since: float, fetch: Fetch) -> Served:
        """Fetch under a lease in the shared store; while another process holds it, wait for its result."""
        store, key, lease = self.store(), item.key, self.lease_seconds()
        deadline, waiting_on = time.monotonic() + lease, None

        def usable(stored: Entry) -> bool:  # what the store holds answers without a fetch (and without the lease)
            return self._answered_meanwhile(stored, None, since, item) is not None
        while True:
            # Read under the lease: a fetch that finished meanwhile (here or in another process) may answer.
            try:
                owned, cached, negative = await store.claim(key, lease, usable=usable)
            except Exception as e:  # the cache folder cannot be written (a lease is a write): fetch without one
                if not store.writability.failed("lease", e):
                    raise
                return await self._unleased(item, since, fetch)
            if not owned and cached is not None:
                return Served(cached, "cache", "hit")
            if owned:
                self.leases.add(key)
            if not owned and (holder := await store.lease_holder(key)) != waiting_on:
                # Another holder than the one we waited for (it took over a dead holder's lease just now, or the
                # first one we see): it gets a whole lease period before we fetch without the lease.
                deadline, waiting_on = time.monotonic() + lease, holder
            overdue = not owned and time.monotonic() >= deadline  # that holder hangs: fetch without the lease
            if overdue:
                logger.warning("cargo-cache: %s: its lease holder (%s) has not finished within %d s; fetching "
                               "without the lease", key, waiting_on, lease)
                cached, negative = await store.get(key), None
            if owned or overdue:
                try:
                    if answered := self._answered_meanwhile(cached, negative, since, item):
                        return answered
                    return await fetch(cached)
                finally:
                    if owned and key in self.leases:  # not given back with a write of the entry
                        self.leases.discard(key)
                        await best_effort(store, store.release_lease, key)
            await asyncio.sleep(store.poll_seconds)  # never a busy loop, even if the lease ends at once
            while time.monotonic() < deadline and waiting_on is not None \
                    and await store.lease_holder(key) == waiting_on:
                await asyncio.sleep(store.poll_seconds)

    async def _unleased(self, item: Item, since: float, fetch: Fetch) -> Served:
        """A fetch without the lease (the cache folder refuses writes): what is stored still answers if it can."""
        try:
            cached = await self.store().get(item.key)
        except Exception as e:
            if not self.store().writability.failed("get", e):
                raise
            cached = None
        if answered := self._answered_meanwhile(cached, None, since, item):
            return answered
        return await fetch(cached)

    def _answered_meanwhile(self, cached: Entry | None, negative: str | None, since: float, item: Item) -> Served | None:
        if cached is not None:
            if cached.meta.checked_at > since or self.fresh(item, cached):
                return Served(cached, "cache", "hit")
            return None
        if negative:
            raise NotFound(f"{negative} (remembered)")
        return None
