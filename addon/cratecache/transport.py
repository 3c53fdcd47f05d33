"""httpx's transport API on aiohttp's client: what every upstream request goes through.

The addon speaks httpx (`upstreams.py`: auth, redirects, timeouts, streaming); below it, httpx's default transport
(httpcore on anyio) costs about 1 ms of CPU per request in a burst of a hundred (encode/httpx#3215: locks and
pool checks on every request), against 0.3-0.4 ms for aiohttp's C-accelerated client on the same requests
(BENCHMARKS.md section 9). On a proxy whose event loop is the bottleneck, that is the cost of every revalidation
and every miss. httpx-aiohttp does the same job, but maps refused connections to timeouts and reads 16 KiB at a
time; this module is the small part of it the addon needs, with httpx's exception types as `describe_error` and
the priority walk expect them.

HTTP/1.1 only (as httpx is configured without http2); no cookies, no proxy from the environment, bodies passed on
as they arrive on the wire (the addon decodes gzip itself, bounded).
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
from yarl import URL

READ_PIECE = 1024 * 1024  # at most this much of a body per piece handed to httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One pool of connections (an aiohttp session), made on first use inside the running event loop."""

    def __init__(self, verify: bool | ssl.SSLContext = True, max_connections: int = 64, keepalive: float = 30):
        self._ssl: bool | ssl.SSLContext = False if verify is False else (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context())
        self._max_connections, self._keepalive = max_connections, keepalive
        self._session: aiohttp.ClientSession | None = None

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive,
                                             ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        limits = _limits(timeout.get("pool"), timeout.get("connect"), timeout.get("read"))
        with _mapped(request):
            response = await self._pool().request(
                request.method, URL(str(request.url), encoded=True), headers=request.headers.multi_items(),
                data=request.content or None, allow_redirects=False, timeout=limits, compress=None,
            )
        return httpx.Response(response.status, headers=response.raw_headers, stream=_Body(response, request),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


@functools.lru_cache(maxsize=64)
def _limits(pool: float | None, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """httpx's timeouts as aiohttp's (one object per distinct set: they are the same for every request)."""
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request):
        self._response, self._request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for piece in self._response.content.iter_chunked(READ_PIECE):
                yield piece

    async def aclose(self) -> None:
        self._response.release()  # back to the pool if read to the end, else closed


class _mapped:
    """aiohttp's exceptions as the httpx ones they correspond to (the message kept: it names the cause)."""

    def __init__(self, request: httpx.Request):
        self.request = request

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, (aiohttp.ClientError, TimeoutError)):
            return False
        kind, message = _httpx_error(exc), str(exc) or type(exc).__name__
        if isinstance(exc, aiohttp.ClientPayloadError):  # a body cut short: say how, as httpcore/h11 do
            got = _RECEIVED.search(message)
            short = f": received {got[1]} bytes, expected {got[2]}" if got else ""
            if "ConnectionResetError" in message or "reset by peer" in message:
                kind, message = httpx.ReadError, f"connection reset by peer{short}"
            else:
                message = f"peer closed connection without sending complete message body{short}"
        raise kind(message, request=self.request) from exc


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
