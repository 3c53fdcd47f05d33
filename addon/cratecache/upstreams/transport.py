"""httpx's transport API on aiohttp's client: what every upstream request goes through.

The addon speaks httpx (`client.py`: auth, redirects, timeouts, streaming); below it, httpx's default transport
(httpcore on anyio) costs about 1 ms of CPU per request in a burst of a hundred (encode/httpx#3215: locks and
pool checks on every request), against 0.3-0.4 ms for aiohttp's C-accelerated client on the same requests
(BENCHMARKS.md section 9). On a proxy whose event loop is the bottleneck, that is the cost of every revalidation
and every miss. httpx-aiohttp does the same job, but maps refused connections to timeouts and reads 16 KiB at a
time; this module is the small part of it the addon needs, with httpx's exception types as `describe_error` and
the priority walk expect them.

HTTP/1.1 only (as httpx is configured without http2); no cookies, no proxy from the environment, bodies passed on
as they arrive on the wire (the addon decodes gzip itself, bounded).

Read timeouts are kept here, not by aiohttp's `sock_read`: aiohttp re-arms that timer when a paused body is resumed
after its last byte arrived, so a connection handed back to the pool fails its next request at once with a "read
timeout" it never waited (a large body read slower than the wire, then a pause of more than the timeout). Here the
timer runs from the request being sent to the answer's head, then per piece of body, and only while someone waits.

A request that fails on a reused pooled connection before any answer (the upstream closed it while it sat idle) is
sent once more, on a new connection. Names other than the upstream's configured hosts must resolve to public
addresses (`GuardedResolver`): a redirect or a `dl` naming `metadata.internal` is refused before any connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Iterable

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from . import addresses

logger = logging.getLogger(__name__)

READ_PIECE = 1024 * 1024  # at most this much of a body per piece handed to httpx
IDEMPOTENT = frozenset({"GET", "HEAD"})


class DestinationRefused(OSError):
    """A host that is not configured resolved to an address only a configured host may have."""


# Where a host that is not configured may not resolve to: anything but a public address (first kind found, in order).
UPSTREAM_POLICY = {
    addresses.LOOPBACK: "a loopback address",
    addresses.LINK_LOCAL: "a link-local address",
    addresses.PRIVATE: "a private address",
    addresses.UNSPECIFIED: "a unspecified address",
    addresses.MULTICAST: "a multicast address",
    addresses.NOT_PUBLIC: "not a public address",
}


def address_refusal(address: str) -> str | None:
    """Why a connection to `address` is refused unless its host is configured, or None for a public address."""
    ip = addresses.literal(address)
    if ip is None:
        raise ValueError(f"{address!r} is not an IP address")
    return addresses.refusal(ip, UPSTREAM_POLICY)


class GuardedResolver(AbstractResolver):
    """Name resolution at connect time that refuses, for any host but the configured ones, a name resolving to a
    loopback, link-local, private or otherwise non-public address (so a DNS name for 127.0.0.1 is refused too, and
    a name that changes its answer between a check and the connection cannot slip past it)."""

    def __init__(self, configured: Iterable[str], inner: AbstractResolver | None = None):
        self.configured = frozenset(_hostname(h) for h in configured)
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if _hostname(host) not in self.configured:
            for entry in found:
                if reason := address_refusal(entry["host"]):
                    raise DestinationRefused(f"{_hostname(host)} resolves to {entry['host']}, {reason}, and is neither "
                                             "its own host nor in its download_hosts: not connected")
        return found

    async def close(self) -> None:
        await self._inner.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One pool of connections (an aiohttp session), made on first use inside the running event loop.

    `verify`: True (the usual CAs), False (no verification), the path of a PEM file of the only CAs to trust, or a
    ready context. A context is made in a thread on first use (loading CA files costs ~30 ms: not on the loop).
    `configured_hosts`: when given, every other name must resolve to public addresses (`GuardedResolver`);
    `resolver` replaces the system's name resolution under that check (tests)."""

    def __init__(self, verify: bool | str | ssl.SSLContext = True, max_connections: int = 64, keepalive: float = 30,
                 configured_hosts: Iterable[str] | None = None, resolver: AbstractResolver | None = None):
        self._verify = verify
        self._ssl: asyncio.Future[bool | ssl.SSLContext] | None = None
        self._max_connections, self._keepalive = max_connections, keepalive
        self._configured = None if configured_hosts is None else tuple(configured_hosts)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # for a retry: never reuses a connection
        self._owned: list[AbstractResolver] = []  # resolvers made here (a connector closes only its own)

    async def _pool(self, fresh: bool = False) -> aiohttp.ClientSession:
        session = self._fresh if fresh else self._session
        if session is None or session.closed:
            if self._ssl is None:
                self._ssl = asyncio.get_running_loop().run_in_executor(None, _tls, self._verify)
            tls = await asyncio.shield(self._ssl)
            session = self._fresh if fresh else self._session  # another request may have made it meanwhile
            if session is not None and not session.closed:
                return session
            resolver = self._resolver
            if self._configured is not None:
                resolver = GuardedResolver(self._configured, resolver)
                self._owned.append(resolver)
            keeping = {"force_close": True} if fresh else {"keepalive_timeout": self._keepalive}
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=tls, resolver=resolver, **keeping)
            session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                            cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",),
                                            response_class=_Response)
            if fresh:
                self._fresh = session
            else:
                self._session = session
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        limits, read = _limits(timeout.get("pool"), timeout.get("connect")), timeout.get("read")
        try:
            session = self._session if self._session is not None and not self._session.closed else await self._pool()
            response = await self._send(session, request, limits, read, may_retry=True)
        except _ReusedConnectionFailed as failed:
            logger.debug("%s: a reused connection failed before any answer (%s); sending it again on a new one",
                         request.url.host, failed.__cause__)
            response = await self._send(await self._pool(fresh=True), request, limits, read, may_retry=False)
        return httpx.Response(response.status, headers=response.raw_headers, stream=_Body(response, request, read),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()})

    async def _send(self, session: aiohttp.ClientSession, request: httpx.Request, limits: aiohttp.ClientTimeout,
                    read: float | None, may_retry: bool) -> aiohttp.ClientResponse:
        exchange = _Exchange(read)
        current = _EXCHANGE.set(exchange)
        try:
            return await session.request(
                request.method, URL(str(request.url), encoded=True), headers=request.headers.multi_items(),
                data=_content(request), allow_redirects=False, timeout=limits, compress=None,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            if exchange.timed_out:
                raise httpx.ReadTimeout(f"no answer within {read * 1000:.0f} ms of the request", request=request) from None
            if (may_retry and exchange.reused and request.method in IDEMPOTENT
                    and isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
                    and not isinstance(exc, aiohttp.ClientConnectorError)):  # (aiohttp's retry found it down)
                raise _ReusedConnectionFailed() from exc
            raise _as_httpx(exc, request) from exc
        finally:
            _EXCHANGE.reset(current)

    async def aclose(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        while self._owned:
            await self._owned.pop().close()


class _ReusedConnectionFailed(Exception):
    """A pooled connection that failed before any answer: the request goes again on a new connection."""


class _Exchange:
    """One request in `_send`: its read timeout, whether its connection had carried a request before, and whether
    the answer's head did not come in time."""

    __slots__ = ("read", "reused", "timed_out")

    def __init__(self, read: float | None):
        self.read, self.reused, self.timed_out = read, False, False


_EXCHANGE: contextvars.ContextVar[_Exchange] = contextvars.ContextVar("exchange")
_USED: weakref.WeakSet = weakref.WeakSet()  # connections (their protocol objects) that have carried a request


class _Response(aiohttp.ClientResponse):
    """aiohttp's response, whose head is read once the request has been sent: from then on the read timeout runs,
    and `_send` learns whether the connection had carried a request before. (aiohttp's tracing signals would tell
    the same at a sixth of the CPU of a request.)"""

    async def start(self, connection):
        exchange = _EXCHANGE.get(None)
        if exchange is None:
            return await super().start(connection)
        exchange.reused = connection.protocol in _USED
        _USED.add(connection.protocol)
        waiting = asyncio.timeout(exchange.read)
        try:
            async with waiting:
                return await super().start(connection)
        except TimeoutError:
            exchange.timed_out = waiting.expired()
            raise


def _tls(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """The TLS setting for aiohttp (in a thread: it reads CA files)."""
    if verify is False or isinstance(verify, ssl.SSLContext):
        return verify
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else httpx.create_ssl_context()


def _content(request: httpx.Request) -> bytes | None:
    """The body to send: none for a GET (a redirect's follow-up may carry an unread stream, `request.content` would
    raise RequestNotRead), else what was given."""
    if request.method in IDEMPOTENT:
        return None
    return request.content or None


@functools.lru_cache(maxsize=64)
def _limits(pool: float | None, connect: float | None) -> aiohttp.ClientTimeout:
    """httpx's pool and connect timeouts as aiohttp's (one object per distinct pair: they are the same for every
    request); the read timeout is kept by this module (see the module docstring)."""
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=None)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, read: float | None):
        self._response, self._request, self._read = response, request, read

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        pieces = content.iter_chunked(READ_PIECE).__aiter__()
        while True:
            waiting = asyncio.timeout(None if content.is_eof() else self._read)  # all arrived: reading never waits
            try:
                async with waiting:
                    piece = await anext(pieces)
            except StopAsyncIteration:
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                if waiting.expired():
                    raise httpx.ReadTimeout(f"no data for {self._read * 1000:.0f} ms", request=self._request) from None
                raise _as_httpx(exc, self._request) from exc
            yield piece

    async def aclose(self) -> None:
        self._response.release()  # back to the pool if read to the end, else closed


def _as_httpx(exc: BaseException, request: httpx.Request) -> Exception:
    """aiohttp's exception as the httpx one it corresponds to, with a message that names the cause."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, DestinationRefused):
        return exc.os_error
    kind, message = _httpx_error(exc), str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        message = f"TLS handshake with {exc.host}:{exc.port} failed: {exc.certificate_error}"
    elif isinstance(exc, aiohttp.ClientConnectorError):  # aiohttp's own text says "ssl:default" even for http://
        cause = exc.os_error
        message = f"cannot connect to {exc.host}:{exc.port}: {cause.strerror or str(cause) or type(cause).__name__}"
    elif isinstance(exc, aiohttp.ClientPayloadError):  # a body cut short: say how, as httpcore/h11 do
        got = _RECEIVED.search(message)
        short = f": received {got[1]} bytes, expected {got[2]}" if got else ""
        if "ConnectionResetError" in message or "reset by peer" in message:
            kind, message = httpx.ReadError, f"connection reset by peer{short}"
        else:
            message = f"peer closed connection without sending complete message body{short}"
    return kind(message, request=request)


_RECEIVED = re.compile(r"received (\d+) of (\d+) bytes")


def _httpx_error(exc: BaseException) -> type[httpx.TransportError]:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError)):
        return httpx.ReadTimeout
    if isinstance(exc, TimeoutError):  # the pool's `connect` limit: waiting for a free connection
        return httpx.PoolTimeout
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS handshake and certificate
        return httpx.ConnectError
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol
    return httpx.ReadError  # reset connections (ClientOSError) and anything else on an open connection


def _hostname(host: str) -> str:
    """A host as compared here: lowercase, no port, no trailing dot, no IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")
