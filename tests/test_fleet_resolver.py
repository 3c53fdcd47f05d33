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
