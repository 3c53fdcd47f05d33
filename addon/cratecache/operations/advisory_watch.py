"""The advisory-database addon: keeps the RustSec databases that the policy names current while the proxy runs.

Every `cargo_advisory_reload_ms` (5 s) it compares each database's files with what was loaded (stats
only, off the event loop) and re-reads a changed one in a thread, so a `git pull` in the checkout takes effect
within seconds; after a reload of proxies.yaml (a SIGHUP, a changed file) every database is re-read, and a new
database path is loaded. A database that cannot be read keeps its loaded copy (see policy/databases.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

from ..resolver import advisory_paths
from ..runtime import Runtime

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.5  # how often a reload of proxies.yaml is noticed (a look at a field, no I/O)


class AdvisoryWatch:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task | None = None
        self._reloaded_at: float | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cargo_advisory_reload_ms", int, 5000,
            "How often (milliseconds) the files of the policy's advisory databases are checked for changes (a git "
            "pull); a change is read once it has settled. 0: only after a reload of proxies.yaml (SIGHUP).",
        )

    async def running(self) -> None:
        if self.runtime.settings is not None:
            self._reloaded_at = self.runtime.config.loaded_at
            self._task = asyncio.get_running_loop().create_task(self._watch_forever())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch_forever(self) -> None:
        looked = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            interval = ctx.options.cargo_advisory_reload_ms / 1000
            due = interval > 0 and time.monotonic() - looked >= interval
            if not due and self.runtime.config.loaded_at == self._reloaded_at:
                continue
            looked = time.monotonic()
            try:
                await self.look()
            except Exception:  # keep watching; the loaded databases stay in use
                logger.exception("cargo-cache policy: watching the advisory databases failed")

    async def look(self) -> None:
        """Re-read what changed (every database after a reload of proxies.yaml), and load new paths."""
        runtime = self.runtime
        if runtime.settings is None or runtime.resolver is None:
            return
        reloaded = runtime.config.loaded_at != self._reloaded_at  # proxies.yaml re-read: SIGHUP or a change
        self._reloaded_at = runtime.config.loaded_at
        await runtime.resolver.policy.databases.refresh(advisory_paths(runtime.settings), force=reloaded)
