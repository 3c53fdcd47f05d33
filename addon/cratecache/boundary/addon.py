"""The request addon: answers every request on the registry and toolchains hosts (the hot path). Glue only.

Each request is routed (routes.py), resolved (the resolver from the shared `Runtime`), turned into an answer
(handler.py) and logged; a large cached file is streamed through the blob server (blobs.py). The options,
proxies.yaml and its reloads are operations/configuration.py's; the status server and the store's upkeep are
operations/upkeep.py's. This addon reads what they make through the `Runtime` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from mitmproxy import connection, http, tls
from mitmproxy.addonmanager import Loader

from ..config import Settings
from ..operations.logs import RequestLine, log_request
from ..protocols.pairs import Pairs
from ..protocols.reasks import Reasks
from ..resolver import Resolver
from ..runtime import Runtime
from .blobs import PRECHECK_BYTES, Check, file_sha256
from .handler import Client, Reply, handle, text_reply
from .routes import Rejection, Target, intercept

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 64 * 1024  # a larger (or chunked) request body on a registry host is refused unread


class CargoCache:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime  # settings and resolver, as the configuration addon last applied them
        self.activity = runtime.activity  # the same object for the process's life
        self.blobs = runtime.blobs  # large cached files, streamed through mitmproxy
        self.reasks = Reasks()  # index files each client connection was given: a second ask is Cargo's re-ask
        self.pairs = Pairs()  # the manifest hash each client was given in a .sha256: it gets that manifest
        self._evictions: set[asyncio.Task] = set()  # damaged files found while streamed, being evicted

    def load(self, loader: Loader) -> None:
        # Our own line per request says it all; mitmdump's root logger is at DEBUG, and httpcore's ~10
        # debug records per upstream request cost more CPU than the request itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """rustup gets HTTP/1.1 on the toolchains host: it downloads a few large files two at a time, and mitmproxy
        streams a large body to an HTTP/1.1 client at a fraction of the CPU of HTTP/2 frames (BENCHMARKS.md
        sections 5 and 8). Cargo keeps HTTP/2 on the registry hosts, where it multiplexes many small requests."""
        settings = self.runtime.settings
        tc = settings.toolchains if settings else None
        sni = (data.client_hello.sni or "").lower().removesuffix(".")
        if tc is not None and sni == tc.host.partition(":")[0] and b"http/1.1" in data.client_hello.alpn_protocols:
            data.context.client.alpn = b"http/1.1"  # what mitmproxy's TLS setup then selects for this client

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A large body sent to a read-only registry is refused before mitmproxy reads (and buffers) any of it."""
        if flow.response or flow.error:
            return
        settings = self.runtime.settings
        if settings is None or not _announces_body(flow.request):
            return
        if _target(settings, flow) is None:
            return
        flow.kill()  # mitmproxy would otherwise buffer the whole body before any hook could answer
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        logger.info("%s %s %s%s refused: a request body on a read-only registry (connection closed unread)",
                    client, flow.request.method, flow.request.host_header or flow.request.host, flow.request.path)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        runtime = self.runtime
        settings, resolver = runtime.settings, runtime.resolver
        if settings is None or resolver is None:
            return
        try:
            target = _target(settings, flow)
            if target is not None:
                await self._serve(flow, target, resolver)
        except Exception as e:  # whatever went wrong, the flow is answered here: never passed on to a real host
            logger.exception("cargo-cache: internal error on %s %s", flow.request.method, flow.request.pretty_url)
            if flow.response is None:  # set already if only the bookkeeping after the answer failed
                self._answer(flow, text_reply(500, f"cargo-cache internal error: {type(e).__name__}", "error"))

    async def _serve(self, flow: http.HTTPFlow, target: Target | Rejection, resolver: Resolver) -> None:
        started, path = time.monotonic(), flow.request.path
        if isinstance(target, Rejection):  # answered here, never passed on to a real host
            name, host = "-", flow.request.pretty_host
            reply = text_reply(target.status, target.reason, "rejected")
        else:
            name, host = target.registry.name, target.host
            reply = await handle(resolver, target.registry, flow.request.method, host, flow.request.path,
                                 flow.request.headers, self._client(flow))
            if reply.file is not None and reply.file_size <= PRECHECK_BYTES:
                reply = await self._prechecked(reply, resolver)
                if reply.file is None:  # its bytes rotted and were evicted: now a miss, fetched from an upstream
                    reply = await handle(resolver, target.registry, flow.request.method, host, flow.request.path,
                                         flow.request.headers, self._client(flow))
        if reply.file is not None:
            reply = await self._stream_from_file(flow, reply, resolver)
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

    @staticmethod
    async def _prechecked(reply: Reply, resolver: Resolver) -> Reply:
        """A mid-size file hashed before its first byte is sent (read twice, the second time from the page cache
        by `sendfile`): as it is, without the streaming check, if intact; with no file if it rotted (evicted)."""
        try:
            actual = await asyncio.to_thread(file_sha256, reply.file, reply.file_size)
        except OSError:
            return reply  # the streaming path says what is wrong with it
        if actual == reply.sha256:
            return replace(reply, sha256="")
        await resolver.store.evict_damaged(reply.key, reply.sha256, actual)
        return replace(reply, file=None)

    async def _stream_from_file(self, flow: http.HTTPFlow, reply: Reply, resolver: Resolver) -> Reply:
        """Point the flow at the blob server, which mitmproxy streams from (see blobs.py), checking the file's
        digest on the way; damaged bytes are evicted from the store (the client's cut download is retried)."""
        store = resolver.store

        def damaged(actual: str) -> None:
            task = asyncio.ensure_future(store.evict_damaged(reply.key, reply.sha256, actual))
            self._evictions.add(task)
            task.add_done_callback(self._evictions.discard)

        check = Check(reply.sha256, reply.file_size, damaged) if reply.sha256 else None
        try:
            await self.blobs.start()  # listens from the first large file on, not at start-up
            token = self.blobs.register(reply.file, reply.offset, reply.size, reply.status, reply.headers, check)
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
        await self.blobs.stop()


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
    log_request(logger, RequestLine(client, flow.request.method, host, path, reply.status, reply.source, reply.state,
                                    reply.size, ms, flow.request.http_version, reply.reason))
