"""The cache's own addons as addon/cargo_cache.py lists them, sharing one `Runtime`, for mitmproxy's taddons."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from cratecache.boundary.addon import CargoCache
from cratecache.operations.configuration import Configuration
from cratecache.operations.upkeep import Upkeep
from cratecache.runtime import Runtime


@dataclass
class CacheAddons:
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self) -> None:
        self.configuration = Configuration(self.runtime)
        self.requests = CargoCache(self.runtime)
        self.upkeep = Upkeep(self.runtime)

    @property
    def addons(self) -> tuple[Configuration, CargoCache, Upkeep]:
        return self.configuration, self.requests, self.upkeep

    async def running(self) -> None:
        await self._hook("running")

    async def done(self) -> None:
        await self._hook("done")

    async def _hook(self, name: str) -> None:
        """Each addon's hook in the list's order, as mitmproxy calls it."""
        for addon in self.addons:
            if (hook := getattr(addon, name, None)) is not None and inspect.isawaitable(result := hook()):
                await result
