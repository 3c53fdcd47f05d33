"""The advisory-database addon: keeps the RustSec databases that the policy names current while the proxy runs.

Every `cargo_reload_ms` (as proxies.yaml is watched) it compares each database's files with what was loaded (stats
only, off the event loop) and re-reads a changed one in a thread, so a `git pull` in the checkout takes effect
within seconds; after a reload of proxies.yaml (a SIGHUP, a changed file) every database is re-read, and a new
database path is loaded. A database that cannot be read keeps its loaded copy (see policy/databases.py).
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx

from ..resolver import advisory_paths
from ..runtime import Runtime

logger = logging.getLogger(__name__)

IDLE_SECONDS = 5.0  # how often to look when cargo_reload_ms is 0 (only reloads of proxies.yaml then)


class AdvisoryWatch:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task | None = None
        self._reloaded_at: float | None = None

    async def running(self) -> None:
        if self.runtime.settings is not None:
            self._reloaded_at = self.runtime.config.loaded_at
            self._task = asyncio.get_running_loop().create_task(self._watch_forever())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch_forever(self) -> None:
        while True:
            interval = ctx.options.cargo_reload_ms / 1000
            await asyncio.sleep(interval if interval > 0 else IDLE_SECONDS)
            try:
                await self.look(changed_only=interval > 0)
            except Exception:  # keep watching; the loaded databases stay in use
                logger.exception("cargo-cache policy: watching the advisory databases failed")

    async def look(self, changed_only: bool = True) -> None:
        runtime = self.runtime
        if runtime.settings is None or runtime.resolver is None:
            return
        reloaded = runtime.config.loaded_at != self._reloaded_at  # proxies.yaml re-read: SIGHUP or a change
        self._reloaded_at = runtime.config.loaded_at
        paths = advisory_paths(runtime.settings)
        databases = runtime.resolver.policy.databases
        if reloaded or changed_only:
            await databases.refresh(paths, force=reloaded)
        else:
            await databases.refresh([p for p in paths if databases.get(p) is None])
