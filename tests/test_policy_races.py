"""What the policy gate serves for an index copy, with stand-in workers over one shared store: only its ETag (the
digest of what is served) answers a client's conditional request, and workers that raced to record a first
sighting end up serving one time."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from types import SimpleNamespace

from cratecache.boundary.handler import entry_reply
from cratecache.config.policy import Policy, Quarantine
from cratecache.engine import Served, freshness
from cratecache.policy.decide import timestamp
from cratecache.policy.gate import PolicyGate
from cratecache.storage import Entry
from cratecache.storage.local import make_entry

STORED_AT = 1_000_000.0
REGISTRY = SimpleNamespace(name="crates-io", policy=Policy(quarantine=Quarantine(min_age=3600)))


def index(**pubtimes: float | None) -> bytes:
    """itoa's index file with versions 1_0_1=... (a pubtime or None)."""
    return b"".join(json.dumps({"name": "itoa", "vers": v.replace("_", "."), "deps": [], "cksum": "0" * 64,
                                "features": {}, "yanked": False} | ({"pubtime": timestamp(t)} if t else {}),
                               separators=(",", ":")).encode() + b"\n" for v, t in pubtimes.items())


class SharedStore:
    """The cache that every worker shares; each call yields to the event loop, as real storage I/O does."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}

    async def latest(self, key: str):
        await asyncio.sleep(0)
        body = self.bodies.get(key)
        return None if body is None else make_entry(body, "policy", now=STORED_AT)

    get = latest

    async def put(self, key: str, body: bytes, upstream: str):
        await asyncio.sleep(0)
        self.bodies[key] = body


def worker(store: SharedStore) -> PolicyGate:
    async def best_effort(write, key, *args):
        return await write(key, *args)

    engine = SimpleNamespace(store=store, clock=lambda: STORED_AT + 20, best_effort=best_effort)
    return PolicyGate(engine, None)


def copy(body: bytes, stored_at: float, checked_at: float | None = None) -> Served:
    entry = make_entry(body, "origin", None, None, stored_at)
    return Served(Entry(replace(entry.meta, checked_at=checked_at or stored_at), body), "origin", "updated")


def pubtimes(served: Served) -> dict[str, str | None]:
    return {line["vers"]: line.get("pubtime") for line in map(json.loads, served.entry.body.splitlines())}


def test_two_workers_that_each_fetched_the_copy_with_a_new_version_serve_one_first_sighting_after_revalidating():
    """Workers on one cache folder revalidate an index file without a lease: both may fetch the copy in which a
    version without pubtime first appears, and each merges its own before it can read the other's record."""
    registry = REGISTRY
    first, later = index(**{"1_0_1": None}), index(**{"1_0_1": None, "1_0_2": None})
    store = SharedStore()
    a, b = worker(store), worker(store)

    async def scenario():
        await a._police(registry, "itoa", copy(first, STORED_AT))
        # b's record write lands first, a's last: the record keeps a's sighting, b holds its own
        raced = await asyncio.gather(b._police(registry, "itoa", copy(later, STORED_AT + 11.7)),
                                     a._police(registry, "itoa", copy(later, STORED_AT + 10.2)))
        # the index file as the cache holds it now (b's copy, the last written), revalidated by each worker
        revalidated = copy(later, STORED_AT + 11.7, checked_at=STORED_AT + 400)
        return raced, [await w._police(registry, "itoa", revalidated) for w in (a, b)]

    raced, after = asyncio.run(scenario())

    assert {pubtimes(s)["1.0.2"] for s in raced} == {timestamp(STORED_AT + 10.2), timestamp(STORED_AT + 11.7)}
    assert [pubtimes(s)["1.0.2"] for s in after] == [timestamp(STORED_AT + 10.2)] * 2  # the earliest sighting
    assert all(pubtimes(s)["1.0.1"] is None for s in after)  # the first copy's version: old


def test_an_index_file_under_a_policy_is_not_modified_only_by_its_etag_never_by_its_date():
    """What is served changes with no new copy (a quarantine ends, an advisory arrives): a client asking by date
    (If-Modified-Since, no ETag) could keep an outdated decision, so it gets the file."""
    gate = worker(SharedStore())
    served = asyncio.run(gate._police(REGISTRY, "itoa", copy(index(**{"1_0_1": STORED_AT - 60}), STORED_AT)))
    after = freshness.http_date(STORED_AT + 60)

    assert entry_reply("index", served, {"if-modified-since": after}).status == 200
    assert entry_reply("index", served, {"if-none-match": freshness.etag_for(served.entry.meta.sha256)}).status == 304
    unpoliced = copy(index(**{"1_0_1": STORED_AT - 60}), STORED_AT)
    assert entry_reply("index", unpoliced, {"if-modified-since": after}).status == 304  # as without a policy
