"""The policy over Cargo's protocol (policy/gate.py) through the resolver, over fake registries and a hand-moved
clock (no sockets): what index files and downloads are served, with which header, and the kept publish times."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import yaml
from cratecache.config import parse_settings
from cratecache.policy.databases import Databases
from cratecache.protocols.routes import CrateRoute, IndexRoute
from cratecache.resolver import Refused, Resolver, Unavailable
from cratecache.storage import open_storage

from tests.fake_registry import A_DL, DOWNLOAD_HOST, INDEX_HOST, A, FakeNet, a_download

DAY = 86400
FOO_1, FOO_2 = b"\x1f\x8b foo 1.0.0", b"\x1f\x8b foo 1.1.0"
A_FOO = A + "3/f/foo"


def line(version: str, body: bytes, **extra) -> bytes:
    obj = {"name": "foo", "vers": version, "deps": [], "cksum": hashlib.sha256(body).hexdigest(), "features": {},
           "yanked": False, **extra}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def stamp(seconds: float) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


@pytest.fixture
def net() -> FakeNet:
    net = FakeNet()
    net.serve(A + "config.json", json.dumps({"dl": A_DL}).encode())
    net.serve(a_download("foo", "1.0.0"), FOO_1)
    net.serve(a_download("foo", "1.1.0"), FOO_2)
    return net


@pytest.fixture
async def make(tmp_path, net, clock):
    made: list[Resolver] = []

    def make(policy: dict, index_ttl: int = 60, registry_policy: dict | None = None,
             databases: Databases | None = None) -> Resolver:
        registry = {"name": "crates-io", "index_host": INDEX_HOST, "download_host": DOWNLOAD_HOST,
                    "proxies": [{"name": "a", "url": A}]}
        if registry_policy is not None:
            registry["policy"] = registry_policy
        doc = {"cache": {"directory": str(tmp_path / "cache"), "index_ttl": index_ttl}, "registries": [registry],
               "policy": policy}
        settings = parse_settings(yaml.safe_dump(doc), tmp_path / "proxies.yaml", env={})
        resolver = Resolver(settings, open_storage(settings.cache), clock=clock, transport=net.transport(),
                            databases=databases)
        made.append(resolver)
        return resolver

    yield make
    for resolver in made:
        await resolver.aclose()
        await resolver.store.close()


def reg(resolver: Resolver):
    return resolver.settings.registries[0]


async def index(resolver: Resolver):
    return await resolver.resolve(IndexRoute(reg(resolver), "foo"))


def lines(served) -> dict[str, dict]:
    return {obj["vers"]: obj for obj in map(json.loads, served.entry.body.splitlines())}


async def test_young_version_served_yanked_until_it_is_old_enough(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1, pubtime=stamp(clock.now - 30 * DAY))
              + line("1.1.0", FOO_2, pubtime=stamp(clock.now - DAY)))
    resolver = make({"quarantine": {"min_age": "3d"}}, index_ttl=10 * DAY)
    served = await index(resolver)
    assert lines(served)["1.1.0"]["yanked"] is True and lines(served)["1.0.0"]["yanked"] is False
    assert dict(served.headers) == {"X-Cargo-Cache-Policy": "hide:quarantine"}
    assert served.entry.meta.sha256 == hashlib.sha256(served.entry.body).hexdigest()  # the ETag follows the bytes
    # pinned: allow (the default): a lockfile that pins it still downloads it
    assert (await resolver.crate(reg(resolver), "foo", "1.1.0")).entry.body == FOO_2
    clock.advance(2 * DAY + 1)
    released = await index(resolver)
    assert lines(released)["1.1.0"]["yanked"] is False and released.headers == ()
    assert released.entry.body == net.routes[A_FOO][1]  # nothing left to change: the upstream's own bytes
    assert released.entry.meta.sha256 != served.entry.meta.sha256


async def test_pinned_deny_refuses_the_download_with_the_reason(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2, pubtime=stamp(clock.now - 3600)))
    resolver = make({"quarantine": {"min_age": "3d", "pinned": "deny"}})
    with pytest.raises(Refused) as refused:
        await resolver.crate(reg(resolver), "foo", "1.1.0")
    until = stamp(clock.now - 3600 + 3 * DAY)
    assert str(refused.value) == f"cargo-cache policy: foo 1.1.0 is in quarantine until {until} (min_age 3d)"
    assert refused.value.status == 403 and dict(refused.value.headers) == {"X-Cargo-Cache-Policy": "deny:quarantine"}
    assert a_download("foo", "1.1.0") not in net.asked()  # never fetched
    assert (await resolver.crate(reg(resolver), "foo", "1.0.0")).entry.body == FOO_1


async def test_version_published_after_the_cached_index_is_still_decided_on(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1))
    resolver = make({"quarantine": {"min_age": "3d", "pinned": "deny"}}, index_ttl=10 * DAY)
    await index(resolver)  # the first copy: 1.0.0 only
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2))  # published since; no pubtime
    with pytest.raises(Refused, match="foo 1.1.0 is in quarantine"):  # the download revalidated the index
        await resolver.resolve(CrateRoute(reg(resolver), "foo", "1.1.0"))
    served = await index(resolver)
    assert lines(served)["1.1.0"]["yanked"] is True
    assert lines(served)["1.1.0"]["pubtime"] == stamp(clock.now)  # its first sighting, for Cargo's own min-publish-age
    assert "pubtime" not in lines(served)["1.0.0"]  # the first copy's versions: age unknown, old


async def test_first_copy_is_old_later_versions_age_from_their_sighting(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1))
    resolver = make({"quarantine": {"min_age": 60}}, index_ttl=10)
    first = await index(resolver)
    assert first.entry.body == net.routes[A_FOO][1] and first.headers == ()  # same bytes as without a policy
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2))
    clock.advance(11)
    seen_at = clock.now
    later = await index(resolver)
    assert lines(later)["1.1.0"]["yanked"] is True and lines(later)["1.1.0"]["pubtime"] == stamp(seen_at)
    # an upstream that now sends an earlier pubtime does not release it
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2, pubtime=stamp(seen_at - 30 * DAY)))
    clock.advance(11)
    again = await index(resolver)
    assert lines(again)["1.1.0"]["yanked"] is True and lines(again)["1.1.0"]["pubtime"] == stamp(seen_at)
    clock.advance(60)
    aged = await index(resolver)
    assert lines(aged)["1.1.0"]["yanked"] is False and lines(aged)["1.1.0"]["pubtime"] == stamp(seen_at)


async def test_missing_pubtime_allow_never_quarantines_without_one(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1))
    resolver = make({"quarantine": {"min_age": 60, "missing_pubtime": "allow"}}, index_ttl=10)
    await index(resolver)
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2))
    clock.advance(11)
    served = await index(resolver)
    assert served.entry.body == net.routes[A_FOO][1] and served.headers == ()


async def test_sightings_are_shared_through_the_store(make, net, clock):
    """Two workers on one cache: the second serves the time the first one recorded (and so after a restart)."""
    net.serve(A_FOO, line("1.0.0", FOO_1))
    one = make({"quarantine": {"min_age": "1d"}}, index_ttl=10)
    await index(one)
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2))
    clock.advance(11)
    seen = lines(await index(one))["1.1.0"]["pubtime"]
    clock.advance(500)
    two = make({"quarantine": {"min_age": "1d"}}, index_ttl=10)
    served = await index(two)
    assert lines(served)["1.1.0"]["pubtime"] == seen and lines(served)["1.1.0"]["yanked"] is True


async def test_registry_policy_overrides_the_global_one(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2, pubtime=stamp(clock.now - 60)))
    resolver = make({"quarantine": {"min_age": "3d"}}, registry_policy={"quarantine": {"min_age": 0}})
    served = await index(resolver)
    assert served.entry.body == net.routes[A_FOO][1] and served.headers == ()


async def test_rules_deny_and_dry_run(make, net, clock):
    net.serve(A_FOO, line("1.0.0", FOO_1) + line("1.1.0", FOO_2))
    rules = [{"deny": "foo@>=1.1", "reason": "foo 1.1 leaks secrets"}]
    resolver = make({"rules": rules})
    served = await index(resolver)
    assert lines(served)["1.1.0"]["yanked"] is True and dict(served.headers) == {"X-Cargo-Cache-Policy": "deny:rule"}
    with pytest.raises(Refused, match="^cargo-cache policy: foo 1.1.0: foo 1.1 leaks secrets$"):
        await resolver.crate(reg(resolver), "foo", "1.1.0")
    dry = make({"rules": rules, "dry_run": True})
    served = await index(dry)
    assert served.entry.body == net.routes[A_FOO][1]
    assert dict(served.headers) == {"X-Cargo-Cache-Policy": "would-deny:rule"}
    download = await dry.crate(reg(dry), "foo", "1.1.0")
    assert download.entry.body == FOO_2 and dict(download.headers) == {"X-Cargo-Cache-Policy": "would-deny:rule"}


async def test_a_warning_is_logged_once_per_version_an_hour(make, net, clock, caplog):
    net.serve(A_FOO, line("1.0.0", FOO_1))
    resolver = make({"rules": [{"warn": "foo", "reason": "foo is on its way out"}]})
    with caplog.at_level(logging.WARNING, logger="cratecache.policy.journal"):
        for _ in range(3):
            await index(resolver)
        clock.advance(3601)
        await index(resolver)
    logged = [r.getMessage() for r in caplog.records if "foo is on its way out" in r.getMessage()]
    assert logged == ["cargo-cache policy: warn:rule (registry crates-io): foo 1.0.0: foo is on its way out"] * 2
    assert resolver.policy.journal.counts[("warn", "rule")] == 4


async def test_advisory_database_not_loaded_fails_closed(make, net, tmp_path):
    (tmp_path / "db" / "crates").mkdir(parents=True)
    net.serve(A_FOO, line("1.0.0", FOO_1))
    resolver = make({"advisories": {"database": str(tmp_path / "db")}}, databases=Databases())
    with pytest.raises(Unavailable, match="advisory database .* is not available"):
        await index(resolver)


async def test_damaged_record_is_set_aside(make, net, clock, caplog):
    net.serve(A_FOO, line("1.0.0", FOO_1))
    resolver = make({"quarantine": {"min_age": 60}}, index_ttl=10)
    await resolver.store.put("policy/sightings/crates-io/foo", b"{not json", "policy")
    with caplog.at_level(logging.ERROR):
        served = await index(resolver)
    assert served.entry.body == net.routes[A_FOO][1]
    assert "kept publish times policy/sightings/crates-io/foo are damaged" in caplog.text
