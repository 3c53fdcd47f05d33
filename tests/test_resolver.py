"""resolver.py: cache -> upstreams in priority order -> cache, over fake registries (no sockets)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import httpx
import pytest
from cratecache.resolver import NotFound, NotStaged, Resolver, Unavailable
from cratecache.storage import open_storage
from cratecache.storage.disk import DiskStorage
from cratecache.storage.local import LocalStore

from tests.fake_registry import (
    A_DL,
    B_DL,
    A,
    B,
    FakeNet,
    a_download,
    b_download,
    index_file,
    make_settings,
    upstream,
)

FOO = b"\x1f\x8b foo 1.0.0 from the registry"
FOO_NEW = b"\x1f\x8b foo 1.1.0 from the registry"
A_FOO = A + "3/f/foo"
B_FOO = B + "3/f/foo"
TWO = [upstream("a", A, priority=1, timeout_ms=500), upstream("b", B, priority=2)]


@pytest.fixture
def net() -> FakeNet:
    net = FakeNet()
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO}}, etag='"a-foo-1"',
                 api="https://a.test/api", **{"auth-required": True})
    net.registry(B, B_DL, b_download, {"foo": {"1.0.0": FOO}}, etag='"b-foo-1"')
    return net


@pytest.fixture
async def make(tmp_path, net, clock):
    made: list[Resolver] = []

    def make(upstreams: list[dict] = TWO, index_ttl: int = 300, **cache) -> Resolver:
        settings = make_settings(tmp_path, upstreams, index_ttl, **cache)
        resolver = Resolver(settings, open_storage(settings.cache),
                            clock=clock, transport=net.transport())
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.aclose()
        await resolver.store.close()


@pytest.fixture
def resolver(make) -> Resolver:
    return make()


@pytest.fixture
def reg(resolver):
    return resolver.settings.registries[0]


# -- priority order ------------------------------------------------------------------------------

async def test_first_upstream_answers_and_the_next_is_never_asked(resolver, reg, net):
    served = await resolver.index(reg, "foo")
    assert (served.state, served.source, served.entry.body) == ("miss", "a", index_file("foo", {"1.0.0": FOO}))
    assert net.asked() == [A_FOO]


async def test_lower_priority_number_goes_first_whatever_the_list_order(make, net):
    resolver = make([upstream("b", B, priority=5), upstream("a", A, priority=1)])
    served = await resolver.index(resolver.settings.registries[0], "foo")
    assert served.source == "a"
    assert net.asked("b.test") == []


async def test_inactive_upstream_is_never_asked(make, net):
    resolver = make([upstream("a", A, priority=1, active=False), upstream("b", B, priority=2)])
    served = await resolver.index(resolver.settings.registries[0], "foo")
    assert served.source == "b"
    assert net.asked("a.test") == []


# -- failures on one upstream --------------------------------------------------------------------

@pytest.mark.parametrize("status", [404, 410, 451])
async def test_not_found_on_first_upstream_falls_through(resolver, reg, net, status):
    net.serve(A_FOO, b"gone", status)
    served = await resolver.index(reg, "foo")
    assert served.source == "b"
    assert net.asked() == [A_FOO, B_FOO]


async def test_not_found_everywhere_is_not_found(resolver, reg, net):
    with pytest.raises(NotFound, match="crate zzz not found on any upstream"):
        await resolver.index(reg, "zzz")
    assert net.asked() == [A + "3/z/zzz", B + "3/z/zzz"]


@pytest.mark.parametrize("status", [503, 401])
async def test_failure_then_not_found_is_unavailable_listing_both(resolver, reg, net, status):
    net.serve(A + "3/z/zzz", b"", status)
    with pytest.raises(Unavailable) as info:
        await resolver.index(reg, "zzz")
    assert f"a: HTTP {status}; b: HTTP 404" in str(info.value)
    assert [a.outcome for a in info.value.attempts] == ["failed", "not_found"]


@pytest.mark.parametrize("error, detail", [(httpx.ConnectError, "a: connection failed: refused"),
                                           (httpx.ReadTimeout, "a: ReadTimeout after ")])
async def test_transport_error_moves_on_to_next_upstream(resolver, reg, net, error, detail):
    net.fail(A_FOO, error, "refused")
    net.fail(A + "3/z/zzz", error, "refused")
    served = await resolver.index(reg, "foo")
    assert served.source == "b"
    assert str(served.attempts[0]).startswith(detail)
    with pytest.raises(Unavailable, match=detail):
        await resolver.index(reg, "zzz")


@pytest.mark.parametrize("body", [b"<!DOCTYPE html><html><body>Sign in</body></html>",
                                  index_file("bar", {"1.0.0": FOO})], ids=["html", "other-crate"])
async def test_invalid_index_is_a_failure_and_is_not_stored(resolver, reg, net, body):
    net.serve(A_FOO, body)
    served = await resolver.index(reg, "foo")
    assert served.source == "b"
    assert served.attempts[0].outcome == "failed"
    assert "invalid index file" in served.attempts[0].detail
    stored = await resolver.store.get("index/crates-io/foo")
    assert (stored.meta.upstream, stored.body) == ("b", index_file("foo", {"1.0.0": FOO}))


# -- crates --------------------------------------------------------------------------------------

async def test_checksum_mismatch_uses_next_upstream_and_stores_good_bytes(resolver, reg, net):
    net.serve(a_download("foo", "1.0.0"), b"tampered")
    served = await resolver.crate(reg, "foo", "1.0.0")
    assert (served.source, served.entry.body) == ("b", FOO)
    assert "checksum mismatch" in served.attempts[0].detail
    assert (await resolver.store.get("crate/crates-io/foo/1.0.0")).body == FOO


async def test_checksum_mismatch_everywhere_is_unavailable_and_stores_nothing(resolver, reg, net):
    net.serve(a_download("foo", "1.0.0"), b"tampered")
    net.serve(b_download("foo", "1.0.0"), b"tampered too")
    with pytest.raises(Unavailable, match="checksum mismatch"):
        await resolver.crate(reg, "foo", "1.0.0")
    assert await resolver.store.get("crate/crates-io/foo/1.0.0") is None


async def test_crate_is_asked_first_from_the_upstream_that_served_the_index(resolver, reg, net):
    net.serve(A_FOO, b"", 404)
    served = await resolver.crate(reg, "foo", "1.0.0")
    assert (served.source, served.entry.body) == ("b", FOO)
    assert net.asked("b.test")[-1] == b_download("foo", "1.0.0")  # dl with markers expanded
    assert a_download("foo", "1.0.0") not in net.asked()


async def test_version_missing_from_index_is_not_found(resolver, reg, net):
    with pytest.raises(NotFound, match="foo 9.9.9 is not listed in the index"):
        await resolver.crate(reg, "foo", "9.9.9")
    assert not [url for url in net.asked() if "9.9.9" in url]


async def test_version_missing_from_fresh_index_forces_one_refresh(resolver, reg, net):
    await resolver.index(reg, "foo")
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO, "1.1.0": FOO_NEW}}, etag='"a-foo-2"')
    served = await resolver.crate(reg, "foo", "1.1.0")
    assert (served.source, served.entry.body) == ("a", FOO_NEW)
    assert net.asked().count(A_FOO) == 2
    with pytest.raises(NotFound, match="not listed"):
        await resolver.crate(reg, "foo", "9.9.9")
    assert net.asked().count(A_FOO) == 2  # that index was refreshed for 1.1.0 just now


async def test_a_client_asking_again_for_an_index_file_revalidates_it_at_most_once_per_ten_seconds(
    resolver, reg, net, clock
):
    from cratecache.boundary.routes import IndexRoute

    route = IndexRoute(reg, "foo")
    await resolver.resolve(route)
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO, "1.1.0": FOO_NEW}}, etag='"a-foo-2"')  # published
    assert b"1.1.0" not in (await resolver.resolve(route)).entry.body  # asked once: fresh for index_ttl
    served = await resolver.resolve(route, reasked=True)  # Cargo's re-ask: the new version is there at once
    assert b"1.1.0" in served.entry.body and served.state == "updated"
    for _ in range(20):
        assert (await resolver.resolve(route, reasked=True)).state == "hit"
    assert net.asked().count(A_FOO) == 2
    clock.advance(10)
    assert (await resolver.resolve(route, reasked=True)).state == "revalidated"
    assert net.asked().count(A_FOO) == 3


async def test_made_up_versions_force_at_most_one_revalidation_per_index_per_ten_seconds(resolver, reg, net, clock):
    await resolver.index(reg, "foo")
    for n in range(20):
        with pytest.raises(NotFound, match="not listed"):
            await resolver.crate(reg, "foo", f"0.0.{n}")
    assert net.asked().count(A_FOO) == 2  # the first fetch, and one forced revalidation
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO, "1.1.0": FOO_NEW}}, etag='"a-foo-2"')
    with pytest.raises(NotFound, match="checked less than 10 s ago"):
        await resolver.crate(reg, "foo", "1.1.0")  # published meanwhile: not remembered as missing...
    clock.advance(10)
    served = await resolver.crate(reg, "foo", "1.1.0")  # ...so found once the window has passed
    assert served.entry.body == FOO_NEW and net.asked().count(A_FOO) == 3


# -- credentials and config.json -----------------------------------------------------------------

async def test_credentials_go_to_the_upstream_origin_only(make, net):
    resolver = make([upstream("a", A, username="ci", password="s3cret", download_hosts=["cdn.test"])])
    net.registry(A, "http://cdn.test/dl", lambda n, v: f"http://cdn.test/dl/{n}/{v}/download",
                 {"foo": {"1.0.0": FOO}})
    served = await resolver.crate(resolver.settings.registries[0], "foo", "1.0.0")
    assert served.entry.body == FOO
    basic = "Basic " + base64.b64encode(b"ci:s3cret").decode()
    assert [r.headers.get("authorization") for r in net.requests if r.url.host == "a.test"] == [basic, basic]
    (download,) = [r for r in net.requests if r.url.host == "cdn.test"]
    assert "authorization" not in download.headers


async def test_config_points_downloads_at_the_intercepted_host(resolver, reg):
    served = await resolver.config(reg)
    assert (served.state, served.source) == ("miss", "a")
    # a.test is a mirror, not index.crates.io itself: its API is not handed to Cargo
    assert json.loads(served.entry.body) == {"dl": "https://static.crates.io/crates"}


# -- freshness -----------------------------------------------------------------------------------

async def test_within_ttl_no_upstream_is_asked(resolver, reg, net, clock):
    first = await resolver.index(reg, "foo")
    clock.advance(299)
    again = await resolver.index(reg, "foo")
    assert (again.state, again.source, again.entry.body) == ("hit", "cache", first.entry.body)
    assert net.asked() == [A_FOO]


async def test_after_ttl_revalidation_returns_to_the_preferred_upstream_once_it_has_the_crate(resolver, reg, net, clock):
    net.serve(A_FOO, b"", 404)
    first = await resolver.index(reg, "foo")
    assert first.source == "b"
    clock.advance(301)
    still = await resolver.index(reg, "foo")  # a still lacks it: b confirms its copy
    assert (still.state, still.source, still.entry.body) == ("revalidated", "b", first.entry.body)
    assert net.requests[-1].headers["if-none-match"] == '"b-foo-1"'
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO}})  # the preferred upstream has it now
    clock.advance(301)
    again = await resolver.index(reg, "foo")
    assert (again.state, again.source) == ("updated", "a")  # priority order, not the last one that answered
    assert "if-none-match" not in net.requests[-1].headers  # b's validator means nothing to a
    assert net.asked()[-1] == A_FOO and net.asked().count(B_FOO) == 2
    crate = await resolver.crate(reg, "foo", "1.0.0")
    assert crate.source == "a"  # downloads follow the index's upstream
    assert again.entry.meta.checked_at == clock.now
    assert (await resolver.store.get("index/crates-io/foo")).meta.checked_at == clock.now


async def test_after_ttl_a_200_replaces_the_body(resolver, reg, net, clock):
    await resolver.index(reg, "foo")
    newer = index_file("foo", {"1.0.0": FOO, "1.1.0": FOO_NEW})
    net.serve_index(A, "foo", newer, etag='"a-foo-2"')
    clock.advance(301)
    served = await resolver.index(reg, "foo")
    assert (served.source, served.entry.body, served.entry.meta.etag) == ("a", newer, '"a-foo-2"')
    assert (await resolver.store.get("index/crates-io/foo")).body == newer


async def test_after_ttl_with_every_upstream_failing_serves_stale(resolver, reg, net, clock):
    first = await resolver.index(reg, "foo")
    net.fail(A_FOO, httpx.ConnectError)
    net.serve(B_FOO, b"", 503)
    clock.advance(301)
    served = await resolver.index(reg, "foo")
    assert (served.state, served.source, served.entry.body) == ("stale", "cache", first.entry.body)
    assert [a.outcome for a in served.attempts] == ["failed", "failed"]


async def test_ttl_zero_revalidates_every_time(make, net):
    resolver = make(index_ttl=0)
    reg = resolver.settings.registries[0]
    states = [(await resolver.index(reg, "foo")).state for _ in range(3)]
    assert states == ["miss", "revalidated", "revalidated"]
    assert [r.headers.get("if-none-match") for r in net.requests] == [None, '"a-foo-1"', '"a-foo-1"']


# -- coalescing ----------------------------------------------------------------------------------

async def test_concurrent_index_misses_share_one_upstream_request(resolver, reg, net):
    net.delay = 0.05
    served = await asyncio.gather(*(resolver.index(reg, "foo") for _ in range(10)))
    assert {s.entry.body for s in served} == {index_file("foo", {"1.0.0": FOO})}
    assert net.asked() == [A_FOO]


async def test_concurrent_crate_misses_share_one_download(resolver, reg, net):
    net.delay = 0.05
    served = await asyncio.gather(*(resolver.crate(reg, "foo", "1.0.0") for _ in range(10)))
    assert {s.entry.body for s in served} == {FOO}
    assert net.asked().count(a_download("foo", "1.0.0")) == 1
    assert net.asked().count(A_FOO) == 1


async def test_two_processes_sharing_a_cache_folder_fetch_once(make, net):
    """Each resolver has its own Store on the same folder, like two mitmdump workers."""
    net.delay = 0.2
    first, second = make(), make()
    reg = first.settings.registries[0]
    served = await asyncio.gather(first.crate(reg, "foo", "1.0.0"), second.crate(reg, "foo", "1.0.0"))
    assert {s.entry.body for s in served} == {FOO}
    assert net.asked().count(a_download("foo", "1.0.0")) == 1
    assert net.asked().count(A_FOO) == 1
    assert sorted(s.state for s in served) == ["hit", "miss"]


async def test_a_lease_left_by_a_dead_process_delays_only_until_it_expires(make, net):
    resolver = make(lease_seconds=1)
    reg = resolver.settings.registries[0]
    assert resolver.store.local.acquire_lease("crate/crates-io/foo/1.0.0", 1)  # its holder never releases it
    served = await resolver.crate(reg, "foo", "1.0.0")
    assert served.state == "miss" and sorted(net.asked()) == sorted([A + "config.json", A_FOO, a_download("foo", "1.0.0")])


# -- negative cache and back-off -----------------------------------------------------------------

async def test_a_crate_no_upstream_has_is_remembered(resolver, reg, net):
    for _ in range(3):
        with pytest.raises(NotFound):
            await resolver.index(reg, "zzz")
    assert net.asked() == [A + "3/z/zzz", B + "3/z/zzz"]


async def test_negative_ttl_zero_remembers_nothing(make, net):
    resolver = make(negative_ttl=0)
    reg = resolver.settings.registries[0]
    for _ in range(2):
        with pytest.raises(NotFound):
            await resolver.index(reg, "zzz")
    assert len(net.asked()) == 4


async def test_an_unreachable_upstream_is_skipped_during_its_back_off(make, net, clock, caplog):
    caplog.set_level(logging.INFO)
    for name in ("bar", "baz", "qux", "quu"):
        net.registry(B, B_DL, b_download, {name: {"1.0.0": FOO}})
    net.fail(A + "config.json", httpx.ConnectError, "connection refused")
    for name in ("bar", "baz", "qux", "quu"):
        net.fail(f"{A}3/{name[0]}/{name}", httpx.ConnectError, "connection refused")
    resolver = make(upstream_backoff=30, backoff_after=3)
    reg = resolver.settings.registries[0]

    for name in ("bar", "baz", "qux"):
        assert (await resolver.index(reg, name)).source == "b"
    skipped = await resolver.index(reg, "quu")
    clock.advance(31)
    net.registry(A, A_DL, a_download, {"zed": {"1.0.0": FOO}})
    retried = await resolver.index(reg, "zed")

    assert [u for u in net.asked("a.test")] == [A + "3/b/bar", A + "3/b/baz", A + "3/q/qux", A + "3/z/zed"]
    assert skipped.source == "b" and skipped.attempts[0].detail.startswith("skipped: backing off")
    assert retried.source == "a"
    assert "upstream a: 3 consecutive failures" in caplog.text
    assert "upstream a: back-off over, trying it again" in caplog.text


# -- limits and a failing disk -------------------------------------------------------------------

async def test_an_oversized_crate_is_refused_and_the_next_upstream_used(make, net):
    big = b"\x1f\x8b" + b"x" * 5000
    net.registry(A, A_DL, a_download, {"big": {"1.0.0": big}})
    net.registry(B, B_DL, b_download, {"big": {"1.0.0": b"\x1f\x8b small"}})
    net.serve_index(B, "big", index_file("big", {"1.0.0": big}))  # b's index agrees with a's
    net.serve(b_download("big", "1.0.0"), big[:1500])  # a truncated copy: smaller but wrong
    resolver = make(max_crate_size="2KiB")
    reg = resolver.settings.registries[0]
    with pytest.raises(Unavailable) as failure:
        await resolver.crate(reg, "big", "1.0.0")
    assert "a: answer too large: 5002 bytes (limit 2048)" in str(failure.value)
    assert await resolver.store.get("crate/crates-io/big/1.0.0") is None


async def test_a_full_disk_still_answers_and_logs_an_error(make, net, caplog):
    class FullDisk(LocalStore):
        def put(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    resolver = make()
    await resolver.store.close()
    resolver.store = DiskStorage(FullDisk(resolver.store.directory, 10**9))
    served = await resolver.crate(resolver.settings.registries[0], "foo", "1.0.0")
    assert served.entry.body == FOO and served.state == "miss"
    # one warning (issue 30: once a minute, not per request), naming the first write that failed (the index file
    # read before the crate) and why; the crate is then passed through without another failing write
    assert "cache write failed for index/crates-io/foo (OSError: [Errno 28] No space left on device)" in caplog.text
    assert caplog.text.count("cache write failed") == 1
    assert "disk full" in caplog.text


async def test_a_version_missing_from_a_stale_index_is_unavailable_not_missing(make, net, clock):
    resolver = make()
    reg = resolver.settings.registries[0]
    await resolver.index(reg, "foo")
    clock.advance(301)
    for url in (A_FOO, B_FOO):
        net.fail(url, httpx.ConnectError, "connection refused")
    with pytest.raises(Unavailable, match="foo 1.1.0: not in the cached index, and no upstream could be asked"):
        await resolver.crate(reg, "foo", "1.1.0")
    assert await resolver.store.negative("crate/crates-io/foo/1.1.0") is None


async def test_concurrent_downloads_share_one_upstream_config_request(make, net):
    names = ("bar", "baz", "qux", "quu")
    net.registry(A, A_DL, a_download, {n: {"1.0.0": FOO} for n in names})
    net.delay = 0.05
    resolver = make()
    reg = resolver.settings.registries[0]
    await asyncio.gather(*(resolver.crate(reg, n, "1.0.0") for n in names))
    assert net.asked().count(A + "config.json") == 1


async def test_a_trickle_within_the_read_timeout_is_cut_by_the_overall_deadline(make, net):
    async def trickle():
        for _ in range(100):
            await asyncio.sleep(0.05)  # well within the 100 ms read timeout
            yield b'{"name":"foo"'

    net.routes[A_FOO] = lambda request: httpx.Response(200, content=trickle())
    resolver = make([upstream("a", A, timeout_ms=100), upstream("b", B, priority=2)])
    served = await resolver.index(resolver.settings.registries[0], "foo")
    assert served.source == "b"
    assert served.attempts[0].detail == "transfer not finished within 1 s"


async def test_a_dl_that_names_another_host_is_never_asked(make, net):
    """A compromised mirror's config.json cannot make the proxy fetch an internal address (blind SSRF)."""
    net.registry(A, "http://127.0.0.1:18091/dl", lambda n, v: f"http://127.0.0.1:18091/dl/{n}/{v}", {"foo": {"1.0.0": FOO}})
    resolver = make()
    served = await resolver.crate(resolver.settings.registries[0], "foo", "1.0.0")
    assert (served.source, served.entry.body) == ("b", FOO)
    assert [a.detail for a in served.attempts][0] == ("its config.json's dl names 127.0.0.1, which is neither its own "
                                                      "host nor in its download_hosts: not asked")
    assert not [url for url in net.asked() if "127.0.0.1" in url]


async def test_a_waiter_gives_a_holder_that_took_over_a_dead_lease_a_whole_lease_period(make, net, clock):
    """Gateway a dies holding the lease; b takes it over when it expires and fetches; c, which had waited for a,
    must wait for b's result rather than count b's time against a's lease (that was a third upstream fetch)."""
    import time as real_time

    resolver = make(lease_seconds=1)
    store, started = resolver.store, real_time.monotonic()
    other = FOO.replace(b"foo", b"bar")  # what b stores: c must serve it without asking an upstream

    def phase() -> str:
        elapsed = real_time.monotonic() - started
        return "a" if elapsed < 0.8 else "b" if elapsed < 1.5 else "done"

    real_claim = store.claim

    async def claim(key, ttl, **kw):
        if phase() != "done":
            return False, None, None
        await store.put(key, other, "b", now=clock.now)  # b's result, stored before it released
        return await real_claim(key, ttl, **kw)

    async def lease_holder(key):
        return {"a": "gateway-a@100", "b": "gateway-b@101", "done": None}[phase()]

    store.claim, store.lease_holder = claim, lease_holder
    served = await resolver.crate(resolver.settings.registries[0], "foo", "1.0.0")
    assert (served.state, served.entry.body) == ("hit", other)
    assert net.asked() == []  # no fetch of c's own while b held the lease


# -- revalidating ahead of Cargo -----------------------------------------------------------------

def _with_deps(name: str, *deps: tuple[str, str]) -> bytes:
    """An index file of one version of `name` depending on each (dep, kind)."""
    return (json.dumps({"name": name, "vers": "1.0.0", "cksum": "0" * 64, "features": {}, "yanked": False,
                        "deps": [{"name": d, "req": "^1", "features": [], "optional": False, "default_features": True,
                                  "target": None, "kind": kind, "registry": None} for d, kind in deps]}) + "\n").encode()


@pytest.fixture
def graph(net):
    """foo -> bar (normal) -> bzz (build); foo -> tst (dev); foo -> new (never asked for through the cache)."""
    bodies = {"foo": _with_deps("foo", ("bar", "normal"), ("tst", "dev"), ("new", "normal")),
              "bar": _with_deps("bar", ("bzz", "build")), "bzz": _with_deps("bzz"), "tst": _with_deps("tst"),
              "new": _with_deps("new")}
    for name, body in bodies.items():
        net.serve_index(A, name, body, etag=f'"{name}-1"')
    return bodies


async def _settled(resolver) -> None:
    """Let the background revalidations finish (a fake upstream answers at once)."""
    for _ in range(100):
        await asyncio.sleep(0)
    await asyncio.gather(*resolver.engine.background)


async def test_an_expired_index_file_starts_the_revalidation_of_its_cached_dependencies(resolver, reg, net, clock, graph,
                                                                                          caplog):
    for name in ("foo", "bar", "bzz", "tst"):
        await resolver.index(reg, name)
    clock.advance(301)
    net.requests.clear()
    caplog.set_level(logging.INFO, logger="cratecache.protocols.cargo_ahead")
    served = await resolver.index(reg, "foo")
    await _settled(resolver)
    assert served.state == "revalidated"
    asked = net.asked()
    assert sorted(asked) == sorted([A + "3/f/foo", A + "3/b/bar", A + "3/b/bzz"])  # not the dev dep, not the uncached
    assert {r.headers["if-none-match"] for r in net.requests} == {'"foo-1"', '"bar-1"', '"bzz-1"'}
    assert "revalidated 2 index files ahead of Cargo (dependencies of foo): 2 unchanged, 0 updated, 0 not answered" \
        in caplog.text
    # Cargo asks for them next: confirmed after they expired, so served as they are.
    for name in ("bar", "bzz"):
        assert (await resolver.index(reg, name)).state == "hit"
    assert len(net.requests) == 3
    assert (await resolver.index(reg, "tst")).state == "revalidated"  # asked for by itself: revalidated then


async def test_a_dependency_asked_for_while_its_revalidation_is_in_flight_shares_it(resolver, reg, net, clock, graph):
    for name in ("foo", "bar"):
        await resolver.index(reg, name)
    net.serve_index(A, "bar", _with_deps("bar", ("bzz", "build"), ("foo", "normal")), etag='"bar-2"')  # changed
    clock.advance(301)
    net.requests.clear()
    net.delay = 0.05
    foo, bar = await asyncio.gather(resolver.index(reg, "foo"), resolver.index(reg, "bar"))
    await _settled(resolver)
    assert (foo.state, bar.state) == ("revalidated", "updated")
    assert b'"foo"' in bar.entry.body
    assert sorted(net.asked()) == [A + "3/b/bar", A + "3/f/foo"]  # one request each


async def test_nothing_is_revalidated_ahead_with_index_ttl_zero_or_when_switched_off(make, net, clock, graph):
    for resolver in (make(index_ttl=0), make(revalidate_ahead=0)):
        reg = resolver.settings.registries[0]
        await resolver.config(reg)
        for name in ("foo", "bar"):
            await resolver.index(reg, name)
        clock.advance(301)
        net.requests.clear()
        await resolver.config(reg)
        await resolver.index(reg, "foo")
        await _settled(resolver)
        assert net.asked() == [A + "config.json", A + "3/f/foo"]


async def test_an_expired_config_json_starts_the_revalidation_of_the_index_files_in_use(resolver, reg, net, clock,
                                                                                          graph, caplog):
    await resolver.config(reg)
    for name in ("foo", "bar"):
        await resolver.index(reg, name)
    clock.advance(301)  # a new Cargo session after a pause: config.json and both files have expired
    net.requests.clear()
    caplog.set_level(logging.INFO, logger="cratecache.protocols.cargo_ahead")
    assert (await resolver.config(reg)).state == "revalidated"
    await _settled(resolver)
    assert sorted(net.asked()) == [A + "3/b/bar", A + "3/f/foo", A + "config.json"]
    assert {r.headers.get("if-none-match") for r in net.requests if "/3/" in str(r.url)} == {'"foo-1"', '"bar-1"'}
    assert ("revalidated 2 index files ahead of Cargo (in use, with crates-io's config.json): 2 unchanged, "
            "0 updated, 0 not answered") in caplog.text
    for name in ("foo", "bar"):  # what Cargo asks for next was confirmed after it expired: served as it is
        assert (await resolver.index(reg, name)).state == "hit"
    assert len(net.requests) == 3


async def test_only_index_files_asked_for_lately_are_kept_fresh_with_config_json(resolver, reg, net, clock, graph):
    await resolver.config(reg)
    await resolver.index(reg, "foo")
    clock.advance(3600)  # foo has not been asked for in an hour: no longer in use
    await resolver.config(reg)
    await resolver.index(reg, "bar")
    await _settled(resolver)
    clock.advance(301)
    net.requests.clear()
    await resolver.config(reg)
    await _settled(resolver)
    assert sorted(net.asked()) == [A + "3/b/bar", A + "config.json"]  # foo is cached and expired, but not in use


async def test_a_file_revalidated_ahead_is_not_in_use_until_a_client_asks_for_it(resolver, reg, net, clock, graph):
    await resolver.config(reg)
    for name in ("bar", "bzz"):
        await resolver.index(reg, name)
    clock.advance(3600)
    await resolver.index(reg, "bar")  # expired: its dependency bzz is revalidated ahead, but nobody asks for it
    await _settled(resolver)
    assert sorted(net.asked()[-2:]) == [A + "3/b/bar", A + "3/b/bzz"]
    clock.advance(301)
    net.requests.clear()
    await resolver.config(reg)
    await _settled(resolver)
    assert sorted(net.asked()) == [A + "3/b/bar", A + "config.json"]


async def test_a_fresh_config_json_revalidates_nothing_ahead(resolver, reg, net, clock, graph):
    await resolver.config(reg)
    clock.advance(200)
    await resolver.index(reg, "foo")
    clock.advance(150)  # config.json expired, foo (asked 150 s ago) still fresh
    net.requests.clear()
    await resolver.config(reg)
    await _settled(resolver)
    assert net.asked() == [A + "config.json"]


async def test_revalidating_ahead_stops_at_its_limit(make, net, clock, graph):
    resolver = make(revalidate_ahead=1)
    reg = resolver.settings.registries[0]
    for name in ("foo", "bar", "bzz"):
        await resolver.index(reg, name)
    clock.advance(301)
    net.requests.clear()
    await resolver.index(reg, "foo")
    await _settled(resolver)
    assert sorted(net.asked()) == [A + "3/b/bar", A + "3/f/foo"]


async def test_offline_what_was_not_staged_is_answered_so_that_cargo_prints_why(make, net):
    """Issue 27, item 13: a 404 on an index file is "no such crate" to Cargo; the status it shows with the body."""
    from cratecache.boundary.routes import ConfigRoute, CrateRoute, IndexRoute

    resolver = make(offline=True)
    reg = resolver.settings.registries[0]
    asked = len(net.requests)
    for route, status in ((IndexRoute(reg, "foo"), 403), (ConfigRoute(reg), 403), (CrateRoute(reg, "foo", "1.0.0"), 404)):
        with pytest.raises(NotStaged, match="was not staged") as refused:
            await resolver.resolve(route)
        assert refused.value.status == status
    assert len(net.requests) == asked
