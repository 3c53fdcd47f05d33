"""transport.py: httpx over aiohttp, against raw servers on 127.0.0.1: bodies, pooling, and each failure as the
httpx error (and message) that the priority walk and the log lines expect."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

import httpx
import pytest
from cratecache.upstreams.client import describe_error
from cratecache.upstreams.transport import AiohttpTransport


class Raw:
    """A loopback server answering each connection with `answer(writer)` after reading the request head."""

    def __init__(self, answer, tls: ssl.SSLContext | None = None):
        self.answer, self.tls, self.connections, self.requests = answer, tls, 0, []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        scheme = "https" if self.tls else "http"
        return f"{scheme}://localhost:{self.server.sockets[0].getsockname()[1]}/"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.requests.append(head)
                if await self.answer(writer) == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def client(**kw) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(**kw), timeout=httpx.Timeout(1.0))


async def ok(writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\nhello")
    await writer.drain()


async def test_a_body_arrives_whole_headers_and_all_and_connections_are_reused():
    raw = Raw(ok)
    async with raw as url, client() as c:
        answers = [await c.get(url + "x", headers={"If-None-Match": '"old"'}) for _ in range(3)]
    assert [(a.status_code, a.content, a.headers["etag"]) for a in answers] == [(200, b"hello", '"e"')] * 3
    assert raw.connections == 1  # one pooled connection for all three
    assert b'if-none-match: "old"' in raw.requests[0].lower() and b"host: localhost:" in raw.requests[0].lower()


async def test_a_refused_connection_is_a_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    async with client() as c:
        with pytest.raises(httpx.ConnectError) as failed:
            await c.get(f"http://127.0.0.1:{port}/")
    assert describe_error(failed.value, 1000).startswith("connection failed: ")


@pytest.mark.parametrize("how, error, reason", [
    ("reset", httpx.ReadError, "ReadError: connection reset by peer: received 2 bytes, expected 10"),
    ("close", httpx.RemoteProtocolError,
     "RemoteProtocolError: peer closed connection without sending complete message body: received 2 bytes, expected 10"),
])
async def test_a_body_cut_short_says_how(how, error, reason):
    async def cut(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi")
        await writer.drain()
        await asyncio.sleep(0.05)
        if how == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return "close"

    async with Raw(cut) as url, client() as c:
        with pytest.raises(error) as failed:
            await c.get(url)
    assert describe_error(failed.value, 1000) == reason


async def test_a_silent_server_is_a_read_timeout():
    async def silent(writer):
        await asyncio.sleep(2)

    async with Raw(silent) as url, client() as c:
        with pytest.raises(httpx.ReadTimeout) as failed:
            await c.get(url, timeout=httpx.Timeout(0.2))
    assert describe_error(failed.value, 200) == "timed out after 200 ms (ReadTimeout)"


async def test_tls_is_verified_against_the_given_ca_or_not_at_all(upstream_ca, upstream_cert):
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_cert.configure_cert(tls)
    trusted = ssl.create_default_context()
    upstream_ca.configure_trust(trusted)
    async with Raw(ok, tls) as url:
        async with client(verify=trusted) as c:
            assert (await c.get(url)).content == b"hello"
        async with client(verify=False) as c:
            assert (await c.get(url)).content == b"hello"
        async with client() as c:  # the usual CAs do not include the test CA
            with pytest.raises(httpx.ConnectError) as failed:
                await c.get(url)
    assert describe_error(failed.value, 1000).startswith("TLS error: ") and "CERTIFICATE_VERIFY_FAILED" in str(failed.value)


# -- pooled connections (issue 27, item 10) ------------------------------------------------------------------------

MIB = 1024 * 1024


async def test_a_connection_pooled_after_a_large_body_is_not_poisoned_by_a_timer_it_never_waited_for():
    """A large body whose last bytes arrive while the reader is behind (a busy proxy writing to disk) pauses the
    connection with the body complete; aiohttp's own read timer was then re-armed on the pooled connection, and the
    next request on it failed at once as a 'read timeout'. The answer after a pause longer than the timeout is the
    upstream's real one."""
    head, middle, tail = 1000, 2 * MIB - 16 * 1024, 32 * 1024  # the tail pushes the reader's buffer over 2 MiB

    async def large_then_small(writer):
        if raw.requests[-1].startswith(b"GET /large"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (head + middle + tail) + b"a" * head)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"b" * middle)
            await writer.drain()
            await asyncio.sleep(0.1)  # the middle is in the reader's buffer: the tail lands in one piece
            writer.write(b"c" * tail)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
        await writer.drain()

    raw = Raw(large_then_small)
    async with raw as url, client() as c:
        timeout = httpx.Timeout(0.2)
        async with c.stream("GET", url + "large", timeout=timeout) as answer:
            received = 0
            async for piece in answer.aiter_raw():
                if not received:
                    await asyncio.sleep(0.3)  # behind the wire while the rest arrives
                received += len(piece)
        await asyncio.sleep(0.3)  # idle in the pool for longer than the read timeout
        small = await c.get(url + "small", timeout=timeout)
    assert received == head + middle + tail
    assert (small.status_code, small.content) == (200, b"small")
    assert raw.connections == 1  # the pooled connection was good, and used


async def test_pooled_connections_the_upstream_closed_are_left_for_a_new_one():
    """The upstream (restarted, or ending idle kept-alive connections) closes each pooled connection as a request is
    sent on it: no answer byte came, so the GET goes again on a new connection instead of failing as 'Server
    disconnected' (aiohttp's own single retry takes the next pooled connection, as dead as the first)."""
    served: dict[object, int] = {}

    async def first_request_per_connection_only(writer):
        served[writer] = served.get(writer, 0) + 1
        if served[writer] > 1:
            return "close"  # read the request, closed without an answer
        await ok(writer)

    raw = Raw(first_request_per_connection_only)
    async with raw as url, client() as c:
        await asyncio.gather(c.get(url + "a"), c.get(url + "a"))  # two connections in the pool
        again = await c.get(url + "b")
    assert again.content == b"hello"
    assert raw.connections == 3


async def test_a_new_connection_that_fails_is_not_sent_again_and_again():
    async def drop(writer):
        return "close"

    raw = Raw(drop)
    async with raw as url, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(url)
    assert len(raw.requests) <= 2  # at most aiohttp's own one retry


async def test_a_timeout_on_the_answer_head_waits_its_time_after_the_request_is_sent():
    async def silent(writer):
        await asyncio.sleep(2)

    async with Raw(silent) as url, client() as c:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout) as failed:
            await c.get(url, timeout=httpx.Timeout(0.2))
        waited_ms = (asyncio.get_running_loop().time() - started) * 1000
    assert describe_error(failed.value, 200, waited_ms) == "timed out after 200 ms (ReadTimeout)"  # it did wait


async def test_a_body_that_stalls_is_a_read_timeout():
    async def stall(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi")
        await writer.drain()
        await asyncio.sleep(2)

    async with Raw(stall) as url, client() as c:
        with pytest.raises(httpx.ReadTimeout) as failed:
            await c.get(url, timeout=httpx.Timeout(0.2))
    assert describe_error(failed.value, 200) == "timed out after 200 ms (ReadTimeout)"


async def test_connection_errors_for_plain_http_name_no_tls_setting():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client() as c:
        with pytest.raises(httpx.ConnectError) as failed:
            await c.get(f"http://127.0.0.1:{port}/")
    assert "ssl:" not in str(failed.value) and f"127.0.0.1:{port}" in str(failed.value)


async def test_a_ca_file_is_trusted_alone(upstream_ca, upstream_cert, tmp_path):
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_cert.configure_cert(tls)
    ca_file = tmp_path / "ca.pem"
    upstream_ca.cert_pem.write_to_path(str(ca_file))
    async with Raw(ok, tls) as url, client(verify=str(ca_file)) as c:
        assert (await c.get(url)).content == b"hello"
