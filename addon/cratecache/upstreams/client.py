"""Talking to upstream registries: one pooled httpx client per upstream, and the priority walk.

Every attempt on an upstream ends in one `Attempt` whose outcome is one of:
- "ok"            200 with an acceptable body
- "not_modified"  304 to a conditional request
- "not_found"     404, 410 or 451: the upstream does not have it; try the next one
- "failed"        connection error, timeout, TLS error, 401/403, 429, 5xx, a bad body, a redirect to a host its
                  policy does not allow (`redirect_refusal`) or more than MAX_REDIRECTS of them: try the next one

`walk` tries upstreams in order until one gives an answer; the caller turns the list of
attempts into 404 (all "not_found") or 502 (anything failed) at the HTTP boundary.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx

from ..config import Upstream
from .health import Health
from .transport import AiohttpTransport, DestinationRefused

logger = logging.getLogger(__name__)

T = TypeVar("T")
NOT_FOUND_STATUSES = (404, 410, 451)
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Connections kept open per upstream when idle, and for how long: every one a burst of requests (Cargo asks for a whole
# dependency level at once) finds open saves a TCP and TLS handshake, a round trip or two to a distant upstream.
KEEPALIVE_SECONDS = 30
MAX_CONNECTIONS = 64  # per upstream; more requests at once wait for one of them
ERROR_BODY_LIMIT = 64 * 1024
DECODE_PIECE = 256 * 1024  # at most this many bytes are inflated at once
TRANSFER_DEADLINE_FACTOR = 12  # a whole answer may take this many read timeouts (60 s by default)


@dataclass(frozen=True)
class Attempt:
    upstream: str
    outcome: str  # ok | not_modified | not_found | failed
    detail: str  # 'HTTP 200', 'timed out after 500 ms', 'checksum mismatch', ...
    ms: float = 0.0

    def __str__(self) -> str:
        return f"{self.upstream}: {self.detail}"


class UpstreamError(Exception):
    """An attempt that failed for a reason other than the HTTP status (bad body, checksum)."""


class TransferTimeout(httpx.TimeoutException):
    """The whole answer took longer than its overall deadline (a trickle within the read timeout)."""


class Inflater:
    """The Content-Encoding we ask for (gzip, one layer) or none, decoded in bounded pieces."""

    def __init__(self, encoding: str):
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
        if codings not in ([], ["gzip"], ["x-gzip"]):
            raise UpstreamError(f"unsupported Content-Encoding {encoding!r} (cargo-cache asks for gzip only)")
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS) if codings else None
        self.wire = 0

    def feed(self, raw: bytes) -> Iterator[bytes]:
        self.wire += len(raw)
        if self._zlib is None:
            if raw:
                yield raw
            return
        data = raw
        while data:
            try:
                piece = self._zlib.decompress(data, DECODE_PIECE)
            except zlib.error as e:
                raise UpstreamError(f"invalid gzip body: {e}") from None
            if piece:
                yield piece
            data = self._zlib.unconsumed_tail
            if self._zlib.eof and self._zlib.unused_data:  # another gzip member follows
                data, self._zlib = self._zlib.unused_data + data, zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self) -> None:
        """Raise if the body ended inside a gzip stream."""
        if self._zlib is not None and not self._zlib.eof:
            raise UpstreamError("truncated gzip body")


def status_outcome(status: int) -> str:
    """How an upstream's HTTP status counts in the priority walk."""
    if status == 200:
        return "ok"
    if status == 304:
        return "not_modified"
    if status in NOT_FOUND_STATUSES:
        return "not_found"
    return "failed"


def describe_error(exc: Exception, timeout_ms: int, elapsed_ms: float | None = None) -> str:
    """A one-line reason for a transport error; never includes credentials. A timeout is reported as a wait of
    `timeout_ms` only if the attempt lasted that long (`elapsed_ms`): a "timeout" raised sooner is a broken
    connection, reported with the time it really took and its own message."""
    if isinstance(exc, TransferTimeout | DestinationRefused):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        if elapsed_ms is not None and elapsed_ms < timeout_ms:
            return (f"{type(exc).__name__} after {elapsed_ms:.0f} ms, before its {timeout_ms} ms timeout: "
                    f"{_short(_root_message(exc))}")
        return f"timed out after {timeout_ms} ms ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc) or type(exc).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            return f"TLS error: {_short(text)}"
        return f"connection failed: {_short(text)}"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {_short(_root_message(exc))}"
    if isinstance(exc, UpstreamError):
        return str(exc)
    return f"{type(exc).__name__}: {_short(str(exc))}"


class Sink(Protocol):
    async def awrite(self, data: bytes) -> object: ...


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    headers: httpx.Headers


class UpstreamClient:
    """One upstream: its pooled client with auth, timeout, TLS setting and no proxy from the environment."""

    def __init__(self, upstream: Upstream, transport: httpx.AsyncBaseTransport | None = None, registry: str = ""):
        self.upstream, self.registry = upstream, registry
        self.busy = 0  # requests in flight (a retired client closes once it has none)
        self.retired = False
        self._origin = _origin(httpx.URL(upstream.url))
        self.client = _Client(
            auth=upstream.auth,
            timeout=httpx.Timeout(upstream.timeout_ms / 1000),
            trust_env=False,
            follow_redirects=False,  # followed by `_get`, where the upstream's host policy allows
            headers={"User-Agent": "cargo-cache", "Accept-Encoding": "gzip"},
            transport=transport or upstream_transport(upstream),
        )
        # What `client.build_request` would merge into every request, worked out once: each request is built
        # directly and sent with `client.send` (build_request's merging of URL, headers, cookies and query
        # parameters cost a third of httpx's CPU per request; none of them vary here).
        self._headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.client.headers.raw]
        self._extensions = {"timeout": self.client.timeout.as_dict()}

    @property
    def name(self) -> str:
        return self.upstream.name

    @property
    def key(self) -> str:
        """Unique across registries: 'crates-io/corp-mirror'."""
        return f"{self.registry}/{self.upstream.name}"

    def url(self, path: str) -> str:
        return self.upstream.url + path

    async def get(self, url: str, headers: dict[str, str] | None = None, max_bytes: int | None = None,
                  deadline: float | None = None, sink: Sink | None = None) -> Fetched:
        """GET `url`, refusing a 200 body above `max_bytes` without buffering it all, and giving up
        after `deadline` seconds in all (default: `TRANSFER_DEADLINE_FACTOR` × the timeout). With `sink`, a 200
        body goes to `sink.awrite` piece by piece as it arrives (the answer's `body` is then empty).

        The upstream's credentials go only to the origin of its index URL. Redirects are followed (at most
        MAX_REDIRECTS) to where `redirect_refusal` allows; any other is a failure of this upstream.
        """
        deadline = deadline or self.upstream.timeout_ms / 1000 * TRANSFER_DEADLINE_FACTOR
        self.busy += 1
        try:
            async with asyncio.timeout(deadline):
                return await self._get(url, headers, max_bytes, sink)
        except TimeoutError:
            raise TransferTimeout(f"transfer not finished within {deadline:.0f} s") from None
        finally:
            self.busy -= 1
            if self.retired and not self.busy:
                await self.aclose()

    def retire(self) -> None:
        """Replaced by a reload: closed now if idle, else when its last request in flight ends."""
        self.retired = True
        if not self.busy:
            try:
                asyncio.get_running_loop().create_task(self.aclose())
            except RuntimeError:  # no loop (a command-line tool): nothing is in flight, nothing to wait for
                pass

    async def _get(self, url: str, headers: dict[str, str] | None, max_bytes: int | None, sink: Sink | None) -> Fetched:
        target = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            auth = httpx.USE_CLIENT_DEFAULT if _origin(target) == self._origin else None  # only to its own origin
            request = httpx.Request("GET", target, headers=self._request_headers(headers), extensions=self._extensions)
            response = await self.client.send(request, auth=auth, stream=True)
            location = response.headers.get("location") if response.status_code in REDIRECT_STATUSES else None
            if not location:  # an answer (a 3xx without a Location is a failure of this upstream, as any other)
                return await self._read(response, max_bytes, sink)
            await response.aclose()
            target = self._redirected(target, location)
        raise UpstreamError(f"too many redirects (more than {MAX_REDIRECTS})")

    def _redirected(self, source: httpx.URL, location: str) -> httpx.URL:
        try:
            target = source.join(location)
        except (httpx.InvalidURL, ValueError):
            raise UpstreamError("redirect with an invalid Location") from None
        if reason := redirect_refusal(source, target, self.upstream):
            raise UpstreamError(f"redirect to {_where(target)} refused: {reason}")
        return target

    async def _read(self, response: httpx.Response, max_bytes: int | None, sink: Sink | None) -> Fetched:
        try:
            limit = max_bytes if response.status_code == 200 else ERROR_BODY_LIMIT
            declared = response.headers.get("content-length", "")
            if response.status_code == 200 and max_bytes and declared.isdigit() and int(declared) > max_bytes:
                raise UpstreamError(f"answer too large: {declared} bytes (limit {max_bytes})")
            # Decoded here, not by httpx: httpx inflates each chunk from the wire whole, so a few KiB of
            # gzip could become gigabytes before any limit is checked. Wire bytes and decoded bytes are both
            # bounded, and inflating goes in pieces of at most DECODE_PIECE bytes.
            in_memory = response.is_stream_consumed  # an in-process transport's answer, already read and decoded
            decoder = Inflater("" if in_memory else response.headers.get("content-encoding", ""))
            chunks, total = [], 0

            def too_large() -> Fetched:
                if response.status_code != 200:
                    return Fetched(response.status_code, b"".join(chunks), response.headers)  # its start is enough
                raise UpstreamError(f"answer too large: more than {max_bytes} bytes (limit {max_bytes})")

            async for raw in (_just(response.content) if in_memory else response.aiter_raw()):
                if limit and decoder.wire + len(raw) > limit:
                    return too_large()
                for piece in decoder.feed(raw):
                    total += len(piece)
                    if limit and total > limit:
                        return too_large()
                    if sink is not None and response.status_code == 200:
                        await sink.awrite(piece)
                    else:
                        chunks.append(piece)
            decoder.finish()
            return Fetched(response.status_code, b"".join(chunks), response.headers)
        finally:
            await response.aclose()

    def _request_headers(self, headers: dict[str, str] | None) -> list[tuple[str, str]]:
        """The client's headers, those given replacing any of the same name (as `build_request` merges them)."""
        if not headers:
            return self._headers
        given = {k.lower() for k in headers}
        return [(k, v) for k, v in self._headers if k.lower() not in given] + list(headers.items())

    async def aclose(self) -> None:
        await self.client.aclose()


async def walk(
    clients: Iterable[UpstreamClient],
    attempt: Callable[[UpstreamClient], Awaitable[tuple[Attempt, T | None]]],
    health: Health | None = None,
    clock: Callable[[], float] = time.time,
    observe: Callable[[UpstreamClient, Attempt], None] | None = None,
    what: str = "",
) -> tuple[T | None, list[Attempt]]:
    """Try each client in order; the first attempt that yields a result wins.

    An upstream in back-off (see `health`) is skipped and counts as failed without being contacted.
    """
    health = health or Health(backoff=0)
    attempts: list[Attempt] = []
    for client in clients:
        if skip := health.skip_reason(client.key, clock()):
            attempts.append(Attempt(client.name, "failed", f"skipped: {skip}"))
            if observe:
                observe(client, attempts[-1])
            continue
        started, begun = time.monotonic(), clock()
        transport_error = False
        try:
            outcome, result = await attempt(client)
        except Exception as exc:  # any transport or validation failure moves on to the next upstream
            # Waiting for one of our own pooled connections is not the upstream failing: a burst of misses
            # from clients must not switch a healthy upstream off for everyone.
            transport_error = isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.PoolTimeout)
            elapsed = (time.monotonic() - started) * 1000
            detail = _mask(describe_error(exc, client.upstream.timeout_ms, elapsed), client.upstream)
            outcome, result = Attempt(client.name, "failed", detail), None
        ms = (time.monotonic() - started) * 1000
        outcome = Attempt(outcome.upstream, outcome.outcome, outcome.detail, ms)
        attempts.append(outcome)
        if outcome.outcome == "failed":
            logger.warning("upstream %s failed: %s%s", client.name, outcome.detail, f" [{what}]" if what else "")
            health.failed(client.key, outcome.detail, clock(), transport_error, ms, begun)
        else:
            health.succeeded(client.key, ms, clock())
        if observe:
            observe(client, outcome)
        if result is not None:
            return result, attempts
    return None, attempts


async def _just(data: bytes):
    yield data


def summary(attempts: list[Attempt]) -> str:
    return "; ".join(str(a) for a in attempts) or "no active upstream"


def _verify(upstream: Upstream) -> bool | str:
    """False, True, or the CA file to trust (read by the transport in a thread, never on the event loop)."""
    if not upstream.ssl_validation:
        return False
    return upstream.ca_bundle or True


def _mask(text: str, upstream: Upstream) -> str:
    """Whatever a library put in an error message, the upstream's credentials never leave it."""
    for secret in (upstream.password, upstream.username):
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _root_message(exc: BaseException) -> str:
    """The first non-empty message down the exception chain (httpx's ReadError has none of its own)."""
    seen = 0
    while exc is not None and seen < 10:
        if str(exc):
            return str(exc)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return "no details"


def download_allowed(url: str, upstream: Upstream) -> bool:
    """Whether a download URL (from the upstream's config.json `dl`) may be fetched: on the upstream's own host
    and port, on a sibling of its host under the same parent domain with the default port (index.crates.io ->
    static.crates.io), or on a host listed in its `download_hosts`. Anything else (a loopback or internal
    address that a compromised mirror names) is never asked."""
    target, own = httpx.URL(url), httpx.URL(upstream.url)
    if target.scheme not in ("http", "https") or not target.host:
        return False
    if (target.host, target.port) == (own.host, own.port):
        return True
    named = f"{target.host}:{target.port}" if target.port else target.host
    if named in upstream.download_hosts or (target.port is None and target.host in upstream.download_hosts):
        return True
    labels = own.host.split(".")
    parent = ".".join(labels[1:])
    return (target.port is None and len(labels) >= 3 and not own.host.replace(".", "").isdigit()
            and target.host.endswith("." + parent) and target.host.count(".") == own.host.count("."))


def redirect_refusal(source: httpx.URL, target: httpx.URL, upstream: Upstream) -> str | None:
    """Why a redirect from `source` to `target` is not followed, or None. The same hosts as a `dl`
    (`download_allowed`), never from https to plain http. (A name that is not configured must also resolve to a
    public address: checked when connecting, see transport.GuardedResolver.)"""
    if target.scheme not in ("http", "https"):
        return f"not http(s) ({target.scheme or 'no scheme'})"
    if source.scheme == "https" and target.scheme == "http":
        return "from https to plain http"
    if not download_allowed(str(target), upstream):
        return "neither its own host, a sibling of it under the same parent domain, nor in its download_hosts"
    return None


def configured_hosts(upstream: Upstream) -> tuple[str, ...]:
    """The hosts its operator named (its own, its download_hosts): the only ones that may be internal addresses."""
    return (httpx.URL(upstream.url).host, *upstream.download_hosts)


def upstream_transport(upstream: Upstream, resolver: object | None = None) -> AiohttpTransport:
    """The pooled connections to one upstream (`resolver`: name resolution under the address check, for tests)."""
    return AiohttpTransport(_verify(upstream), MAX_CONNECTIONS, KEEPALIVE_SECONDS, configured_hosts(upstream), resolver)


def _where(url: httpx.URL) -> str:
    """scheme://host[:port] only: a redirect's path and query may carry a signature or token."""
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port  # normalised: lowercase host, default port as None


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class _Client(httpx.AsyncClient):
    """httpx's client without cookies: none is kept or sent. The registry protocols use none, one client serves
    every Cargo behind the proxy, and reading each answer's Set-Cookie cost a sixth of the CPU of a request."""

    _none = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
