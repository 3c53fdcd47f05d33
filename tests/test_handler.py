"""handler.py: registry requests -> replies, driven through a real Resolver over fake registries."""

from __future__ import annotations

import json

import httpx
import pytest
from cratecache.boundary.handler import entry_reply, handle
from cratecache.resolver import Resolver, Served
from cratecache.storage import Entry, Meta, open_storage
from mitmproxy.http import Headers

from tests.fake_registry import (
    A_DL,
    B_DL,
    DOWNLOAD_HOST,
    INDEX_HOST,
    A,
    B,
    FakeNet,
    a_download,
    b_download,
    index_file,
    make_settings,
    sha256,
    upstream,
)

FOO = b"\x1f\x8b foo 1.0.0"
FOO_INDEX = index_file("foo", {"1.0.0": FOO})
FOO_ETAG = f'"{sha256(FOO_INDEX)[:32]}"'
NOW_HTTP = "Tue, 14 Nov 2023 22:13:20 GMT"  # Clock()'s start


@pytest.fixture
def net() -> FakeNet:
    net = FakeNet()
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO}})
    net.registry(B, B_DL, b_download, {"foo": {"1.0.0": FOO}})
    return net


@pytest.fixture
async def resolver(tmp_path, net, clock):
    settings = make_settings(tmp_path, [upstream("a", A), upstream("b", B)])
    resolver = Resolver(settings, open_storage(settings.cache), clock=clock,
                        transport=net.transport())
    yield resolver
    await resolver.aclose()
    await resolver.store.close()


async def get(resolver: Resolver, path: str, method: str = "GET", host: str = INDEX_HOST, **headers: str):
    """As the addon calls it: mitmproxy's case-insensitive request headers."""
    return await handle(resolver, resolver.settings.registries[0], method, host, path, Headers(**headers))


async def test_index_reply_headers(resolver):
    reply = await get(resolver, "/3/f/foo")
    assert (reply.status, reply.body, reply.state, reply.source, reply.kind) == (200, FOO_INDEX, "miss", "a", "index")
    assert reply.headers == {
        "Content-Type": "text/plain; charset=utf-8",
        "ETag": FOO_ETAG,  # strong, from the bytes: the same whichever upstream supplied them
        "Last-Modified": NOW_HTTP,  # the upstream sent none: when the bytes were stored
        "X-Cache": "MISS",
        "X-Cache-Upstream": "a",
        "Accept-Ranges": "bytes",
    }
    again = await get(resolver, "/3/f/foo")
    assert (again.status, again.body, again.headers["X-Cache"], again.source) == (200, FOO_INDEX, "HIT", "cache")
    assert again.headers["ETag"] == FOO_ETAG


async def test_upstream_last_modified_is_passed_on(resolver, net):
    net.serve(A + "3/f/foo", FOO_INDEX, headers={"Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"})
    reply = await get(resolver, "/3/f/foo")
    assert reply.headers["Last-Modified"] == "Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize("headers, status", [
    ({"If-None-Match": FOO_ETAG}, 304),
    ({"If-None-Match": f'"other", {FOO_ETAG}'}, 304),
    ({"If-None-Match": f"W/{FOO_ETAG}"}, 304),
    ({"If-None-Match": "*"}, 304),
    ({"If-None-Match": '"other"'}, 200),
    ({"If-Modified-Since": NOW_HTTP}, 304),
    ({"If-Modified-Since": "Mon, 13 Nov 2023 00:00:00 GMT"}, 200),
    ({"If-None-Match": '"other"', "If-Modified-Since": NOW_HTTP}, 200),  # If-None-Match wins
])
async def test_conditional_index_request(resolver, headers, status):
    await get(resolver, "/3/f/foo")
    reply = await get(resolver, "/3/f/foo", **headers)
    assert reply.status == status
    assert reply.body == (b"" if status == 304 else FOO_INDEX)
    assert (reply.headers["ETag"], reply.size) == (FOO_ETAG, len(FOO_INDEX))


async def test_crate_is_always_a_full_200(resolver):
    """Cargo requires exactly 200 for a .crate, so If-None-Match is not honoured there."""
    first = await get(resolver, "/crates/foo/1.0.0/download", host=DOWNLOAD_HOST)
    etag = first.headers["ETag"]
    reply = await get(resolver, "/crates/foo/foo-1.0.0.crate", host=DOWNLOAD_HOST, **{"If-None-Match": etag})
    assert (reply.status, reply.body, reply.state) == (200, FOO, "hit")
    assert reply.headers["Content-Type"] == "application/gzip"
    assert etag == f'"{sha256(FOO)[:32]}"'


async def test_head_has_no_body_but_the_entity_length(resolver, net):
    reply = await get(resolver, "/crates/foo/1.0.0/download", method="HEAD", host=DOWNLOAD_HOST)
    assert (reply.status, reply.body, reply.size) == (200, b"", len(FOO))
    assert reply.headers["Content-Length"] == str(len(FOO))
    assert net.asked().count(a_download("foo", "1.0.0")) == 1  # HEAD fills the cache like GET


async def test_config_reply(resolver):
    reply = await get(resolver, "/config.json")
    assert (reply.status, reply.headers["Content-Type"]) == (200, "application/json")
    assert json.loads(reply.body) == {"dl": f"https://{DOWNLOAD_HOST}/crates"}


async def test_stale_reply_carries_a_warning(resolver, net, clock):
    await get(resolver, "/3/f/foo")
    net.fail(A + "3/f/foo", httpx.ConnectError)
    net.fail(B + "3/f/foo", httpx.ConnectError)
    clock.advance(3600)
    reply = await get(resolver, "/3/f/foo")
    assert (reply.status, reply.body, reply.state, reply.headers["X-Cache"]) == (200, FOO_INDEX, "stale", "STALE")
    assert reply.headers["Warning"].startswith("110 ")


async def test_fresh_reply_has_no_warning(resolver):
    assert "Warning" not in (await get(resolver, "/3/f/foo")).headers


async def test_not_found_is_404(resolver):
    reply = await get(resolver, "/3/z/zzz")
    assert (reply.status, reply.state, reply.kind) == (404, "not_found", "index")
    assert reply.body == b"crate zzz not found on any upstream\n"


async def test_unavailable_is_502_with_each_upstream_outcome(resolver, net):
    net.serve(A + "3/z/zzz", b"", 503)
    reply = await get(resolver, "/3/z/zzz")
    assert (reply.status, reply.state) == (502, "error")
    assert b"a: HTTP 503; b: HTTP 404" in reply.body
    assert reply.body.count(b"\n") == 1 and reply.body.endswith(b"\n")


@pytest.mark.parametrize("method, host, path, status", [
    ("POST", INDEX_HOST, "/3/f/foo", 405),
    ("GET", INDEX_HOST, "/3/f/foo?x=1", 400),
    ("GET", INDEX_HOST, "/3/f/../foo", 400),
    ("GET", INDEX_HOST, "/3/f/Foo", 404),
    ("GET", INDEX_HOST, "/not/an/index/path", 404),
    ("GET", DOWNLOAD_HOST, "/crates/foo/not-semver/download", 400),
])
async def test_rejection_is_its_status_with_one_line(resolver, net, method, host, path, status):
    reply = await get(resolver, path, method=method, host=host)
    assert (reply.status, reply.state) == (status, "rejected")
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.body.count(b"\n") == 1 and reply.body.endswith(b"\n") and len(reply.body) > 1
    assert net.asked() == []


def test_entry_reply_labels_the_state_and_upstream():
    meta = Meta(sha256=sha256(FOO), size=len(FOO), upstream="b", stored_at=0.0, checked_at=0.0)
    reply = entry_reply("crate", Served(Entry(meta, FOO), "cache", "stale"), {})
    assert (reply.headers["X-Cache"], reply.headers["X-Cache-Upstream"]) == ("STALE", "b")
    assert reply.headers["Last-Modified"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert "Warning" in reply.headers


async def test_an_unexpected_error_is_a_500_never_a_pass_through(resolver, caplog):
    async def broken(route):
        raise TypeError("an old cache entry")

    resolver.resolve = broken
    reply = await get(resolver, "/3/f/foo")
    assert (reply.status, reply.body, reply.state) == (500, b"cargo-cache internal error: TypeError\n", "error")
    assert "internal error on GET index.crates.io/3/f/foo" in caplog.text
