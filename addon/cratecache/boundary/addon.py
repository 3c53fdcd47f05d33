"""The request addon: answers every request on the registry and toolchains hosts (the hot path). Glue only.

Each request is routed (routes.py), resolved (the resolver from the shared `Runtime`), turned into an answer
(handler.py) and logged; a large cached file is streamed through the blob server (blobs.py). The options,
proxies.yaml and its reloads are operations/configuration.py's; the status server and the store's upkeep are
operations/upkeep.py's. This addon reads what they make through the `Runtime` only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import replace
from urllib.parse import urlsplit

from mitmproxy import connection, http, tls
from mitmproxy.addonmanager import Loader

from ..config import Mirror, Settings, Source, Toolchains
from ..engine import freshness
from ..operations.logs import RequestLine, log_request
from ..protocols.pairs import Pairs
from ..protocols.reasks import Reasks
from ..resolver import Resolver
from ..runtime import Runtime
from .blobs import PRECHECK_BYTES, Check, file_sha256
from .handler import Client, Reply, handle, text_reply
from .mirror import MirrorTarget, client_config, locate, login_url, welcome
from .mirror_listener import is_mirror
from .routes import Rejection, Target, intercept
from .tokens import TokenFile

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
        self._token_file: TokenFile | None = None  # the mirror's tokens, re-read when the file changes

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
        if not is_mirror(flow.client_conn) and _target(settings, flow) is None:
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
            if is_mirror(flow.client_conn):
                await self._serve_mirror(flow, settings, resolver)
                return
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
            reply = await self._reply(flow, resolver, target.registry, host, path, flow.request.headers)
        await self._finish(flow, resolver, started, name, host, path, reply)

    async def _serve_mirror(self, flow: http.HTTPFlow, settings: Settings, resolver: Resolver) -> None:
        """A request on the mirror listener: the same routes as on the intercepted hosts (mirror.py), behind the
        mirror's tokens; config.json rewritten to point at the mirror."""
        started, request, mirror = time.monotonic(), flow.request, settings.mirror
        if mirror is None:  # removed by a reload while this connection stayed open
            reply = text_reply(404, "this mirror is not configured any more", "rejected")
            await self._finish(flow, resolver, started, "-", request.pretty_host, request.path, reply)
            return
        target = locate(settings, mirror, request.method, request.path)
        user = self._tokens(mirror.tokens_file).owner(request.headers.get("authorization")) if mirror.tokens else "-"
        reply = _mirror_gate(settings, mirror, request, flow.client_conn.tls_established, target, user)
        if reply is None:
            headers = request.headers
            if target.config:  # the stored entry's validators are not those of the body served here
                headers = headers.copy()
                headers.pop("if-none-match", None)
                headers.pop("if-modified-since", None)
            reply = await self._reply(flow, resolver, target.source, target.host, target.path, headers)
            if target.config and reply.status == 200:
                reply = _mirror_config(reply, client_config(mirror, target.source), request)
        name = target.source.name if isinstance(target, MirrorTarget) and reply.status != 401 else "-"
        await self._finish(flow, resolver, started, name, urlsplit(mirror.public_url).netloc, request.path, reply,
                           user or "-")

    async def _reply(self, flow: http.HTTPFlow, resolver: Resolver, source: Source, host: str, path: str,
                     headers) -> Reply:
        reply = await handle(resolver, source, flow.request.method, host, path, headers, self._client(flow))
        if reply.file is not None and reply.file_size <= PRECHECK_BYTES:
            reply = await self._prechecked(reply, resolver)
            if reply.file is None:  # its bytes rotted and were evicted: now a miss, fetched from an upstream
                reply = await handle(resolver, source, flow.request.method, host, path, headers, self._client(flow))
        return reply

    async def _finish(self, flow: http.HTTPFlow, resolver: Resolver, started: float, name: str, host: str, path: str,
                      reply: Reply, user: str | None = None) -> None:
        """Answer (or stream) the reply, count it and log it. `user`: on the mirror, the token's owner ('-': none)."""
        if reply.file is not None:
            reply = await self._stream_from_file(flow, reply, resolver)
        if reply.file is None:
            self._answer(flow, reply)
        flow.metadata["cargo_cache"] = reply.state
        seconds = time.monotonic() - started
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        self.activity.request(name, client, flow.request.method, host, path, reply.status,
                              reply.source, reply.state, reply.kind, reply.size if reply.file else len(reply.body),
                              seconds, reply.reason, user)
        _log_reply(flow, client, host, path, reply, seconds * 1000, user)

    def _tokens(self, path: str) -> TokenFile:
        if self._token_file is None or self._token_file.path != path:
            self._token_file = TokenFile(path)
        return self._token_file

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


def _mirror_gate(settings: Settings, mirror: Mirror, request: http.Request, tls: bool, target: MirrorTarget | Rejection,
                 user: str | None) -> Reply | None:
    """The mirror's own answer before any route is resolved (None: resolve `target`), in this order: plain HTTP on an
    HTTPS listener, the root page, a registry path without a known token (401, before anything is said about the
    path; rustup sends no token, so /rustup/ is open), a refused path."""
    if mirror.tls_cert and not tls:
        return text_reply(403, f"this mirror is served over HTTPS only: {mirror.public_url}/", "rejected")
    if request.path == urlsplit(mirror.public_url).path.rstrip("/") + "/" and request.method in ("GET", "HEAD"):
        page = (welcome(settings, mirror, listed=user is not None) + "\n").encode()
        return Reply(200, page, {"Content-Type": "text/plain; charset=utf-8"}, "-", "hit", "-", len(page))
    toolchains = isinstance(target, MirrorTarget) and isinstance(target.source, Toolchains)
    if user is None and not toolchains:
        return _unauthorized(mirror, "authorization" in request.headers)
    if isinstance(target, Rejection):
        return text_reply(target.status, target.reason, "rejected")
    return None


def _unauthorized(mirror: Mirror, sent: bool) -> Reply:
    """401 with Cargo's challenge: Cargo then sends its token for the registry, or tells the user to log in."""
    why = "the token sent is not known to this mirror" if sent else "this mirror requires a token"
    reply = text_reply(401, f"{why}: ask its operator for one, then `cargo login --registry <name>` or set "
                            "CARGO_REGISTRIES_<NAME>_TOKEN", "unauthorized")
    return replace(reply, headers={**reply.headers, "WWW-Authenticate": f'Cargo login_url="{login_url(mirror)}"'})


def _mirror_config(reply: Reply, body: bytes, request: http.Request) -> Reply:
    """The registry's config.json as the mirror serves it, with validators of its own."""
    etag = freshness.etag_for(hashlib.sha256(body).hexdigest())
    headers = {**reply.headers, "ETag": etag, "Content-Length": str(len(body))}
    if freshness.client_not_modified(request.headers.get("if-none-match"), None, etag, ""):
        return replace(reply, status=304, body=b"", headers=headers, size=len(body))
    return replace(reply, body=b"" if request.method == "HEAD" else body, headers=headers, size=len(body))


def _log_reply(flow: http.HTTPFlow, client: str, host: str, path: str, reply: Reply, ms: float,
               user: str | None = None) -> None:
    log_request(logger, RequestLine(client, flow.request.method, host, path, reply.status, reply.source, reply.state,
                                    reply.size, ms, flow.request.http_version, reply.reason, user))
