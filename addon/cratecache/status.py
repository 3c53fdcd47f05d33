"""The status endpoint beside the proxy: `/` (HTML page), `/status.json`, `/metrics`, `/healthz`.

A deliberately small HTTP/1.1 server on asyncio (GET and HEAD only, one request per connection):
the page is static and renders `/status.json`, which it polls every two seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], Awaitable[dict]],
        metrics: Callable[[], Awaitable[bytes]],
    ):
        self.host, self.port = host, port
        self.snapshot, self.metrics = snapshot, metrics
        self.page = resources.files(__package__).joinpath("status.html").read_bytes()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host or None, self.port)
        except OSError as e:
            # A warning, not an error: mitmdump exits on errors logged at start-up, and the proxy matters more.
            logger.warning("cargo-cache: status page not started on %s:%d: %s", self.host or "*", self.port, e)
            return
        bound = self._server.sockets[0].getsockname()
        self.port = bound[1]
        logger.info("cargo-cache: status page at http://%s:%d/ (/metrics, /healthz)", self.host or "*", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, path = _request_line(head)
            status, content_type, body = await self._route(method, path)
            headers = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                       "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
            writer.write(headers.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        except Exception:
            logger.exception("cargo-cache: status page error")
        finally:
            writer.close()

    async def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n"
        path = path.split("?", 1)[0]
        if path == "/":
            return "200 OK", "text/html; charset=utf-8", self.page
        if path == "/status.json":
            return "200 OK", "application/json", json.dumps(await self.snapshot()).encode()
        if path == "/metrics":
            return "200 OK", PROMETHEUS_TYPE, await self.metrics()
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}\n'
        return "404 Not Found", "text/plain", b"not found\n"


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > MAX_REQUEST_HEAD:
        return "", ""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", "")
