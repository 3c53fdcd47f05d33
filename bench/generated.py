"""An upstream registry of made-up crates whose bytes are generated on request: any amount of data to fetch
through the proxy without writing it to disk first (the eviction scenario writes ten times the cache's limit).

    GET /index/config.json                      {"dl": "http://127.0.0.1:PORT/crates"}
    GET /index/<sparse path of name>            one version, 1.0.0, with the cksum of its bytes
    GET /crates/<name>/1.0.0/download           <size> bytes, where <name> ends in `-s<size>`

Each crate's bytes are its own (the SHA-256 of its name before a shared random block), so each is a new blob in
the cache, and the same on every request (the proxy checks a crate against the cksum its index file lists).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = os.urandom(1 << 20)
_CRATE = re.compile(r"^/crates/([a-z0-9_-]+-s(\d+))/1\.0\.0/download$")
_INDEX = re.compile(r"^/index/(?:[a-z0-9_-]+/)+([a-z0-9_-]+-s(\d+))$")


def crate_name(label: str, size: int) -> str:
    return f"{label.lower()}-s{size}"


def pieces(name: str, size: int):
    """The bytes of crate `name`, in pieces of up to 1 MB."""
    first = hashlib.sha256(name.encode()).digest() + BLOCK
    yield memoryview(first)[:min(size, len(first))]
    left = size - min(size, len(first))
    while left > 0:
        yield memoryview(BLOCK)[:min(left, len(BLOCK))]
        left -= min(left, len(BLOCK))


@lru_cache(maxsize=4096)
def cksum(name: str, size: int) -> str:
    digest = hashlib.sha256()
    for piece in pieces(name, size):
        digest.update(piece)
    return digest.hexdigest()


def index_line(name: str, size: int) -> bytes:
    return json.dumps({"name": name, "vers": "1.0.0", "deps": [], "cksum": cksum(name, size), "features": {},
                       "yanked": False, "links": None, "v": 1}).encode() + b"\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/index/config.json":
            body = json.dumps({"dl": f"http://127.0.0.1:{self.server.server_port}/crates"}).encode()
            self._head(200, len(body), "application/json")
            self.wfile.write(body)
            return
        if match := _INDEX.match(self.path):
            body = index_line(match.group(1), int(match.group(2)))
            self._head(200, len(body), "text/plain")
            self.wfile.write(body)
            return
        match = _CRATE.match(self.path)
        if match is None:
            self._head(404, 0, "text/plain")
            return
        name, size = match.group(1), int(match.group(2))
        self.server.served += size
        self._head(200, size, "application/octet-stream")
        for piece in pieces(name, size):
            self.wfile.write(piece)

    def _head(self, status: int, length: int, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        self.end_headers()


class GeneratedUpstream:
    """The server on 127.0.0.1 (a free port), in a thread; a context manager."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.served = 0
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/index/"

    @property
    def served(self) -> int:
        return self.server.served

    def __enter__(self) -> GeneratedUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
