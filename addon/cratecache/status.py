"""The status endpoint beside the proxy: `/` (HTML page), `/status.json`, `/metrics`, `/healthz`.

A deliberately small HTTP/1.1 server on asyncio (GET and HEAD only, one request per connection):
the page is static and renders `/status.json`, which it polls every two seconds. It listens on loopback
unless told otherwise (`cargo_status_host`), and may ask for HTTP Basic auth (`cargo_status_auth`), with some
paths left open (`cargo_status_open`, by default `/healthz` for load balancers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mitmproxy.utils import htpasswd

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class StatusAuth:
    """Who may read the status server: anyone, one `user:pass`, or the users of an htpasswd file (bcrypt or
    {SHA}, as mitmproxy's own proxyauth reads them)."""

    user: str | None = None
    password: str | None = None
    passwords: htpasswd.HtpasswdFile | None = None
    open_paths: frozenset[str] = frozenset({"/healthz"})

    @classmethod
    def parse(cls, spec: str, open_paths: str = "/healthz") -> StatusAuth:
        opened = frozenset(p.strip() for p in open_paths.split(",") if p.strip())
        if not spec:
            return cls(open_paths=opened)
        if spec.startswith("@"):
            try:
                return cls(passwords=htpasswd.HtpasswdFile.from_file(Path(spec[1:]).expanduser()), open_paths=opened)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot use htpasswd file {spec[1:]}: {e}") from None
        user, sep, password = spec.partition(":")
        if not sep or not user or not password:
            raise ValueError("expected user:pass or @path/to/htpasswd")
        return cls(user, password, open_paths=opened)

    @property
    def required(self) -> bool:
        return self.user is not None or self.passwords is not None

    def allows(self, path: str, authorization: str | None) -> bool:
        if not self.required or path in self.open_paths:
            return True
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if self.passwords is not None:
            return self.passwords.check_password(user, password)
        return hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
            password.encode(), self.password.encode())


class StatusServer:
    def __init__(
        self,
        host: str,
        port: int,
        snapshot: Callable[[], Awaitable[dict]],
        metrics: Callable[[], Awaitable[bytes]],
        auth: StatusAuth = StatusAuth(),
    ):
        self.host, self.port = host, port
        self.snapshot, self.metrics, self.auth = snapshot, metrics, auth
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
        guarded = f"; HTTP Basic auth except {', '.join(sorted(self.auth.open_paths)) or 'nothing'}" if self.auth.required else ""
        logger.info("cargo-cache: status page at http://%s:%d/ (/metrics, /healthz)%s", self.host or "*", self.port,
                    guarded)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, path = _request_line(head)
            extra = ""
            if not self.auth.allows(path.split("?", 1)[0], _header(head, "authorization")):
                status, content_type, body = "401 Unauthorized", "text/plain", b"authentication required\n"
                extra = 'WWW-Authenticate: Basic realm="cargo-cache status"\r\n'
            else:
                status, content_type, body = await self._route(method, path)
            headers = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                       f"{extra}Cache-Control: no-store\r\nConnection: close\r\n\r\n")
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


def _header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.decode("latin-1").partition(":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None
