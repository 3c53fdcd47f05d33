"""The resolver on rustup's dist files: pairs, verification against manifests, moving names (no sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import httpx
import pytest
import yaml
from cratecache.boundary.routes import DistRoute
from cratecache.config import parse_settings
from cratecache.protocols import dist
from cratecache.resolver import NotFound, NotStaged, Resolver, Unavailable
from cratecache.storage import open_storage

from tests.fake_registry import FakeNet
from tests.test_dist import DATE, HOST, manifest_text

A, B = "https://dist-a.test/", "https://dist-b.test/"
STABLE = "dist/channel-rust-stable.toml"
RUSTC = f"dist/{DATE}/rustc-1.95.0-{HOST}.tar.xz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def component(name: str) -> bytes:
    """The bytes whose SHA-256 test_dist.manifest_text lists for `name` (it hashes the file name)."""
    return name.encode()


class Dist:
    """Upstream dist roots in a FakeNet: serve a manifest with its .sha256, and components."""

    def __init__(self, net: FakeNet):
        self.net = net

    def manifest(self, root: str, path: str, body: bytes, checksum: bytes | None = None) -> None:
        self.net.serve(root + path, body)
        self.net.serve(root + path + ".sha256", checksum or dist.checksum_body(sha(body), path.rsplit("/", 1)[-1]))

    def components(self, root: str, version: str = "1.95.0", date: str = DATE) -> None:
        for pkg in ("rustc", "cargo", "rust-std"):
            for ext in ("tar.xz", "tar.gz"):
                name = f"{pkg}-{version}-{HOST}.{ext}"
                self.net.serve(f"{root}dist/{date}/{name}", component(name))

    def asked(self, path: str) -> int:
        return sum(1 for r in self.net.requests if r.url.path == "/" + path)


@pytest.fixture
def net() -> FakeNet:
    return FakeNet()


@pytest.fixture
def up(net) -> Dist:
    return Dist(net)


@pytest.fixture
async def make(tmp_path, net, clock):
    made = []

    def make(ttl: int = 3600, upstreams=("a", "b"), **cache) -> Resolver:
        doc = {"cache": {"directory": str(tmp_path / "cache"), **cache},
               "registries": [{"name": "crates-io", "index_host": "index.crates.io", "proxies": [
                   {"name": "crates", "url": "https://index.crates.io/"}]}],
               "toolchains": {"ttl": ttl, "proxies": [{"name": n, "url": {"a": A, "b": B}[n], "priority": i}
                                                      for i, n in enumerate(upstreams)]}}
        settings = parse_settings(yaml.safe_dump(doc), tmp_path / "proxies.yaml", env={})
        resolver = Resolver(settings, open_storage(settings.cache), clock=clock, transport=net.transport())
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.aclose()
        await resolver.store.close()


async def get(resolver: Resolver, path: str, pinned: str | None = None):
    found = dist.classify(path)
    assert isinstance(found, dist.DistFile), found
    return await resolver.resolve(DistRoute(resolver.settings.toolchains, found), pinned=pinned)


async def test_a_manifest_and_its_sha256_are_one_pair_fetched_once(make, up):
    body = manifest_text().encode()
    up.manifest(A, STABLE, body)
    resolver = make()
    checksum = await get(resolver, STABLE + ".sha256")
    assert checksum.entry.body == dist.checksum_body(sha(body), "channel-rust-stable.toml")
    served = await get(resolver, STABLE)
    assert (served.entry.body, served.state, served.entry.meta.upstream) == (body, "hit", "a")
    assert (up.asked(STABLE + ".sha256"), up.asked(STABLE)) == (1, 1)


async def test_a_manifest_not_matching_its_sha256_is_that_upstreams_failure(make, up):
    body = manifest_text().encode()
    up.manifest(A, STABLE, body, checksum=dist.checksum_body(sha(b"other"), "channel-rust-stable.toml"))
    up.manifest(B, STABLE, body)
    served = await get(make(), STABLE)
    assert (served.source, served.entry.body) == ("b", body)
    assert [a.outcome for a in served.attempts] == ["failed", "ok"]
    assert "checksum mismatch" in served.attempts[0].detail


async def test_an_upstream_that_moves_between_its_sha256_and_its_manifest_is_asked_again(make, up, net):
    old, new = manifest_text().encode(), manifest_text("1.95.1").encode()
    checksums = iter([old, new, new])

    def moving_checksum(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=dist.checksum_body(sha(next(checksums)), "channel-rust-stable.toml"))

    net.serve(A + STABLE, new)  # the .sha256 we got first named the old one
    net.routes[A + STABLE + ".sha256"] = moving_checksum
    served = await get(make(), STABLE)
    assert (served.source, served.entry.body, served.state) == ("a", new, "miss")


async def test_html_with_a_matching_sha256_is_still_refused(make, up):
    up.manifest(A, STABLE, b"<html>login</html>")
    with pytest.raises(Unavailable, match="invalid channel manifest"):
        await get(make(upstreams=("a",)), STABLE)


async def test_after_the_ttl_an_unchanged_manifest_costs_one_small_request(make, up, clock):
    body = manifest_text().encode()
    up.manifest(A, STABLE, body)
    resolver = make(ttl=60)
    await get(resolver, STABLE)
    clock.advance(30)
    assert (await get(resolver, STABLE)).state == "hit"
    clock.advance(31)
    served = await get(resolver, STABLE)
    assert (served.state, served.entry.body) == ("revalidated", body)
    assert (up.asked(STABLE + ".sha256"), up.asked(STABLE)) == (2, 1)


async def test_a_moved_channel_is_served_after_the_ttl_and_a_client_pinned_to_the_old_hash_gets_the_old(make, up, clock):
    old, new = manifest_text().encode(), manifest_text("1.96.0", "2026-05-28").encode()
    up.manifest(A, STABLE, old)
    resolver = make(ttl=60)
    given = dist.parse_checksum((await get(resolver, STABLE + ".sha256")).entry.body)
    up.manifest(A, STABLE, new)
    clock.advance(61)
    assert (await get(resolver, STABLE + ".sha256")).entry.body == dist.checksum_body(sha(new), "channel-rust-stable.toml")
    assert (await get(resolver, STABLE)).entry.body == new
    pinned = await get(resolver, STABLE, pinned=given)  # the first client asks for the manifest it was promised
    assert (pinned.entry.body, pinned.state) == (old, "hit")


async def test_every_upstream_failing_serves_the_stale_manifest(make, up, net, clock):
    body = manifest_text().encode()
    up.manifest(A, STABLE, body)
    resolver = make(ttl=60, upstreams=("a",))
    await get(resolver, STABLE)
    net.serve(A + STABLE + ".sha256", b"down", status=503)
    clock.advance(61)
    served = await get(resolver, STABLE)
    assert (served.state, served.entry.body) == ("stale", body)


async def test_a_component_is_verified_against_the_manifest_and_cached_for_good(make, up, clock):
    up.manifest(A, STABLE, manifest_text().encode())
    up.components(A)
    resolver = make(ttl=60)
    await get(resolver, STABLE)
    served = await get(resolver, RUSTC)
    assert (served.state, served.source, served.entry.body) == ("miss", "a", component(RUSTC.rsplit("/", 1)[1]))
    clock.advance(10**6)
    assert (await get(resolver, RUSTC)).state == "hit"
    assert up.asked(RUSTC) == 1
    checksum = await get(resolver, RUSTC + ".sha256")  # from the manifest's hash, no upstream asked
    assert checksum.entry.body == dist.checksum_body(sha(served.entry.body), RUSTC.rsplit("/", 1)[1])
    assert up.asked(RUSTC + ".sha256") == 0


async def test_a_corrupted_component_from_the_first_upstream_is_rejected_and_the_seconds_served(make, up, net):
    up.manifest(A, STABLE, manifest_text().encode())
    up.components(A)
    up.components(B)
    net.serve(A + RUSTC, b"corrupted bytes")
    resolver = make()
    await get(resolver, STABLE)
    served = await get(resolver, RUSTC)
    assert (served.source, served.entry.body) == ("b", component(RUSTC.rsplit("/", 1)[1]))
    assert "checksum mismatch" in served.attempts[0].detail
    assert (await get(resolver, RUSTC)).source == "cache"


async def test_a_component_asked_for_directly_fetches_its_dated_manifest_first(make, up):
    up.manifest(A, f"dist/{DATE}/channel-rust-stable.toml", manifest_text().encode())
    up.components(A)
    resolver = make()
    served = await get(resolver, RUSTC)
    assert served.state == "miss"
    assert up.asked(f"dist/{DATE}/channel-rust-stable.toml") == 1
    assert up.asked(f"dist/{DATE}/channel-rust-beta.toml") == 0  # the version names the channel


async def test_a_component_no_manifest_lists_is_not_found_and_never_downloaded(make, up, net):
    up.manifest(A, STABLE, manifest_text().encode())
    resolver = make()
    await get(resolver, STABLE)
    stray = f"dist/{DATE}/evil-1.95.0-{HOST}.tar.xz"
    net.serve(A + stray, b"anything")
    with pytest.raises(NotFound, match="not listed in any channel manifest"):
        await get(resolver, stray)
    assert up.asked(stray) == 0


async def test_rustup_init_is_checked_against_its_own_sha256(make, up, net):
    path = f"rustup/dist/{HOST}/rustup-init"
    net.serve(A + path, b"fake rustup-init")
    net.serve(A + path + ".sha256", dist.checksum_body(sha(b"real rustup-init"), "rustup-init"))
    up.manifest(B, path, b"real rustup-init")
    served = await get(make(), path)
    assert (served.source, served.entry.body) == ("b", b"real rustup-init")


async def test_offline_serves_what_is_held_and_names_what_is_not(make, up):
    up.manifest(A, STABLE, manifest_text().encode())
    up.components(A)
    online = make()
    await get(online, STABLE)
    await get(online, RUSTC)
    await online.store.close()
    offline = make(offline=True)
    assert (await get(offline, STABLE + ".sha256")).entry.body.startswith(sha(manifest_text().encode()).encode())
    assert (await get(offline, RUSTC)).state == "hit"
    assert (await get(offline, RUSTC + ".sha256")).state == "hit"
    with pytest.raises(NotStaged, match="not staged") as nightly:
        await get(offline, "dist/channel-rust-nightly.toml.sha256")
    with pytest.raises(NotStaged, match="not staged") as beta:
        await get(offline, "dist/channel-rust-beta.toml.sha256")
    # rustup panics on a 4xx for the nightly channel (it walks back from a date it never got); 404 elsewhere
    assert (nightly.value.status, beta.value.status) == (503, 404)


async def test_concurrent_misses_for_one_component_share_one_upstream_request(make, up, net):
    up.manifest(A, f"dist/{DATE}/channel-rust-stable.toml", manifest_text().encode())
    up.components(A)
    net.delay = 0.2
    resolver = make()
    served = await asyncio.gather(*(get(resolver, RUSTC) for _ in range(8)))
    assert {s.entry.body for s in served} == {component(RUSTC.rsplit("/", 1)[1])}
    assert up.asked(RUSTC) == 1 and up.asked(f"dist/{DATE}/channel-rust-stable.toml") == 1  # fetched to verify it


# -- which manifest vouches for a component (issue 27, item 2) ----------------------------------

def foreign_manifest(listed: str, digest_of: bytes, date: str = "2020-01-01") -> bytes:
    """A manifest of another date (and channel) that lists `listed` (a stable path of DATE) with its own hash."""
    name = listed.rsplit("/", 1)[1]
    body = manifest_text().replace(f'date = "{DATE}"', f'date = "{date}"')
    return body.replace(dist_hash(name), sha(digest_of)).encode()


def dist_hash(name: str) -> str:
    return sha(name.encode())


CLIPPY = f"dist/{DATE}/clippy-preview-1.95.0-{HOST}.tar.xz"
FOREIGN = "dist/2020-01-01/channel-rust-beta.toml"


@pytest.mark.parametrize("stable_first", [True, False])
async def test_a_manifest_of_another_channel_and_date_cannot_vouch_for_a_component(make, up, net, stable_first):
    up.manifest(A, STABLE, manifest_text().encode())
    up.manifest(A, f"dist/{DATE}/channel-rust-stable.toml", manifest_text().encode())
    up.components(A)
    net.serve(A + CLIPPY, component(CLIPPY.rsplit("/", 1)[1]))
    up.manifest(B, FOREIGN, foreign_manifest(CLIPPY, b"evil clippy"))  # only the second upstream has it
    net.serve(B + CLIPPY, b"evil clippy")
    resolver = make()
    assert (await get(resolver, FOREIGN)).source == "b"
    if stable_first:
        await get(resolver, STABLE)
    served = await get(resolver, CLIPPY)
    checksum = await get(resolver, CLIPPY + ".sha256")
    assert (served.source, served.entry.body) == ("a", component(CLIPPY.rsplit("/", 1)[1]))
    assert checksum.entry.body.startswith(sha(served.entry.body).encode())
    assert up.asked(CLIPPY) == 1  # the genuine file was accepted at once; the mirror was never asked for it


async def test_a_dated_manifest_whose_date_is_not_its_folders_vouches_for_nothing(make, up, net):
    lying = f"dist/{DATE}/channel-rust-stable.toml"
    up.manifest(A, lying, foreign_manifest(RUSTC, b"evil rustc"))  # in DATE's folder, says 2020-01-01
    net.serve(A + RUSTC, b"evil rustc")
    with pytest.raises(NotFound, match="not listed in any channel manifest"):
        await get(make(), RUSTC)


async def test_two_manifests_of_a_components_channel_and_date_that_disagree_refuse_it(make, up, net):
    dated = f"dist/{DATE}/channel-rust-stable.toml"
    up.manifest(A, STABLE, manifest_text().encode())
    up.components(A)
    up.manifest(B, dated, manifest_text().replace(dist_hash(RUSTC.rsplit("/", 1)[1]), sha(b"other")).encode())
    resolver = make()
    await get(resolver, STABLE)
    await get(resolver, dated)  # the first upstream lacks the dated one; the second's disagrees on rustc
    with pytest.raises(Unavailable, match="disagree on its hash") as refused:
        await get(resolver, RUSTC)
    assert STABLE in str(refused.value) and dated in str(refused.value)
    assert up.asked(RUSTC) == 0
    assert (await get(resolver, f"dist/{DATE}/cargo-1.95.0-{HOST}.tar.xz")).source == "a"  # where they agree: served


# -- a big manifest is parsed off the event loop, once per distinct bytes (issue 27, item 4) ------------

async def test_a_manifest_is_parsed_in_a_worker_thread_once_for_concurrent_names_while_hits_are_answered(make, up):
    up.manifest(A, STABLE, manifest_text().encode())
    up.components(A)
    resolver = make()
    await get(resolver, STABLE)
    await get(resolver, RUSTC)  # cached: the hit to answer while a manifest is being parsed
    started, release, parses = threading.Event(), threading.Event(), []

    def slow_parse(data: bytes) -> dist.Listing:  # stands for tomllib on a 16 MB manifest (seconds)
        parses.append(threading.current_thread())
        started.set()
        assert release.wait(10), "the test never let the parse finish"
        return dist.parse_listing(data)

    resolver.parse_listing = slow_parse
    body = manifest_text("1.95.1").encode()  # bytes not parsed yet
    aliases = ["dist/channel-rust-1.95.toml", "dist/channel-rust-1.95.1.toml", f"dist/{DATE}/channel-rust-stable.toml"]
    for path in aliases:  # the same bytes under three names, asked for at once
        up.manifest(A, path, body)
    fetching = asyncio.gather(*(get(resolver, path) for path in aliases))
    assert await asyncio.to_thread(started.wait, 10)
    hit = await get(resolver, RUSTC)  # answered while the parse holds its thread
    assert (hit.state, release.is_set()) == ("hit", False)
    release.set()
    served = await fetching
    assert {s.entry.body for s in served} == {body}
    assert len(parses) == 1 and parses[0] is not threading.main_thread()
