"""The configuration addon: the proxy's own options, proxies.yaml applied at start, reloaded and watched.

At start it reads proxies.yaml, opens the store, makes the resolver and puts them in the shared `Runtime`,
limits mitmproxy's interception to the configured hosts and adds the mirror listener to mitmproxy's modes
(operations/mirror_modes.py). Once running it re-reads the file on SIGHUP, on a changed option and within a few
seconds of a change to it or a secret file (off the event loop, one reload at a time), and applies what may change
live (reload.py). A SIGHUP during start is held (hangup.py) and replayed as one reload. Without applied settings
the proxy never serves: an invalid file or a `cargo_` option given twice stops mitmdump at start with one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from dataclasses import replace
from pathlib import Path

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from ..config import Settings, discovery
from ..resolver import Resolver
from ..runtime import Runtime
from ..storage import open_storage
from . import cmdline, hangup, logs, mirror_modes, reload
from .activity import origin

logger = logging.getLogger(__name__)

MITMPROXY_DEFAULT_CONFDIR = "~/.mitmproxy"
SETTLE_SECONDS = 0.1  # a changed proxies.yaml is read once it has stopped changing for this long


def default_proxies() -> str:
    """cargo_proxies' default: the file config/discovery.py finds, or "" (the start then says where it looked)."""
    try:
        return str(discovery.find_config(os.environ, Path.cwd()))
    except discovery.ConfigNotFound:
        return ""


class Configuration:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime  # where the applied settings and the resolver go, and the reload state
        self._watcher: asyncio.Task | None = None
        self._watched: tuple = ()

    def load(self, loader: Loader) -> None:
        hangup.hold()  # a SIGHUP before `running` is a reload for later, never the end of the process
        loader.add_option(
            "cargo_proxies", str, default_proxies(),
            "Path to proxies.yaml: the cache settings, the intercepted registry hosts and their upstreams. Default: "
            f"${discovery.ENV}, then ./proxies.yaml, then {discovery.SYSTEM}.",
        )
        loader.add_option(
            "cargo_offline", bool, False,
            "Offline mode (air-gap): never contact an upstream; serve what is cached whatever its age. "
            "Also set by cache.offline in proxies.yaml.",
        )
        loader.add_option(
            "cargo_reload_ms", int, 2000,
            "How often (milliseconds) proxies.yaml and its secret files are checked for changes; a change is "
            "applied live. 0: only on SIGHUP.",
        )
        loader.add_option(
            "cargo_log_format", str, "",
            "How log lines look: text (mitmdump's lines) or json (one JSON object a line: every request with client, "
            "method, host, path, status, state, upstream, bytes, ms, reason; every other line with logger and "
            "message). Empty: log_format in proxies.yaml (default text).",
            choices=("", *logs.FORMATS),
        )
        logs.quiet_connections()  # mitmproxy's connect/disconnect lines: shown with -v only
        if twice := cmdline.repeated(getattr(loader.master.options, "deferred", {})):
            # mitmproxy would drop every cargo_ option and run as a plain proxy; an error stops mitmdump at start.
            logger.error("cargo-cache: not starting: %s given more than once (mitmproxy would then ignore every "
                         "cargo_ option); give each once", ", ".join(f"--set {name}" for name in twice))

    def configure(self, updated: set[str]) -> None:
        if "cargo_log_format" in updated and ctx.options.cargo_log_format:  # before the configuration's first line
            if ctx.options.cargo_log_format not in logs.FORMATS:
                raise exceptions.OptionsError(f"cargo_log_format: expected one of {', '.join(logs.FORMATS)}, got "
                                              f"{ctx.options.cargo_log_format!r}")
            logs.use(ctx.options.cargo_log_format, logs.worker_index(os.environ))
        if {"cargo_proxies", "cargo_offline"} & updated:
            if self._watcher is None:
                self.reload("start" if self.runtime.settings is None else "options")
            else:  # changed while running: read off the event loop
                self.runtime.config.ask("options")
        if "confdir" in updated and ctx.options.confdir == MITMPROXY_DEFAULT_CONFDIR and self.runtime.settings:
            # the CA lives where proxies.yaml says (ca.directory; by default certs/ beside the file)
            ctx.options.update(confdir=str(self.runtime.settings.ca_directory))
        if self.runtime.settings is not None and {"cargo_proxies", "allow_hosts", "connection_strategy"} & updated:
            _limit_interception(self.runtime.settings)
        if self.runtime.settings is not None and {"cargo_proxies", "mode"} & updated:
            mirror_modes.listen(self.runtime.settings)

    def reload(self, why: str, read: reload.Read | None = None) -> bool:
        """(Re-)read proxies.yaml and apply it: at start, install it; later, apply what may change live (see
        reload.py) without dropping a request. An invalid file changes nothing. True if it was applied. Later
        reloads come with the file already `read` off the event loop (_watch_forever)."""
        runtime, path = self.runtime, ctx.options.cargo_proxies
        read = read or reload.read(path)
        if read.error is not None:
            # One clear line; at start-up mitmproxy exits on a logged error, later the old settings stay.
            logger.error("cargo-cache: invalid configuration: %s", read.error)
            runtime.config.failed(str(read.error), time.time())
            return False
        settings = read.settings
        if ctx.options.cargo_offline and not settings.cache.offline:
            settings = replace(settings, cache=replace(settings.cache, offline=True))
        self._watched = read.fingerprint
        if runtime.settings is None or runtime.resolver is None:
            self._install(settings)
            runtime.config.loaded(time.time(), ())
            return True
        planned = reload.plan(runtime.settings, settings)
        if planned.settings.cache.s3 != runtime.settings.cache.s3:
            runtime.resolver.store.rotate_credentials(planned.settings.cache.s3)
        runtime.resolver.reconfigure(planned.settings)
        runtime.settings = planned.settings
        _limit_interception(planned.settings)
        mirror_modes.listen(planned.settings)
        runtime.config.loaded(time.time(), planned.needs_restart)
        logger.info("cargo-cache: configuration reloaded (%s): %s", why, "; ".join(planned.changes) or "no changes")
        for field in planned.needs_restart:
            logger.warning("cargo-cache: %s changed in %s: takes effect at the next start (still running with the "
                           "old value)", field, path)
        return True

    async def running(self) -> None:
        config = self.runtime.config
        if self.runtime.settings is None:  # never configured (e.g. mitmproxy dropped our options): never a plain proxy
            logger.error("cargo-cache: not serving: the configuration (cargo_proxies) was never applied")
            ctx.master.shutdown()
            return
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch_forever())
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: config.ask("SIGHUP"))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            logger.info("cargo-cache: SIGHUP not available here; proxies.yaml is still re-read when it changes")
        if hangup.take():
            config.ask("SIGHUP during start")

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch_forever(self) -> None:
        """Re-read proxies.yaml when asked (SIGHUP, a changed option) and within a few seconds of a change to it
        or a secret file; the files are read off the event loop, one reload at a time."""
        while True:
            seconds = ctx.options.cargo_reload_ms / 1000
            why = await self.runtime.config.asked(seconds if seconds > 0 else 5)
            if why is None:  # time to look at the files
                if seconds <= 0 or self.runtime.settings is None:
                    continue
                watched = [ctx.options.cargo_proxies, *self.runtime.settings.secret_files]
                seen = await asyncio.to_thread(reload.fingerprint, watched)
                if seen == self._watched:
                    continue
                await asyncio.sleep(SETTLE_SECONDS)  # a write still in progress would read as a broken file
                if await asyncio.to_thread(reload.fingerprint, watched) != seen:
                    continue
                self._watched, why = seen, "file changed"  # a broken file is reported once, not every time
            self.reload(why, await asyncio.to_thread(reload.read, ctx.options.cargo_proxies))

    def _install(self, settings: Settings) -> None:
        runtime = self.runtime
        old = runtime.resolver
        logs.use(logs.chosen(ctx.options.cargo_log_format, settings.log_format), logs.worker_index(os.environ))
        store = open_storage(settings.cache)
        store.on_call = runtime.activity.metrics.storage_call
        store.on_fault = runtime.activity.metrics.store_error
        store.damage.on_found = runtime.activity.metrics.corrupt_entry
        runtime.settings, runtime.resolver = settings, Resolver(settings, store)
        runtime.resolver.on_attempt = runtime.activity.upstream_attempt
        runtime.activity.metrics.policy.counts = lambda: runtime.resolver.policy.journal.counts if runtime.resolver else {}
        hosts = ", ".join(dict.fromkeys([*(host + ("/…" if reg.index_path.strip("/") else "")  # a path may hold a token
                                           for reg in settings.registries for host in (reg.index_host, reg.download_host)),
                                         *([settings.toolchains.host] if settings.toolchains else [])]))
        where = store.health()
        tier = f" (local tier {where['local_tier']})" if "local_tier" in where else ""
        logger.info("cargo-cache: %s: intercepting %s; cache %s %s%s", settings.source, hosts, where["backend"],
                    where["target"], tier)
        if settings.cache.offline:
            logger.info("cargo-cache: offline mode: serving only what is cached; no upstream is contacted%s",
                        " (index files list staged versions only)" if settings.cache.offline_prune_index else "")
        for reg in settings.sources:
            order = ", ".join(f"{u.name} ({origin(u.url)}{'' if u.active else ', inactive'})" for u in reg.upstreams)
            what = "toolchains (rustup dist)" if reg is settings.toolchains else f"registry {reg.name}"
            logger.info("cargo-cache: %s upstreams in order: %s", what, order)
        if old is not None:
            _close_later(old)


def _limit_interception(settings: Settings) -> None:
    """Decrypt only the registry hosts; answer hits even when no upstream is reachable."""
    ours = [_host_pattern(h) for h in settings.hosts]
    allow = list(dict.fromkeys([*ctx.options.allow_hosts, *ours]))
    wanted = {"allow_hosts": allow, "connection_strategy": "lazy"}
    changes = {k: v for k, v in wanted.items() if k in ctx.options and getattr(ctx.options, k) != v}
    if changes:
        ctx.options.update(**changes)


def _host_pattern(configured: str) -> str:
    """allow_hosts entry for a configured host (mitmproxy ignores case): a trailing dot too; its own port if it names one."""
    name, _, port = configured.partition(":")
    return rf"^{re.escape(name)}\.?" + (rf":{port}$" if port else r"(:\d+)?$")


def _close_later(resolver: Resolver) -> None:
    async def close() -> None:
        await resolver.aclose()
        await resolver.store.close()

    try:
        asyncio.get_running_loop().create_task(close())
    except RuntimeError:
        asyncio.run(resolver.store.close())
