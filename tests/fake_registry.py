"""Fake upstream registries for unit tests: an `httpx.MockTransport` that routes by URL and records
every request, a fake clock, and Settings built through the real proxies.yaml parser.

Test crates have three-letter names so their index path is `3/{first letter}/{name}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml
from cratecache.config import Settings, parse_settings

A, B = "http://a.test/index/", "https://b.test/index/"
A_DL = "http://a.test/dl"  # no markers: Cargo appends /{crate}/{version}/download
B_DL = "https://b.test/files/{prefix}/{crate}-{version}.crate"
INDEX_HOST, DOWNLOAD_HOST = "index.crates.io", "static.crates.io"

Answer = tuple[int, bytes, dict[str, str]] | Callable[[httpx.Request], httpx.Response]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def index_file(name: str, versions: dict[str, bytes]) -> bytes:
    lines = [json.dumps({"name": name, "vers": v, "deps": [], "cksum": sha256(body), "features": {},
                         "yanked": False}) for v, body in versions.items()]
    return "\n".join(lines).encode() + b"\n"


def a_download(name: str, version: str) -> str:
    return f"http://a.test/dl/{name}/{version}/download"


def b_download(name: str, version: str) -> str:
    return f"https://b.test/files/3/{name[0]}/{name}-{version}.crate"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeNet:
    """Every upstream host in one MockTransport. Unknown URLs answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[httpx.Request] = []
        self.delay = 0.0  # seconds each answer takes (for coalescing tests)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.routes.get(str(request.url), (404, b"not found", {}))
        if callable(answer):
            return answer(request)
        status, body, headers = answer
        return httpx.Response(status, content=body, headers=headers)

    def serve(self, url: str, body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.routes[url] = (status, body, headers or {})

    def fail(self, url: str, error: type[httpx.TransportError], message: str = "boom") -> None:
        def raise_error(request: httpx.Request) -> httpx.Response:
            raise error(message, request=request)

        self.routes[url] = raise_error

    def serve_index(self, index_url: str, name: str, body: bytes, etag: str | None = None) -> None:
        """An index file that answers 304 to a matching If-None-Match."""
        def answer(request: httpx.Request) -> httpx.Response:
            if etag and request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            return httpx.Response(200, content=body, headers={"ETag": etag} if etag else {})

        self.routes[f"{index_url}3/{name[0]}/{name}"] = answer

    def registry(self, index_url: str, dl: str, download: Callable[[str, str], str],
                 crates: dict[str, dict[str, bytes]], etag: str | None = None, **config: object) -> None:
        """config.json, one index file per crate and the .crate files."""
        self.serve(index_url + "config.json", json.dumps({"dl": dl, **config}).encode())
        for name, versions in crates.items():
            self.serve_index(index_url, name, index_file(name, versions), etag)
            for version, body in versions.items():
                self.serve(download(name, version), body)

    def asked(self, host: str | None = None) -> list[str]:
        """URLs requested, in order, optionally only those on `host`."""
        return [str(r.url) for r in self.requests if host is None or r.url.host == host]

    def requests_to(self, url: str) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == url]


def upstream(name: str, url: str, **fields: object) -> dict:
    return {"name": name, "url": url, **fields}


def make_settings(tmp_path: Path, upstreams: list[dict], index_ttl: int = 300, **cache: object) -> Settings:
    doc = {
        "cache": {"directory": str(tmp_path / "cache"), "index_ttl": index_ttl, **cache},
        "registries": [{"name": "crates-io", "index_host": INDEX_HOST, "download_host": DOWNLOAD_HOST,
                        "proxies": upstreams}],
    }
    return parse_settings(yaml.safe_dump(doc), tmp_path / "proxies.yaml", env={})
