"""What the proxy decrypts and answers, seen by an HTTP client going through the real mitmdump."""

from __future__ import annotations

import asyncio
import ssl

import httpx

from tests.e2e.conftest import PASSWORD, USER


def client(proxy, cafile) -> httpx.AsyncClient:
    return httpx.AsyncClient(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(cafile)),
                             trust_env=False, timeout=20)


async def test_other_hosts_are_tunnelled_untouched(primary, secondary, entry, start_proxy, upstream_ca_file):
    proxy = start_proxy([entry(secondary)], args=("--set", "cargo_tunnel_loopback=true"))  # primary is on loopback

    # The upstream's own certificate reaches the client: only a tunnel passes that check.
    async with client(proxy, upstream_ca_file) as c:
        response = await c.get(primary.url + "config.json", auth=(USER, PASSWORD))

    assert response.status_code == 200
    assert "x-cache" not in response.headers
    assert primary.paths() == ["/index/config.json"]


async def test_registry_hosts_are_answered_by_the_proxy(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])

    async with client(proxy, proxy.ca_cert) as c:
        config = await c.get("https://index.crates.io/config.json")
        index = await c.get("https://index.crates.io/an/yh/anyhow")
        head = await c.head("https://index.crates.io/an/yh/anyhow")
        again = await c.get("https://index.crates.io/an/yh/anyhow", headers={"If-None-Match": index.headers["etag"]})

    assert config.json() == {"dl": "https://static.crates.io/crates"}
    assert index.status_code == 200 and index.headers["x-cache-upstream"] == "secondary"
    assert b'"name":"anyhow"' in index.content
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(index.content))
    assert again.status_code == 304 and again.content == b""
    # A conditional second ask on one connection is what Cargo sends when a locked version is missing: it is
    # revalidated upstream (a 304 there too), and the HEAD before it was answered from the cache.
    assert secondary.paths().count("/index/an/yh/anyhow") == 2


async def test_bad_requests_get_a_one_line_reason(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])

    async with client(proxy, proxy.ca_cert) as c:
        traversal = await c.get("https://static.crates.io/crates/..%2F..%2Fetc/passwd/download")
        layout = await c.get("https://index.crates.io/se/rv/serde")
        overlong = await c.get("https://index.crates.io/ab/cd/abcd" + "x" * 70)
        post = await c.post("https://index.crates.io/config.json", content=b"{}")

    assert traversal.status_code == 400 and traversal.text == "percent-encoded characters are not allowed in registry paths\n"
    assert layout.status_code == 404 and "expected /se/rd/serde" in layout.text
    assert overlong.status_code == 400 and "longer than 64" in overlong.text
    assert post.status_code == 405
    assert secondary.requests == []


async def test_a_slow_upstream_does_not_delay_cache_hits(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])
    async with client(proxy, proxy.ca_cert) as warm:
        assert (await warm.get("https://index.crates.io/an/yh/anyhow")).status_code == 200
    secondary.delay = 3.0

    async with client(proxy, proxy.ca_cert) as slow_client, client(proxy, proxy.ca_cert) as hit_client:
        slow = asyncio.create_task(slow_client.get("https://index.crates.io/3/l/log"))
        await asyncio.sleep(0.3)  # the miss is now waiting on the upstream
        hit = await hit_client.get("https://index.crates.io/an/yh/anyhow")
        slow_was_pending = not slow.done()
        miss = await slow

    assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
    assert slow_was_pending  # the hit was answered while the miss was still waiting
    assert miss.status_code == 200 and miss.headers["x-cache"] == "MISS"
