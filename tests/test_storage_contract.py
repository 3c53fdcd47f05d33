"""One contract for every storage backend: the disk backend (diskcache) and the s3 backend (a real
SeaweedFS bucket, each instance with its own local tier). `make()` opens another instance on the same
shared store: another worker (disk) or another gateway (s3)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from cratecache.config import CacheSettings
from cratecache.storage import Meta, Storage, open_storage

from tests.fixtures.seaweed import s3_cache

BODY = b"\x1f\x8b the bytes of a crate " * 100
OTHER = b'{"name":"foo","vers":"1.0.1"}\n'


@pytest.fixture(params=["disk", "s3"])
async def make(request, tmp_path):
    opened: list[Storage] = []
    shared = tmp_path / "cache"
    seaweed = request.getfixturevalue("seaweed") if request.param == "s3" else None
    prefix = seaweed.new_prefix("contract") if seaweed else None

    def make() -> Storage:
        if seaweed is None:
            cache = CacheSettings(directory=shared, size_limit=10**9)
        else:
            cache = s3_cache(tmp_path / f"tier-{len(opened)}", seaweed.settings(prefix))
        storage = open_storage(cache)
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        await storage.close()


async def test_a_stored_entry_reads_back_whole_with_its_provenance(make):
    store = make()
    put = await store.put("crate/crates-io/foo/1.0.0", BODY, "a", '"e1"', "Tue, 01 Jan 2030 00:00:00 GMT", 1000.0)
    got = await make().get("crate/crates-io/foo/1.0.0")
    assert got.body == BODY
    assert got.meta == put.meta == Meta(hashlib.sha256(BODY).hexdigest(), len(BODY), "a", 1000.0, 1000.0, '"e1"',
                                        "Tue, 01 Jan 2030 00:00:00 GMT")
    assert await make().meta("crate/crates-io/foo/1.0.0") == put.meta
    assert await make().get("crate/crates-io/foo/2.0.0") is None


async def test_a_large_entry_is_stored_from_its_spool_and_read_back_as_a_file_by_every_instance(make):
    import os

    from cratecache.storage import FILE_THRESHOLD

    big = os.urandom(FILE_THRESHOLD * 3 + 12345)
    store = make()
    spool = store.spool()
    for start in range(0, len(big), 256 * 1024):
        spool.write(big[start:start + 256 * 1024])
    spooled = spool.finish()
    assert spooled.body is None and spooled.path.exists()  # it went to a partial file beyond the threshold
    put = await store.put_file("crate/crates-io/big/1.0.0", spooled, "a", None, None, 1000.0)
    assert not spooled.path.exists()  # moved into the cache, not copied
    assert put.meta.sha256 == hashlib.sha256(big).hexdigest() and put.meta.size == len(big)

    other = make()  # another worker, or another gateway pulling it from the bucket into its own tier
    got = await other.get("crate/crates-io/big/1.0.0")
    assert got.body is None and got.file is not None  # served from its file, never read into memory
    assert Path(got.file).read_bytes() == big and got.meta == put.meta
    assert not list((other.directory / "partial").glob("*"))


async def test_a_large_index_file_is_always_read_whole(make):
    """Index files are parsed by the proxy (versions, checksums): only crates are kept as files."""
    from cratecache.storage import FILE_THRESHOLD

    body = b'{"name":"foo","vers":"1.0.0"}\n' * (FILE_THRESHOLD // 30 + 1000)
    await make().put("index/crates-io/foo", body, "a")
    got = await make().get("index/crates-io/foo")
    assert got.body == body and got.file is None


async def test_concurrent_writers_of_one_key_leave_one_whole_entry(make):
    bodies = [BODY + bytes([i]) * 1000 for i in range(6)]
    stores = [make() for _ in bodies]
    writes = (s.put("index/crates-io/foo", b, f"up{i}") for i, (s, b) in enumerate(zip(stores, bodies, strict=True)))
    await asyncio.gather(*writes)
    got = await make().get("index/crates-io/foo")
    assert got.body in bodies
    assert got.meta.sha256 == hashlib.sha256(got.body).hexdigest() and got.meta.size == len(got.body)
    assert got.meta.upstream == f"up{bodies.index(got.body)}"  # meta and bytes from the same writer


async def test_a_revalidation_is_seen_by_every_instance(make):
    first, second = make(), make()
    await first.put("index/crates-io/foo", OTHER, "a", '"e1"', None, 1000.0)
    assert (await second.get("index/crates-io/foo")).meta.checked_at == 1000.0  # second now holds a copy
    meta = await first.mark_checked("index/crates-io/foo", 2000.0, hashlib.sha256(OTHER).hexdigest())
    assert meta.checked_at == 2000.0
    assert (await first.get("index/crates-io/foo")).meta.checked_at == 2000.0
    await first.maintain()  # the disk backend records a 304 in memory and writes it with the recency
    owned, entry, negative = await second.claim("index/crates-io/foo", 5)
    assert owned and negative is None
    assert (entry.body, entry.meta.checked_at, entry.meta.etag) == (OTHER, 2000.0, '"e1"')
    await second.release_lease("index/crates-io/foo")


async def test_a_revalidation_never_revives_replaced_bytes(make):
    first, second = make(), make()
    old = await first.put("index/crates-io/foo", OTHER, "a", None, None, 1000.0)
    await second.put("index/crates-io/foo", OTHER + OTHER, "a", None, None, 1500.0)
    await first.mark_checked("index/crates-io/foo", 2000.0, old.meta.sha256)  # a 304 for the old bytes
    fresh = await make().get("index/crates-io/foo")
    assert (fresh.body, fresh.meta.checked_at) == (OTHER + OTHER, 1500.0)


async def test_one_lease_holder_at_a_time_and_release_frees_it(make):
    first, second = make(), make()
    assert (await first.claim("crate/crates-io/foo/1.0.0", 30))[0]
    assert (await second.claim("crate/crates-io/foo/1.0.0", 30))[0] is False
    assert await second.lease_holder("crate/crates-io/foo/1.0.0")
    await first.release_lease("crate/crates-io/foo/1.0.0")
    assert not await second.lease_holder("crate/crates-io/foo/1.0.0")
    assert (await second.claim("crate/crates-io/foo/1.0.0", 30))[0]
    await second.release_lease("crate/crates-io/foo/1.0.0")


async def test_the_write_of_a_fetched_entry_gives_its_lease_back(make):
    fetcher, other = make(), make()
    assert (await fetcher.claim("crate/crates-io/foo/1.0.0", 30))[0]
    await fetcher.put("crate/crates-io/foo/1.0.0", BODY, "a", None, None, 1000.0, release=True)
    assert not await other.lease_holder("crate/crates-io/foo/1.0.0")
    assert (await other.get("crate/crates-io/foo/1.0.0")).body == BODY
    owned, entry, _ = await other.claim("crate/crates-io/foo/1.0.0", 30)
    assert owned and entry.body == BODY
    await other.release_lease("crate/crates-io/foo/1.0.0")


async def test_a_claim_given_what_is_usable_takes_no_lease_for_a_stored_entry_it_accepts(make):
    store, other = make(), make()
    await store.put("crate/crates-io/foo/1.0.0", BODY, "a", None, None, 1000.0)
    owned, entry, _ = await other.claim("crate/crates-io/foo/1.0.0", 30, usable=lambda e: True)
    assert entry.body == BODY and owned == (other.backend == "s3")  # s3 reads the bucket's newest under the lease
    if owned:
        await other.release_lease("crate/crates-io/foo/1.0.0")
    owned, entry, _ = await other.claim("crate/crates-io/foo/1.0.0", 30, usable=lambda e: e.meta.stored_at > 2000)
    assert owned and entry.body == BODY  # not accepted: the lease is taken and the entry read under it
    assert not (await store.claim("crate/crates-io/foo/1.0.0", 30, usable=lambda e: False))[0]
    await other.release_lease("crate/crates-io/foo/1.0.0")


async def test_a_lease_whose_holder_never_releases_it_expires(make):
    holder, waiter = make(), make()
    assert (await holder.claim("index/crates-io/foo", 1))[0]
    assert not (await waiter.claim("index/crates-io/foo", 1))[0]
    await asyncio.sleep(1.2)
    assert not await waiter.lease_holder("index/crates-io/foo")
    assert (await waiter.claim("index/crates-io/foo", 1))[0]


async def test_several_takers_of_an_expired_lease_have_one_winner(make):
    assert (await make().claim("index/crates-io/foo", 1))[0]
    await asyncio.sleep(1.2)
    takers = [make() for _ in range(5)]
    won = await asyncio.gather(*(t.claim("index/crates-io/foo", 30) for t in takers))
    assert [w[0] for w in won].count(True) == 1


async def test_the_claim_returns_what_another_instance_stored_meanwhile(make):
    first, second = make(), make()
    assert await second.get("crate/crates-io/foo/1.0.0") is None
    await first.put("crate/crates-io/foo/1.0.0", BODY, "a")
    await first.set_negative("crate/crates-io/bar/1.0.0", "bar 1.0.0 not found on any upstream", 30)
    owned, entry, _ = await second.claim("crate/crates-io/foo/1.0.0", 5)
    assert owned and entry.body == BODY
    owned, entry, negative = await second.claim("crate/crates-io/bar/1.0.0", 5)
    assert owned and entry is None and negative == "bar 1.0.0 not found on any upstream"


async def test_a_negative_record_expires(make):
    store = make()
    await store.set_negative("crate/crates-io/bar/1.0.0", "gone", 1)
    assert await make().negative("crate/crates-io/bar/1.0.0") == "gone"
    await asyncio.sleep(1.2)
    assert await make().negative("crate/crates-io/bar/1.0.0") is None


async def test_listing_deleting_and_clearing(make):
    store = make()
    for key in ("config/crates-io", "index/crates-io/foo", "crate/crates-io/foo/1.0.0", "crate/crates-io/foo/1.1.0",
                "crate/crates-io/foobar/1.0.0"):
        await store.put(key, key.encode() * 10, "a")
    other = make()
    assert await other.keys("crate/crates-io/foo/") == ["crate/crates-io/foo/1.0.0", "crate/crates-io/foo/1.1.0"]
    listed = await other.entries()
    assert [k for k, _ in listed] == sorted(["config/crates-io", "index/crates-io/foo", "crate/crates-io/foo/1.0.0",
                                             "crate/crates-io/foo/1.1.0", "crate/crates-io/foobar/1.0.0"])
    assert all(m.size == len(k.encode()) * 10 for k, m in listed)
    assert await other.delete("crate/crates-io/foo/1.0.0")
    assert await store.get("crate/crates-io/foo/1.0.0") is None or store.backend == "s3"  # s3: local tiers keep theirs
    assert await make().get("crate/crates-io/foo/1.0.0") is None
    assert await other.clear() >= 4
    assert await make().entries() == []


async def test_a_listing_in_pages_is_the_listing(make):
    store = make()
    keys = [f"crate/crates-io/foo/1.{i}.0" for i in range(5)] + ["index/crates-io/foo", "config/crates-io"]
    for key in keys:
        await store.put(key, key.encode() * 3, "a")
    other = make()
    pages = [page async for page in other.entry_pages(size=2)]
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [entry for page in pages for entry in page] == await other.entries()
    assert [k for page in [p async for p in other.entry_pages("crate/crates-io/foo/", size=4)] for k, _ in page] == \
        sorted(k for k in keys if k.startswith("crate/"))


async def test_totals_and_a_purge_by_age_over_a_listing_of_several_pages_agree_on_every_backend(make, monkeypatch):
    from cratecache.operations import catalog
    from cratecache.storage import bucket, local

    monkeypatch.setattr(bucket, "LIST_CHUNK", 7)  # the bucket's listing in chunks of 7
    monkeypatch.setattr(local, "PAGE", 7)  # a purge of the disk backend in pages of 7
    now = time.time()
    store = make()
    keys = [f"crate/crates-io/c{i:02d}/1.0.0" if i % 3 else f"index/crates-io/c{i:02d}" for i in range(30)]
    for i, key in enumerate(keys):
        await store.put(key, key.encode() * 2, "a", now=now - (i % 4) * 1000)  # ages 0 .. 3000 s
    other = make()

    kinds = (await catalog.totals(other, now))["kinds"]
    for kind, count in (("crate", 20), ("index", 10)):
        assert kinds[kind] == {"entries": count, "bytes": sum(len(k) * 2 for k in keys if k.startswith(kind))}
    removed = await catalog.purge(other, now, older_than=1500)
    assert sorted(removed) == sorted(key for i, key in enumerate(keys) if i % 4 >= 2)  # ages 2000 and 3000 s
    assert [key for key, _ in await make().entries()] == sorted(set(keys) - set(removed))
    assert (await catalog.totals(make(), now))["kinds"]["crate"]["entries"] == 20 - sum(
        key.startswith("crate/") for key in removed)


async def test_import_keeps_recorded_provenance(make):
    meta = Meta(hashlib.sha256(BODY).hexdigest(), len(BODY), "far-away", 10.0, 20.0, '"x"', None)
    await make().put_entry("crate/crates-io/foo/1.0.0", meta, BODY)
    got = await make().get("crate/crates-io/foo/1.0.0")
    assert (got.body, got.meta) == (BODY, meta)


async def test_counts_add_up_and_figures_describe_this_host(make):
    store = make()
    await store.add_counts({"crate:hit": 2, "crate:miss": 1})
    await store.add_counts({"crate:hit": 3})
    assert await store.counts() == {"crate:hit": 5, "crate:miss": 1}
    await store.put("crate/crates-io/foo/1.0.0", BODY, "a")
    figures = await store.figures()
    assert figures["entries"]["crate"] == 1 and figures["bytes"] >= len(BODY)
    health = store.health()
    assert health["state"] == "ok" and health["backend"] in ("disk", "s3")


async def test_unreferenced_bytes_are_collected(make, monkeypatch):
    monkeypatch.setattr("cratecache.storage.s3.GC_GRACE_SECONDS", -60)  # s3 spares young blobs; these count as old
    store = make()
    await store.put("index/crates-io/foo", OTHER, "a")
    await store.put("index/crates-io/foo", OTHER + b"\n", "a")  # the first bytes are now unreferenced
    assert await store.collect_garbage() >= 1
    assert (await make().get("index/crates-io/foo")).body == OTHER + b"\n"
    assert await store.collect_garbage() == 0


async def test_releasing_an_expired_lease_never_ends_its_new_holders(make):
    first, second, third = make(), make(), make()
    assert (await first.claim("index/crates-io/foo", 1))[0]
    await asyncio.sleep(1.2)  # first overran its lease (a slow download)
    assert (await second.claim("index/crates-io/foo", 30))[0]
    await first.release_lease("index/crates-io/foo")
    assert await third.lease_holder("index/crates-io/foo")
    assert not (await third.claim("index/crates-io/foo", 30))[0]


async def test_a_read_only_opening_reads_what_was_stored_and_refuses_writes_as_a_fault_of_the_folder(tmp_path):
    """The disk backend on a folder that refuses writes when it opens (a read-only mount): the same reads, and every
    write raises what the folder said, which the proxy turns into a pass-through (storage/readonly.py, faults.py)."""
    import os

    from cratecache.storage import FILE_THRESHOLD
    from cratecache.storage.faults import describe

    from tests.tmpfs import read_only

    settings = CacheSettings(directory=tmp_path / "cache", size_limit=10**9)
    big = os.urandom(FILE_THRESHOLD + 1)
    writer = open_storage(settings)
    put = await writer.put("crate/crates-io/foo/1.0.0", BODY, "a", '"e1"', None, 1000.0)
    spool = writer.spool()
    spool.write(big)
    await writer.put_file("crate/crates-io/big/1.0.0", spool.finish(), "a")
    await writer.put("index/crates-io/foo", OTHER, "a")
    await writer.add_counts({"crate:hit": 2})
    await writer.close()
    with read_only(settings.directory):
        store = open_storage(settings)
        try:
            got = await store.get("crate/crates-io/foo/1.0.0")
            assert (got.body, got.meta) == (BODY, put.meta)
            large = await store.get("crate/crates-io/big/1.0.0")
            assert large.body is None and Path(large.file).read_bytes() == big
            assert await store.meta("index/crates-io/foo") is not None and await store.negative("x") is None
            assert await store.keys("crate/") == ["crate/crates-io/big/1.0.0", "crate/crates-io/foo/1.0.0"]
            assert [k for k, _ in await store.entries()] == ["crate/crates-io/big/1.0.0", "crate/crates-io/foo/1.0.0",
                                                             "index/crates-io/foo"]
            assert (await store.figures())["entries"]["crate"] == 2 and await store.counts() == {"crate:hit": 2}
            owned, entry, _ = await store.claim("crate/crates-io/foo/1.0.0", 30, usable=lambda e: True)
            assert not owned and entry.body == BODY  # a usable entry needs no lease
            for write in (store.put("index/crates-io/bar", OTHER, "a"), store.claim("index/crates-io/bar", 30),
                          store.set_negative("index/crates-io/bar", "gone", 30), store.add_counts({"crate:hit": 1}),
                          store.put_entry("index/crates-io/bar", put.meta, BODY), store.delete("index/crates-io/foo")):
                with pytest.raises(OSError) as refused:
                    await write
                assert describe(refused.value) == "read-only file system"
            assert store.health()["folder"]["writable"] is False
        finally:
            await store.close()
