"""The mitmproxy addon: options, interception scope and the request hook. Glue only."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from mitmproxy import http
from mitmproxy.addonmanager import Loader

from mitmproxy import ctx

from .config import ConfigError, Settings, load_settings
from .handler import Reply, handle
from .resolver import Resolver
from .store import Store

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_PROXIES = PROJECT_DIR / "proxies.yaml"
DEFAULT_CONFDIR = PROJECT_DIR / "certs"
MITMPROXY_DEFAULT_CONFDIR = "~/.mitmproxy"
TALLY_FLUSH_SECONDS = 5


class CargoCache:
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.resolver: Resolver | None = None
        self.tally: Counter[str] = Counter()  # "kind:state" -> requests, flushed to the store
        self._flusher: asyncio.Task | None = None

    def load(self, loader: Loader) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line per request says it all
        loader.add_option(
            "cargo_proxies", str, str(DEFAULT_PROXIES),
            "Path to proxies.yaml: the cache settings, the intercepted registry hosts and their upstreams.",
        )
        loader.add_option(
            "cargo_offline", bool, False,
            "Offline mode (air-gap): never contact an upstream; serve what is cached whatever its age. "
            "Also set by cache.offline in proxies.yaml.",
        )

    def configure(self, updated: set[str]) -> None:
        if "confdir" in updated and ctx.options.confdir == MITMPROXY_DEFAULT_CONFDIR:
            ctx.options.update(confdir=str(DEFAULT_CONFDIR))  # the CA lives in the project's certs/
        if {"cargo_proxies", "cargo_offline"} & updated:
            try:
                settings = load_settings(ctx.options.cargo_proxies)
            except ConfigError as e:
                # One clear line; at start-up mitmproxy exits on a logged error, later the old settings stay.
                logger.error("cargo-cache: invalid configuration: %s", e)
                return
            if ctx.options.cargo_offline and not settings.cache.offline:
                settings = replace(settings, cache=replace(settings.cache, offline=True))
            self._install(settings)
        if self.settings is not None and {"cargo_proxies", "allow_hosts", "connection_strategy"} & updated:
            self._limit_interception(self.settings)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.settings is None or self.resolver is None:
            return
        host = flow.request.pretty_host
        registry = self.settings.registry_for_host(host)
        if registry is None:
            return
        started = time.monotonic()
        reply = await handle(self.resolver, registry, flow.request.method, host, flow.request.path,
                             flow.request.headers)
        flow.response = http.Response.make(reply.status, reply.body, reply.headers)
        if "Content-Length" in reply.headers:  # HEAD: make() counted the empty body
            flow.response.headers["Content-Length"] = reply.headers["Content-Length"]
        flow.metadata["cargo_cache"] = reply.state
        self.tally[f"{reply.kind}:{reply.state}"] += 1
        _log_reply(flow, host, reply, (time.monotonic() - started) * 1000)

    def running(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_tally_forever())

    async def done(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self._flush_tally()
        await self._close()

    async def _flush_tally_forever(self) -> None:
        while True:
            await asyncio.sleep(TALLY_FLUSH_SECONDS)
            await self._flush_tally()

    async def _flush_tally(self) -> None:
        """Request counts go to the shared store, so `cache-stats` sees every worker's."""
        if self.resolver is None or not self.tally:
            return
        counts, self.tally = dict(self.tally), Counter()
        try:
            await asyncio.to_thread(self.resolver.store.add_counts, counts)
        except Exception as e:  # statistics must never break serving
            logger.warning("cargo-cache: could not record request counts: %s", e)

    def _install(self, settings: Settings) -> None:
        old = self.resolver
        store = Store(settings.cache.directory, settings.cache.size_limit, settings.cache.eviction_policy)
        self.settings, self.resolver = settings, Resolver(settings, store)
        hosts = ", ".join(settings.hosts)
        logger.info("cargo-cache: %s: intercepting %s; cache %s", settings.source, hosts, settings.cache.directory)
        if settings.cache.offline:
            logger.info("cargo-cache: offline mode: serving only what is cached; no upstream is contacted%s",
                        " (index files list staged versions only)" if settings.cache.offline_prune_index else "")
        for reg in settings.registries:
            order = ", ".join(f"{u.name} ({u.url}{'' if u.active else ', inactive'})" for u in reg.upstreams)
            logger.info("cargo-cache: registry %s upstreams in order: %s", reg.name, order)
        if old is not None:
            _close_later(old)

    def _limit_interception(self, settings: Settings) -> None:
        """Decrypt only the registry hosts; answer hits even when no upstream is reachable."""
        ours = [rf"^{re.escape(h)}(:\d+)?$" for h in settings.hosts]
        allow = list(dict.fromkeys([*ctx.options.allow_hosts, *ours]))
        wanted = {"allow_hosts": allow, "connection_strategy": "lazy"}
        changes = {k: v for k, v in wanted.items() if k in ctx.options and getattr(ctx.options, k) != v}
        if changes:
            ctx.options.update(**changes)

    async def _close(self) -> None:
        if self.resolver is not None:
            await self.resolver.aclose()
            self.resolver.store.close()
            self.resolver = None


def _log_reply(flow: http.HTTPFlow, host: str, reply: Reply, ms: float) -> None:
    client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
    level = logging.WARNING if reply.status >= 500 else logging.INFO
    logger.log(level, "%s %s %s%s %d %s %s %dB %.0fms %s", client, flow.request.method, host, flow.request.path,
               reply.status, reply.source, reply.state, reply.size, ms, flow.request.http_version)


def _close_later(resolver: Resolver) -> None:
    async def close() -> None:
        await resolver.aclose()
        resolver.store.close()

    try:
        asyncio.get_running_loop().create_task(close())
    except RuntimeError:
        resolver.store.close()
