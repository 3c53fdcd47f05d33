"""Upstream redirects through the real transport (aiohttp under httpx) against real loopback servers: followed to
the hosts an upstream's policy allows, without its credentials on another origin; refused, with the reason, to any
other host or to a name that resolves to an internal address; bounded in number."""

from __future__ import annotations

import socket

import pytest
from cratecache.config import Upstream
from cratecache.upstreams.client import MAX_REDIRECTS, UpstreamClient, UpstreamError, upstream_transport, walk

from tests.fixtures.upstream import UpstreamServer, basic_auth_header

USER, PASSWORD = "ci", "s3cret-redirect"


@pytest.fixture
def mirror(registry):
    """The upstream: Basic auth, redirects set per test."""
    with UpstreamServer(registry, name="mirror", auth=(USER, PASSWORD)) as server:
        yield server


@pytest.fixture
def storage(registry):
    """Where a redirect may send the download (object storage), no auth."""
    with UpstreamServer(registry, name="storage") as server:
        yield server


@pytest.fixture
def crate(registry):
    return next(iter(registry.crates.values()))


def download_path(crate) -> str:
    return f"/crates/{crate.name}/{crate.version}/download"


def upstream(server: UpstreamServer, **fields) -> Upstream:
    return Upstream(name="mirror", url=server.url, username=USER, password=PASSWORD, timeout_ms=5000, **fields)


async def fetch(client: UpstreamClient, url: str):
    try:
        return await client.get(url)
    finally:
        await client.aclose()


async def test_a_redirect_to_a_download_host_is_followed_and_the_credentials_stay_home(mirror, storage, crate):
    path = download_path(crate)
    elsewhere = f"localhost:{storage.port}"  # another origin: another host name and port
    mirror.redirects[path] = f"http://{elsewhere}{path}"
    client = UpstreamClient(upstream(mirror, download_hosts=(elsewhere,)))

    got = await fetch(client, mirror.root + path)

    assert (got.status, got.body) == (200, crate.data)
    assert [r.headers.get("authorization") for r in mirror.requests] == [basic_auth_header(USER, PASSWORD)]
    assert [(r.path, r.headers.get("authorization")) for r in storage.requests] == [(path, None)]


async def test_a_redirect_back_to_its_own_origin_carries_the_credentials_again(mirror, crate):
    mirror.redirects["/old/location"] = download_path(crate)  # relative, same origin
    got = await fetch(UpstreamClient(upstream(mirror)), mirror.root + "/old/location")
    assert (got.status, got.body) == (200, crate.data)
    assert [r.headers.get("authorization") for r in mirror.requests] == [basic_auth_header(USER, PASSWORD)] * 2


async def test_a_redirect_to_a_host_that_is_not_configured_is_refused_with_the_reason(mirror, storage, crate):
    """A compromised mirror sends the proxy to another service on the proxy's own loopback: never asked."""
    path = download_path(crate)
    mirror.redirects[path] = f"{storage.root}{path}?X-Amz-Signature=secret"  # 127.0.0.1, another port
    client = UpstreamClient(upstream(mirror))

    async def attempt(c: UpstreamClient):
        await c.get(mirror.root + path)
        raise AssertionError("followed")

    result, attempts = await walk([client], attempt)
    await client.aclose()

    assert result is None
    assert attempts[0].detail == (f"redirect to http://127.0.0.1:{storage.port} refused: neither its own host, a "
                                  "sibling of it under the same parent domain, nor in its download_hosts")
    assert storage.requests == []


class Pointing:
    """Name resolution where every name is 127.0.0.1 (as a hostile DNS answer makes it), at the given ports."""

    def __init__(self, ports: dict[tuple[str, int], int]):
        self.ports, self.asked = ports, []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        self.asked.append(host)
        return [{"hostname": host, "host": "127.0.0.1", "port": self.ports.get((host, port), port),
                 "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def test_a_sibling_name_that_resolves_to_loopback_is_refused_when_connecting(mirror, storage, crate):
    """index.example.test may send downloads to its sibling static.example.test, but not when that name resolves to
    an internal address: the upstream's own host is configured, its sibling is not."""
    path = download_path(crate)
    own = f"index.example.test:{mirror.port}"
    mirror.redirects[path] = f"http://static.example.test{path}"  # a sibling on the default port
    resolver = Pointing({("static.example.test", 80): storage.port})  # where it would land without the check
    up = Upstream(name="mirror", url=f"http://{own}/index/", username=USER, password=PASSWORD)
    client = UpstreamClient(up, transport=upstream_transport(up, resolver))

    async def attempt(c: UpstreamClient):
        await c.get(f"http://{own}{path}")
        raise AssertionError("followed")

    result, attempts = await walk([client], attempt)
    await client.aclose()

    assert result is None and len(mirror.requests) == 1  # its own name resolves to loopback too, and is allowed
    assert attempts[0].detail == ("static.example.test resolves to 127.0.0.1, a loopback address, and is neither its "
                                  "own host nor in its download_hosts: not connected")
    assert storage.requests == []
    assert "static.example.test" in resolver.asked


async def test_a_sibling_named_in_download_hosts_may_be_internal(mirror, storage, crate):
    path = download_path(crate)
    own = f"index.example.test:{mirror.port}"
    mirror.redirects[path] = f"http://static.example.test{path}"
    resolver = Pointing({("static.example.test", 80): storage.port})
    up = Upstream(name="mirror", url=f"http://{own}/index/", username=USER, password=PASSWORD,
                  download_hosts=("static.example.test",))
    got = await fetch(UpstreamClient(up, transport=upstream_transport(up, resolver)), f"http://{own}{path}")
    assert (got.status, got.body) == (200, crate.data)
    assert [r.path for r in storage.requests] == [path]


async def test_a_redirect_loop_ends_after_a_bounded_number_of_requests(mirror):
    mirror.redirects["/loop"] = mirror.root + "/loop"
    with pytest.raises(UpstreamError, match=rf"too many redirects \(more than {MAX_REDIRECTS}\)"):
        await fetch(UpstreamClient(upstream(mirror)), mirror.root + "/loop")
    assert len(mirror.requests) == MAX_REDIRECTS + 1
