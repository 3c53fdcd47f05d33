"""The upkeep addon: the status server, this worker's request counts written to the store, the store's upkeep.

It serves the status page, /status.json, /metrics and /healthz (status.py) from the shared `Runtime`, and every
few seconds writes the request counts to the store (so `cache-stats` sees every worker's) and lets the store
catch up (recency of what memory served, purges by other processes, the bucket). It is the last of the cache's
addons to start and to stop: it freezes what starting made out of the cycle collector, and at the end writes the
last counts and closes the resolver and its store.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

from ..policy import view as policy_view
from ..runtime import Runtime
from . import collector
from .status import StatusAuth, StatusServer

logger = logging.getLogger(__name__)

TALLY_FLUSH_SECONDS = 5
STATUS_OPTIONS = {"cargo_status_port", "cargo_status_host", "cargo_status_auth", "cargo_status_open"}


class Upkeep:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime  # the settings, resolver, activity and reload state the status server shows
        self.status: StatusServer | None = None
        self._flusher: asyncio.Task | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "cargo_status_port", int, 8081,
            "Port of the status page (/), Prometheus metrics (/metrics) and /healthz. 0 disables it.",
        )
        loader.add_option(
            "cargo_status_host", str, "127.0.0.1",
            "Address the status server listens on (its page lists clients and crate names): loopback unless "
            "told otherwise, also when the proxy listens on 0.0.0.0.",
        )
        loader.add_option(
            "cargo_status_auth", str, "",
            "HTTP Basic auth for the status server: 'user:pass' or '@path/to/htpasswd'. Empty: none.",
        )
        loader.add_option(
            "cargo_status_open", str, "/healthz",
            "Comma-separated paths of the status server answered without its auth (e.g. '/healthz,/metrics'; "
            "'' protects all).",
        )

    def configure(self, updated: set[str]) -> None:
        if STATUS_OPTIONS & updated and self._flusher is not None:  # changed while running
            asyncio.get_running_loop().create_task(self._restart_status())

    async def running(self) -> None:
        if self.runtime.settings is None:  # never configured: the configuration addon says so and ends the process
            return
        self._flusher = asyncio.get_running_loop().create_task(self._flush_counts_forever())
        await self._restart_status()
        collector.freeze_startup()  # last: what starting made is not walked again by every full collection

    async def done(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        if self.status is not None:
            await self.status.stop()
        await self._flush_counts()
        await self.runtime.close()

    async def _restart_status(self) -> None:
        if self.status is not None:
            await self.status.stop()
            self.status = None
        if ctx.options.cargo_status_port:
            try:  # an @htpasswd file is read off the event loop
                guard = await asyncio.to_thread(StatusAuth.parse, ctx.options.cargo_status_auth,
                                                ctx.options.cargo_status_open)
            except ValueError as e:
                logger.error("cargo-cache: cargo_status_auth: %s; the status server is not started", e)
                return
            self.status = StatusServer(ctx.options.cargo_status_host, ctx.options.cargo_status_port, self._snapshot,
                                       self._metrics, guard)
            await self.status.start()

    async def _snapshot(self) -> dict:
        runtime = self.runtime
        store = runtime.resolver.store
        figures = await store.figures()
        gate = runtime.resolver.policy
        return runtime.activity.snapshot(runtime.settings, runtime.resolver.health, figures, store.health()) | {
            "config": runtime.config.snapshot(runtime.settings.source),
            "policy": policy_view.snapshot(runtime.settings, gate.databases, gate.journal)}

    async def _metrics(self) -> bytes:
        store = self.runtime.resolver.store
        return self.runtime.activity.metrics.render(await store.figures(), store.health())

    async def _flush_counts_forever(self) -> None:
        while True:
            await asyncio.sleep(TALLY_FLUSH_SECONDS)
            await self._flush_counts()
            if self.runtime.resolver is not None:
                try:  # recency of what memory served, purges by other processes, catching up the bucket
                    await self.runtime.resolver.store.maintain()
                except Exception as e:
                    logger.warning("cargo-cache: cache upkeep failed: %s", e)

    async def _flush_counts(self) -> None:
        """Request counts go to the shared store, so `cache-stats` sees every worker's."""
        counts = self.runtime.activity.take_unflushed()
        if self.runtime.resolver is None or not counts:
            return
        try:
            await self.runtime.resolver.store.add_counts(counts)
        except Exception as e:  # statistics must never break serving
            if not self.runtime.resolver.store.writability.failed("add_counts", e):  # else warned once a minute
                logger.warning("cargo-cache: could not record request counts: %s", e)
