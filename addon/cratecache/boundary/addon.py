"""The mitmproxy addon: options, interception scope, the request hook and the status server. Glue only."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from dataclasses import replace
from pathlib import Path

from mitmproxy import connection, ctx, http, tls
from mitmproxy.addonmanager import Loader

from ..config import Settings
from ..operations import cmdline, hangup, reload
from ..operations.activity import Activity, origin
from ..operations.reload import ConfigState
from ..operations.status import StatusAuth, StatusServer
from ..protocols.pairs import Pairs
from ..protocols.reasks import Reasks
from ..resolver import Resolver
from ..storage import open_storage
from . import collector
from .blobs import BlobServer
from .handler import Client, Reply, handle, text_reply
from .routes import Rejection, Target, intercept

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[3]
DEFAULT_PROXIES = PROJECT_DIR / "proxies.yaml"
DEFAULT_CONFDIR = PROJECT_DIR / "certs"
MITMPROXY_DEFAULT_CONFDIR = "~/.mitmproxy"
TALLY_FLUSH_SECONDS = 5
SETTLE_SECONDS = 0.1  # a changed proxies.yaml is read once it has stopped changing for this long
MAX_REQUEST_BODY = 64 * 1024  # a larger (or chunked) request body on a registry host is refused unread


class CargoCache:
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.resolver: Resolver | None = None
        self.activity = Activity()
        self.reasks = Reasks()  # index files each client connection was given: a second ask is Cargo's re-ask
        self.pairs = Pairs()  # the manifest hash each client was given in a .sha256: it gets that manifest
        self.blobs = BlobServer()  # large cached files, streamed through mitmproxy
        self.status: StatusServer | None = None
        self.config = ConfigState()  # when the configuration was last loaded, and the last reload error
        self._flusher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._watched: tuple = ()

    def load(self, loader: Loader) -> None:
        hangup.hold()  # a SIGHUP before `running` is a reload for later, never the end of the process
        # Our own line per request says it all; mitmdump's root logger is at DEBUG, and httpcore's ~10
        # debug records per upstream request cost more CPU than the request itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
        loader.add_option(
            "cargo_proxies", str, str(DEFAULT_PROXIES),
            "Path to proxies.yaml: the cache settings, the intercepted registry hosts and their upstreams.",
        )
        loader.add_option(
            "cargo_offline", bool, False,
            "Offline mode (air-gap): never contact an upstream; serve what is cached whatever its age. "
            "Also set by cache.offline in proxies.yaml.",
        )
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
        loader.add_option(
            "cargo_reload_ms", int, 2000,
            "How often (milliseconds) proxies.yaml and its secret files are checked for changes; a change is "
            "applied live. 0: only on SIGHUP.",
        )
        if twice := cmdline.repeated(getattr(loader.master.options, "deferred", {})):
            # mitmproxy would drop every cargo_ option and run as a plain proxy; an error stops mitmdump at start.
            logger.error("cargo-cache: not starting: %s given more than once (mitmproxy would then ignore every "
                         "cargo_ option); give each once", ", ".join(f"--set {name}" for name in twice))

    def configure(self, updated: set[str]) -> None:
        if "confdir" in updated and ctx.options.confdir == MITMPROXY_DEFAULT_CONFDIR:
            ctx.options.update(confdir=str(DEFAULT_CONFDIR))  # the CA lives in the project's certs/
        if {"cargo_proxies", "cargo_offline"} & updated:
            if self._watcher is None:
                self.reload("start" if self.settings is None else "options")
            else:  # changed while running: read off the event loop
                self.config.ask("options")
        if self.settings is not None and {"cargo_proxies", "allow_hosts", "connection_strategy"} & updated:
            self._limit_interception(self.settings)
        status = {"cargo_status_port", "cargo_status_host", "cargo_status_auth", "cargo_status_open"}
        if status & updated and self._flusher is not None:  # changed while running
            asyncio.get_running_loop().create_task(self._restart_status())

    def reload(self, why: str, read: reload.Read | None = None) -> bool:
        """(Re-)read proxies.yaml and apply it: at start, install it; later, apply what may change live (see
        reload.py) without dropping a request. An invalid file changes nothing. True if it was applied. Later
        reloads come with the file already `read` off the event loop (_watch_forever)."""
        path = ctx.options.cargo_proxies
        read = read or reload.read(path)
        if read.error is not None:
            # One clear line; at start-up mitmproxy exits on a logged error, later the old settings stay.
            logger.error("cargo-cache: invalid configuration: %s", read.error)
            self.config.failed(str(read.error), time.time())
            return False
        settings = read.settings
        if ctx.options.cargo_offline and not settings.cache.offline:
            settings = replace(settings, cache=replace(settings.cache, offline=True))
        self._watched = read.fingerprint
        if self.settings is None or self.resolver is None:
            self._install(settings)
            self.config.loaded(time.time(), ())
            return True
        planned = reload.plan(self.settings, settings)
        if planned.settings.cache.s3 != self.settings.cache.s3:
            self.resolver.store.rotate_credentials(planned.settings.cache.s3)
        self.resolver.reconfigure(planned.settings)
        self.settings = planned.settings
        self._limit_interception(planned.settings)
        self.config.loaded(time.time(), planned.needs_restart)
        logger.info("cargo-cache: configuration reloaded (%s): %s", why, "; ".join(planned.changes) or "no changes")
        for field in planned.needs_restart:
            logger.warning("cargo-cache: %s changed in %s: takes effect at the next start (still running with the "
                           "old value)", field, path)
        return True

    async def _watch_forever(self) -> None:
        """Re-read proxies.yaml when asked (SIGHUP, a changed option) and within a few seconds of a change to it
        or a secret file; the files are read off the event loop, one reload at a time."""
        while True:
            seconds = ctx.options.cargo_reload_ms / 1000
            why = await self.config.asked(seconds if seconds > 0 else 5)
            if why is None:  # time to look at the files
                if seconds <= 0 or self.settings is None:
                    continue
                watched = [ctx.options.cargo_proxies, *self.settings.secret_files]
                seen = await asyncio.to_thread(reload.fingerprint, watched)
                if seen == self._watched:
                    continue
                await asyncio.sleep(SETTLE_SECONDS)  # a write still in progress would read as a broken file
                if await asyncio.to_thread(reload.fingerprint, watched) != seen:
                    continue
                self._watched, why = seen, "file changed"  # a broken file is reported once, not every time
            self.reload(why, await asyncio.to_thread(reload.read, ctx.options.cargo_proxies))

    async def running(self) -> None:
        if self.settings is None:  # never configured (e.g. mitmproxy dropped our options): never a plain proxy
            logger.error("cargo-cache: not serving: the configuration (cargo_proxies) was never applied")
            ctx.master.shutdown()
            return
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self._flush_counts_forever())
        self._watcher = loop.create_task(self._watch_forever())
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: self.config.ask("SIGHUP"))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            logger.info("cargo-cache: SIGHUP not available here; proxies.yaml is still re-read when it changes")
        if hangup.take():
            self.config.ask("SIGHUP during start")
        await self._restart_status()
        collector.freeze_startup()  # last: what starting made is not walked again by every full collection

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """rustup gets HTTP/1.1 on the toolchains host: it downloads a few large files two at a time, and mitmproxy
        streams a large body to an HTTP/1.1 client at a fraction of the CPU of HTTP/2 frames (BENCHMARKS.md
        sections 5 and 8). Cargo keeps HTTP/2 on the registry hosts, where it multiplexes many small requests."""
        tc = self.settings.toolchains if self.settings else None
        sni = (data.client_hello.sni or "").lower().removesuffix(".")
        if tc is not None and sni == tc.host.partition(":")[0] and b"http/1.1" in data.client_hello.alpn_protocols:
            data.context.client.alpn = b"http/1.1"  # what mitmproxy's TLS setup then selects for this client

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A large body sent to a read-only registry is refused before mitmproxy reads (and buffers) any of it."""
        if flow.response or flow.error or self.settings is None or not _announces_body(flow.request):
            return
        if _target(self.settings, flow) is None:
            return
        flow.kill()  # mitmproxy would otherwise buffer the whole body before any hook could answer
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        logger.info("%s %s %s%s refused: a request body on a read-only registry (connection closed unread)",
                    client, flow.request.method, flow.request.host_header or flow.request.host, flow.request.path)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.settings is None or self.resolver is None:
            return
        try:
            target = _target(self.settings, flow)
            if target is not None:
                await self._serve(flow, target)
        except Exception as e:  # whatever went wrong, the flow is answered here: never passed on to a real host
            logger.exception("cargo-cache: internal error on %s %s", flow.request.method, flow.request.pretty_url)
            if flow.response is None:  # set already if only the bookkeeping after the answer failed
                self._answer(flow, text_reply(500, f"cargo-cache internal error: {type(e).__name__}", "error"))

    async def _serve(self, flow: http.HTTPFlow, target: Target | Rejection) -> None:
        started, path = time.monotonic(), flow.request.path
        if isinstance(target, Rejection):  # answered here, never passed on to a real host
            name, host = "-", flow.request.pretty_host
            reply = text_reply(target.status, target.reason, "rejected")
        else:
            name, host = target.registry.name, target.host
            reply = await handle(self.resolver, target.registry, flow.request.method, host, flow.request.path,
                                 flow.request.headers, self._client(flow))
        if reply.file is not None:
            reply = await self._stream_from_file(flow, reply)
        if reply.file is None:
            self._answer(flow, reply)
        flow.metadata["cargo_cache"] = reply.state
        seconds = time.monotonic() - started
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        self.activity.request(name, client, flow.request.method, host, path, reply.status,
                              reply.source, reply.state, reply.kind, reply.size if reply.file else len(reply.body),
                              seconds, reply.reason)
        _log_reply(flow, client, host, path, reply, seconds * 1000)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("cargo_cache_streamed"):
            flow.response.stream = True  # our blob server's answer: passed on chunk by chunk, never buffered

    def response(self, flow: http.HTTPFlow) -> None:
        self.blobs.discard(flow.metadata.get("cargo_cache_blob"))  # answered otherwise: its file is not needed

    def error(self, flow: http.HTTPFlow) -> None:
        self.blobs.discard(flow.metadata.get("cargo_cache_blob"))  # the client went away before it was fetched

    async def _stream_from_file(self, flow: http.HTTPFlow, reply: Reply) -> Reply:
        """Point the flow at the blob server, which mitmproxy streams from (see blobs.py)."""
        try:
            await self.blobs.start()  # listens from the first large file on, not at start-up
            token = self.blobs.register(reply.file, reply.offset, reply.size, reply.status, reply.headers)
        except OSError as e:
            logger.warning("cargo-cache: cached file %s cannot be served (%s); answering 503", reply.file, e)
            why = "the cached file was removed while being served" if isinstance(e, FileNotFoundError) else \
                f"the cached file cannot be opened now ({e.strerror or e})"
            return text_reply(503, f"{why}; retry", "error", reply.kind)
        flow.metadata["cargo_cache_blob"] = token
        request = flow.request
        request.scheme, request.host, request.port, request.path = "http", "127.0.0.1", self.blobs.port, f"/{token}"
        request.headers["host"] = f"127.0.0.1:{self.blobs.port}"
        flow.metadata["cargo_cache_streamed"] = True
        return reply

    @staticmethod
    def _answer(flow: http.HTTPFlow, reply: Reply) -> None:
        flow.response = http.Response.make(reply.status, reply.body, reply.headers)
        if reply.status == 304:
            del flow.response.headers["Content-Length"]  # RFC 9110 §8.6: not the length of an empty 304
        elif "Content-Length" in reply.headers:  # HEAD: make() counted the empty body
            flow.response.headers["Content-Length"] = reply.headers["Content-Length"]

    def _client(self, flow: http.HTTPFlow) -> Client:
        conn, headers = flow.client_conn, flow.request.headers
        peer = conn.peername[0] if conn.peername else "-"
        conditional = "if-none-match" in headers or "if-modified-since" in headers
        return Client(asked_again=lambda key: self.reasks.asked_again(conn.id, peer, key, conditional),
                      pinned=lambda path: self.pairs.pinned(conn.id, peer, path),
                      gave=lambda path, sha256: self.pairs.gave(conn.id, peer, path, sha256))

    def client_disconnected(self, client: connection.Client) -> None:
        self.reasks.forget(client.id)
        self.pairs.forget(client.id)

    async def done(self) -> None:
        for task in (self._flusher, self._watcher):
            if task is not None:
                task.cancel()
        if self.status is not None:
            await self.status.stop()
        await self.blobs.stop()
        await self._flush_counts()
        await self._close()

    def _install(self, settings: Settings) -> None:
        old = self.resolver
        store = open_storage(settings.cache)
        store.on_call = self.activity.metrics.storage_call
        self.settings, self.resolver = settings, Resolver(settings, store)
        self.resolver.on_attempt = self.activity.upstream_attempt
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

    def _limit_interception(self, settings: Settings) -> None:
        """Decrypt only the registry hosts; answer hits even when no upstream is reachable."""
        ours = [_host_pattern(h) for h in settings.hosts]
        allow = list(dict.fromkeys([*ctx.options.allow_hosts, *ours]))
        wanted = {"allow_hosts": allow, "connection_strategy": "lazy"}
        changes = {k: v for k, v in wanted.items() if k in ctx.options and getattr(ctx.options, k) != v}
        if changes:
            ctx.options.update(**changes)

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
        store = self.resolver.store
        figures = await store.figures()
        return self.activity.snapshot(self.settings, self.resolver.health, figures, store.health()) | {
            "config": self.config.snapshot(self.settings.source)}

    async def _metrics(self) -> bytes:
        store = self.resolver.store
        return self.activity.metrics.render(await store.figures(), store.health())

    async def _flush_counts_forever(self) -> None:
        while True:
            await asyncio.sleep(TALLY_FLUSH_SECONDS)
            await self._flush_counts()
            if self.resolver is not None:
                try:  # recency of what memory served, purges by other processes, catching up the bucket
                    await self.resolver.store.maintain()
                except Exception as e:
                    logger.warning("cargo-cache: cache upkeep failed: %s", e)

    async def _flush_counts(self) -> None:
        """Request counts go to the shared store, so `cache-stats` sees every worker's."""
        counts = self.activity.take_unflushed()
        if self.resolver is None or not counts:
            return
        try:
            await self.resolver.store.add_counts(counts)
        except Exception as e:  # statistics must never break serving
            logger.warning("cargo-cache: could not record request counts: %s", e)

    async def _close(self) -> None:
        if self.resolver is not None:
            await self.resolver.aclose()
            await self.resolver.store.close()
            self.resolver = None


def _target(settings: Settings, flow: http.HTTPFlow) -> Target | Rejection | None:
    return intercept(settings, flow.request.host, flow.request.port, flow.request.host_header, flow.request.path)


def _announces_body(request: http.Request) -> bool:
    """Whether more than a small body follows the headers (chunked, or a Content-Length above 64 KiB): a small
    one is read, and the request then gets its 405 like any other."""
    if "transfer-encoding" in request.headers:
        return True
    length = request.headers.get("content-length", "0").strip()
    return not length.isdigit() or int(length) > MAX_REQUEST_BODY


def _log_reply(flow: http.HTTPFlow, client: str, host: str, path: str, reply: Reply, ms: float) -> None:
    level = logging.WARNING if reply.status >= 500 else logging.INFO
    logger.log(level, "%s %s %s%s %d %s %s %dB %.0fms %s%s", client, flow.request.method, host, path,
               reply.status, reply.source, reply.state, reply.size, ms, flow.request.http_version,
               f": {reply.reason}" if reply.reason else "")


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
