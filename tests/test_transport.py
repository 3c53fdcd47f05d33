"""transport.py: httpx over aiohttp, against raw servers on 127.0.0.1: bodies, pooling, and each failure as the
httpx error (and message) that the priority walk and the log lines expect."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

import httpx
import pytest
from cratecache.transport import AiohttpTransport
from cratecache.upstreams import describe_error


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
