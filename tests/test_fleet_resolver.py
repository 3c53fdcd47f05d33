"""The resolver on the s3 backend, several gateways sharing one real bucket (SeaweedFS), upstreams faked:
what the upstream is asked when gateways miss and revalidate together."""

from __future__ import annotations

import asyncio

import pytest
from cratecache.resolver import NotFound, Resolver
from cratecache.storage import open_storage

from tests.fake_registry import A_DL, A, FakeNet, a_download, make_settings, upstream

FOO = b"\x1f\x8b foo 1.0.0 from the registry"
A_FOO = A + "3/f/foo"


@pytest.fixture
def net() -> FakeNet:
    net = FakeNet()
    net.registry(A, A_DL, a_download, {"foo": {"1.0.0": FOO}}, etag='"a-foo-1"')
    return net


@pytest.fixture
async def gateways(tmp_path, seaweed, net, clock):
    made: list[Resolver] = []
    prefix = seaweed.new_prefix("resolver")

    def make(name: str) -> Resolver:
        settings = make_settings(tmp_path / name, [upstream("a", A)], 300, backend="s3", s3=seaweed.yaml(prefix))
        resolver = Resolver(settings, open_storage(settings.cache), clock=clock, transport=net.transport())
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.aclose()
        await resolver.store.close()


async def test_concurrent_misses_on_three_gateways_ask_the_upstream_once(gateways, net):
    net.delay = 0.2
    fleet = [gateways(name) for name in "abc"]
    reg = fleet[0].settings.registries[0]
    served = await asyncio.gather(*(g.crate(reg, "foo", "1.0.0") for g in fleet))
    assert {s.entry.body for s in served} == {FOO}
    assert sorted(s.state for s in served) == ["hit", "hit", "miss"]
    assert net.asked().count(a_download("foo", "1.0.0")) == 1 and net.asked().count(A_FOO) == 1


async def test_one_gateways_revalidation_refreshes_the_entry_for_all(gateways, net, clock):
    a, b = gateways("a"), gateways("b")
    reg = a.settings.registries[0]
    await a.index(reg, "foo")
    assert (await b.index(reg, "foo")).state == "hit"  # from the bucket into b's local tier
    clock.advance(301)  # both local copies are now due

    revalidated = await a.index(reg, "foo")
    refreshed = await b.index(reg, "foo")

    assert revalidated.state == "revalidated" and refreshed.state == "hit"
    assert refreshed.entry.meta.checked_at == clock.now
    assert net.asked().count(A_FOO) == 2  # the first fetch and a's conditional request; b asked nobody


async def test_a_crate_no_upstream_has_is_asked_for_once_across_gateways(gateways, net):
    a, b = gateways("a"), gateways("b")
    reg = a.settings.registries[0]
    with pytest.raises(NotFound):
        await a.index(reg, "nope")
    with pytest.raises(NotFound, match="remembered"):
        await b.index(reg, "nope")
    assert net.asked() == [A + "no/pe/nope"]


async def test_three_gateways_missing_one_large_toolchain_component_ask_the_upstream_once(tmp_path, seaweed, net, clock):
    """A component above the large-file threshold: one gateway downloads it (verified against the manifest) and
    uploads it in parts; the others wait on its lease and get it from the bucket. (A gateway that takes the lease
    before the first one's manifest reached the bucket verifies against that day's dated manifest, fetched.)"""
    import hashlib
    from pathlib import Path

    import yaml
    from cratecache.boundary.routes import DistRoute
    from cratecache.config import parse_settings
    from cratecache.protocols import dist

    from tests.test_dist import DATE, HOST, digest, manifest_text

    name = f"rustc-1.95.0-{HOST}.tar.xz"
    big = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)  # 5 MiB: the streamed path
    manifest = manifest_text().replace(digest(name), hashlib.sha256(big).hexdigest()).encode()
    root = "https://dist.test/"
    for path in ("dist/channel-rust-stable.toml", f"dist/{DATE}/channel-rust-stable.toml"):  # as static.rust-lang.org
        net.serve(root + path, manifest)
        net.serve(root + path + ".sha256", dist.checksum_body(hashlib.sha256(manifest).hexdigest(), "x"))
    net.serve(f"{root}dist/{DATE}/{name}", big)
    net.delay = 0.2
    prefix = seaweed.new_prefix("toolchain")
    fleet = []
    for gateway in "abc":
        doc = {"cache": {"directory": str(tmp_path / gateway), "backend": "s3", "s3": seaweed.yaml(prefix)},
               "toolchains": {"proxies": [{"name": "origin", "url": root}]}}
        settings = parse_settings(yaml.safe_dump(doc), tmp_path / "proxies.yaml", env={})
        fleet.append(Resolver(settings, open_storage(settings.cache), clock=clock, transport=net.transport()))
    try:
        await fleet[0].resolve(DistRoute(fleet[0].settings.toolchains, dist.classify("dist/channel-rust-stable.toml")))
        route = DistRoute(fleet[0].settings.toolchains, dist.classify(f"dist/{DATE}/{name}"))
        served = await asyncio.gather(*(g.resolve(route) for g in fleet))
        assert sorted(s.state for s in served) == ["hit", "hit", "miss"]
        for s in served:
            assert s.entry.file is not None and Path(s.entry.file).read_bytes() == big
        assert net.asked().count(f"{root}dist/{DATE}/{name}") == 1
    finally:
        for g in fleet:
            await g.aclose()
            await g.store.close()
