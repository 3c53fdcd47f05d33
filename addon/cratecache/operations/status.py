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
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mitmproxy.utils import htpasswd

from ..config import read_regular_file

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
MAX_HTPASSWD_BYTES = 1024**2
AUTH_THREADS = 2  # bcrypt checks at once (each ~0.25 s of one core at cost 12)
AUTH_WAITING = 32  # checks waiting for a thread; more: 503 at once
VERIFIED_SECONDS = 60  # a successful check is remembered this long
VERIFIED_MAX = 256
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class StatusAuth:
    """Who may read the status server: anyone, one `user:pass`, or the users of an htpasswd file (bcrypt or
    {SHA}, as mitmproxy's own proxyauth reads them). `check` may take a bcrypt's time: the server calls it
    off the event loop (Verifier)."""

    user: str | None = None
    password: str | None = None
    passwords: htpasswd.HtpasswdFile | None = None
    open_paths: frozenset[str] = frozenset({"/healthz"})

    @classmethod
    def parse(cls, spec: str, open_paths: str = "/healthz") -> StatusAuth:
        """Reads an `@htpasswd` file (a regular file of at most 1 MiB): call it off the event loop."""
        opened = frozenset(p.strip() for p in open_paths.split(",") if p.strip())
        if not spec:
            return cls(open_paths=opened)
        if spec.startswith("@"):
            path = Path(spec[1:]).expanduser()
            try:
                return cls(passwords=htpasswd.HtpasswdFile(read_regular_file(path, MAX_HTPASSWD_BYTES)),
                           open_paths=opened)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot use htpasswd file {path}: {getattr(e, 'strerror', None) or e}") from None
        user, sep, password = spec.partition(":")
        if not sep or not user or not password:
            raise ValueError("expected user:pass or @path/to/htpasswd")
        return cls(user, password, open_paths=opened)

    @property
    def required(self) -> bool:
        return self.user is not None or self.passwords is not None

    @property
    def slow(self) -> bool:
        """Whether `check` hashes (an htpasswd file): then it belongs off the event loop."""
        return self.passwords is not None

    def needs_credentials(self, path: str) -> bool:
        return self.required and path not in self.open_paths

    def allows(self, path: str, authorization: str | None) -> bool:
        """The whole decision at once (slow with an htpasswd file; the server splits it, see Verifier)."""
        if not self.needs_credentials(path):
            return True
        given = credentials(authorization)
        return given is not None and self.check(*given)

    def check(self, user: str, password: str) -> bool:
        """Whether `user` has `password`. An unknown user costs what a known one does (a decoy hash is
        checked), so the time of a refusal does not tell which user names exist."""
        if self.passwords is None:
            return hmac.compare_digest(user.encode(), (self.user or "").encode()) & hmac.compare_digest(
                password.encode(), (self.password or "").encode())
        known = user in self.passwords.users
        matched = self.passwords.check_password(user if known else self.decoy, password)
        return known and matched

    @property
    def decoy(self) -> str:
        """The user whose hash costs the most to check (bcrypt's cost factor): what an unknown user is checked
        against."""
        return max(self.passwords.users, key=lambda name: _hash_cost(self.passwords.users[name]))


def credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic` header, or None."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _hash_cost(stored: str) -> int:
    """bcrypt's cost factor ($2b$12$…: 12); {SHA} costs nothing."""
    parts = stored.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else -1


class Verified:
    """Credentials checked successfully in the last `seconds`, so a page that polls every two seconds does
    not pay a bcrypt each time. Keyed by a salted hash of the credentials (never the password itself);
    at most `size` remembered, the oldest forgotten first."""

    def __init__(self, seconds: float = VERIFIED_SECONDS, size: int = VERIFIED_MAX,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds, self.size, self.clock = seconds, size, clock
        self._salt = os.urandom(16)
        self._until: dict[bytes, float] = {}

    def _key(self, user: str, password: str) -> bytes:
        return hashlib.sha256(self._salt + user.encode() + b"\0" + password.encode()).digest()

    def __contains__(self, given: tuple[str, str]) -> bool:
        key = self._key(*given)
        until = self._until.get(key)
        if until is not None and until <= self.clock():
            del self._until[key]
            return False
        return until is not None

    def add(self, user: str, password: str) -> None:
        key = self._key(user, password)
        self._until.pop(key, None)
        self._until[key] = self.clock() + self.seconds
        while len(self._until) > self.size:
            del self._until[next(iter(self._until))]


class Verifier:
    """Checks Basic credentials for the status server without blocking the event loop: a slow check (bcrypt)
    runs on a pool of `threads` of its own; at most `waiting` checks wait for it, beyond that a request is
    answered 503 at once (a flood of wrong passwords costs two cores' worth of bcrypt, never the proxy's loop
    nor its other threads)."""

    BUSY = None

    def __init__(self, auth: StatusAuth, threads: int = AUTH_THREADS, waiting: int = AUTH_WAITING,
                 verified: Verified | None = None):
        self.auth, self.threads, self.waiting = auth, threads, waiting
        self.verified = verified or Verified()
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0

    async def allows(self, path: str, authorization: str | None) -> bool | None:
        """True or False, or None (BUSY) when too many checks are already waiting."""
        if not self.auth.needs_credentials(path):
            return True
        given = credentials(authorization)
        if given is None:
            return False
        if not self.auth.slow:
            return self.auth.check(*given)
        if given in self.verified:
            return True
        if self._pending >= self.waiting:
            return self.BUSY
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cargo-cache-status-auth")
        self._pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._pool, self.auth.check, *given)
        finally:
            self._pending -= 1
        if ok:
            self.verified.add(*given)
        return ok

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


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
        self.verifier = Verifier(auth)
        self.page = resources.files(__package__).joinpath("status.html").read_bytes()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host or None, self.port)
        except OSError as e:
            # An error: at start-up mitmdump then exits (its errorcheck addon) rather than serve without /healthz,
            # or beside another process answering it; a later restart (an option changed) leaves the proxy serving.
            logger.error("cargo-cache: the status page cannot listen on %s:%d (%s); cargo_status_port=0 runs "
                         "without one", self.host or "*", self.port, os.strerror(e.errno) if e.errno else e)
            return
        bound = self._server.sockets[0].getsockname()
        self.port = bound[1]
        guarded = f"; HTTP Basic auth except {', '.join(sorted(self.auth.open_paths)) or 'nothing'}" if self.auth.required else ""
        logger.info("cargo-cache: status page at http://%s:%d/ (/metrics, /healthz)%s", self.host or "*", self.port,
                    guarded)

    async def stop(self) -> None:
        self.verifier.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, path = _request_line(head)
            extra = ""
            allowed = await self.verifier.allows(path.split("?", 1)[0], _header(head, "authorization"))
            if allowed is Verifier.BUSY:
                status, content_type, body = "503 Service Unavailable", "text/plain", b"busy checking credentials\n"
                extra = "Retry-After: 1\r\n"
            elif not allowed:
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
