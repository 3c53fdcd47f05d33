"""The store at scale (issue 33): listing, totals, purging and garbage collection over a cache larger than a page
(the first rows come after one page is read, a purge deletes page by page, a listing writes nothing, memory holds a
page), and a read from disk that writes nothing (its recency follows with the upkeep's batch)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time

import pytest
from cratecache.operations import catalog
from cratecache.storage import keyscan
from cratecache.storage import local as local_module
from cratecache.storage.disk import DiskStorage
from cratecache.storage.entries import Meta
from cratecache.storage.local import LocalStore
from cratecache.storage.removal import Removal

from tests.tmpfs import read_only

COUNT = 2500  # two and a half pages of `local.PAGE`
NOW = 1_000_000.0


def _fill(folder, count: int = COUNT) -> list[str]:
    store = LocalStore(folder, 1 << 40)
    keys = []
    with store.transaction():
        for i in range(count):
            key = f"crate/crates-io/c{i:05d}/1.0.0" if i % 5 else f"index/crates-io/c{i:05d}"
            body = key.encode() * 4
            stored = NOW - (i % 10) * 1000  # ages 0 .. 9000 s
            store.put_entry(key, Meta(hashlib.sha256(body).hexdigest(), len(body), "up", stored, stored), body)
            keys.append(key)
    store.close()
    return sorted(keys)


@pytest.fixture
async def disk(tmp_path):
    keys = _fill(tmp_path / "c")
    storage = DiskStorage(LocalStore(tmp_path / "c", 1 << 40))
    reads: list[str] = []
    real = storage.local.entry_page

    def counted(*args, **kwargs):
        reads.append("page")
        return real(*args, **kwargs)

    storage.local.entry_page = counted
    yield storage, keys, reads
    await storage.close()


async def test_the_first_row_comes_after_one_page_and_the_rest_follows_in_order(disk):
    storage, keys, reads = disk
    rows = catalog.iter_rows(storage, NOW)
    first = await anext(rows)
    assert first.key == keys[0] and reads == ["page"]
    rest = [row.key async for row in rows]
    assert [first.key, *rest] == keys
    assert len(reads) == 3  # 1000 + 1000 + 500


async def test_a_listing_writes_nothing_to_the_database(disk, tmp_path):
    storage, keys, _ = disk

    def access_times() -> list[tuple]:
        with sqlite3.connect(tmp_path / "c" / "cache.db") as db:  # the recency diskcache evicts by
            return db.execute("SELECT key, access_time, access_count FROM Cache ORDER BY key").fetchall()

    before = access_times()
    assert len([row async for row in catalog.iter_rows(storage, NOW)]) == COUNT
    assert [key for key, _ in await storage.entries()] == keys
    assert access_times() == before


async def test_totals_add_up_every_page(disk):
    storage, keys, _ = disk
    got = await catalog.totals(storage, NOW)
    assert got["kinds"]["index"]["entries"] == COUNT // 5
    assert got["kinds"]["crate"]["entries"] == COUNT - COUNT // 5
    assert got["kinds"]["crate"]["bytes"] == sum(len(k.encode()) * 4 for k in keys if k.startswith("crate/"))


async def test_a_purge_by_age_deletes_each_page_before_reading_the_next(disk):
    storage, keys, _ = disk
    left_after_each: list[int] = []
    real = storage.local.remove_page

    def remove_page(*args):
        following = real(*args)
        left_after_each.append(storage.local.count(""))
        return following

    storage.local.remove_page = remove_page
    removed = await catalog.purge(storage, NOW, older_than=6500)  # ages 7000, 8000 and 9000 s: 3 in 10
    assert len(removed) == COUNT * 3 // 10
    # a page read, its entries deleted, then the next (the purged are all crates, which fill the first two pages)
    assert left_after_each == [COUNT - 375, COUNT - 750, COUNT - 750]
    left = [key for key, _ in await storage.entries()]
    assert sorted(left + removed) == keys and not set(left) & set(removed)
    assert storage.local.count("") == len(left)
    assert len(storage.local._scan.prefixed("blob:")) == len(left)  # the purged entries' bytes were collected


def _put(store: LocalStore, key: str, body: bytes, stored: float) -> None:
    store.put_entry(key, Meta(hashlib.sha256(body).hexdigest(), len(body), "up", stored, stored), body)


def test_a_purge_keeps_the_bytes_a_kept_entry_names_and_bytes_stored_again_since_it_began(tmp_path):
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        _put(store, "crate/crates-io/old/1.0.0", b"shared bytes", NOW - 9000)  # purged, its bytes named below
        _put(store, "crate/crates-io/young/1.0.0", b"shared bytes", NOW)
        _put(store, "crate/crates-io/gone/1.0.0", b"only the purged entry's", NOW - 9000)
        _put(store, "crate/crates-io/again/1.0.0", b"fetched again meanwhile", NOW - 9000)
        _put(store, "crate/crates-io/big/1.0.0", b"b" * 100_000, NOW - 9000)  # kept as a file of its own
        big_file = store._blob_file(store.meta("crate/crates-io/big/1.0.0"))
        assert big_file is not None and os.path.exists(big_file)
        removal = Removal(lambda key, meta: meta.stored_at < NOW - 6500, time.time())
        assert store.remove_page(removal, None) is None
        assert sorted(removal.removed) == ["crate/crates-io/again/1.0.0", "crate/crates-io/big/1.0.0",
                                           "crate/crates-io/gone/1.0.0", "crate/crates-io/old/1.0.0"]
        time.sleep(0.01)
        _put(store, "crate/crates-io/again/1.0.1", b"fetched again meanwhile", NOW)  # during the purge
        assert store.drop_unnamed(removal) == 2
        assert not os.path.exists(big_file)  # its file removed with its row
        assert store.get("crate/crates-io/young/1.0.0").body == b"shared bytes"
        assert store.get("crate/crates-io/again/1.0.1").body == b"fetched again meanwhile"
        assert not store.has_blob(hashlib.sha256(b"only the purged entry's").hexdigest())
        assert [store.get(key) for key in removal.removed] == [None] * 4
    finally:
        store.close()


async def test_garbage_collection_across_pages_keeps_every_named_blob(tmp_path, monkeypatch):
    monkeypatch.setattr(local_module, "PAGE", 300)
    keys = _fill(tmp_path / "c", 1000)
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        with store.transaction():
            for i in range(700):
                store._cache.set(f"blob:{hashlib.sha256(str(i).encode()).hexdigest()}", b"orphan %d" % i)
        assert store.collect_garbage() == 700
        assert all(store.get(key) is not None for key in keys)
        assert store.collect_garbage() == 0
    finally:
        store.close()


def test_the_listing_reads_the_meta_records_from_their_own_index_not_the_table(tmp_path):
    _fill(tmp_path / "c", 50)
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        plan = store._cache._sql("EXPLAIN QUERY PLAN SELECT key, mode, filename, value FROM Cache WHERE "
                                 "key >= 'meta:' AND key < 'meta;' AND key >= ? AND key < ? ORDER BY key LIMIT ?",
                                 ("meta:", "meta:\U0010ffff", 10)).fetchall()
        assert "COVERING INDEX Cache_meta_listing" in str(plan)  # the bytes beside the metas are never read
        listed = list(store.entries())
        store._cache._sql("DROP INDEX Cache_meta_listing")  # a folder that could not take it: the table is read
        assert list(store.entries()) == listed and len(listed) == 50
    finally:
        store.close()


async def test_a_command_s_store_keeps_only_its_small_memory_budget(tmp_path):
    from cratecache.config import CacheSettings
    from cratecache.storage import open_storage

    keys = _fill(tmp_path / "c", 50)
    store = open_storage(CacheSettings(directory=tmp_path / "c", size_limit=1 << 40), memory_bytes=200)
    try:
        for key in keys:
            assert (await store.get(key)).body == key.encode() * 4
        held = [key for key in keys if store.peek(key) is not None]
        assert 0 < len(held) <= 200 // len(keys[0].encode() * 4) + 1 and keys[-1] in held
    finally:
        await store.close()


def _access_times(folder) -> dict[str, float]:
    with sqlite3.connect(folder / "cache.db") as db:  # the recency diskcache evicts by
        return dict(db.execute("SELECT key, access_time FROM Cache"))


@pytest.fixture
def twenty(tmp_path):
    """A store over 20 entries, their keys, and the database's recency before the test touches anything."""
    keys = _fill(tmp_path / "c", 20)
    store = LocalStore(tmp_path / "c", 1 << 40, hot_bytes=0)
    try:
        yield store, keys, _access_times(tmp_path / "c")
    finally:
        store.close()


def test_a_read_from_disk_writes_nothing_and_its_recency_follows_with_the_upkeep(twenty, tmp_path):
    store, keys, before = twenty
    entry = store.get(keys[3])
    assert entry is not None and entry.body == keys[3].encode() * 4
    assert _access_times(tmp_path / "c") == before  # no write transaction on the request's path
    store.upkeep()
    after = _access_times(tmp_path / "c")
    touched = {key for key in after if after[key] != before[key]}
    assert touched == {f"meta:{keys[3]}", f"blob:{entry.meta.sha256}"}


def test_reading_a_record_writes_nothing_and_is_not_a_use(twenty, tmp_path):
    store, keys, before = twenty
    meta = store.meta(keys[5])
    assert meta is not None and meta.size == len(keys[5].encode() * 4)
    assert store.meta("crate/crates-io/absent/1.0.0") is None
    store.upkeep()
    assert _access_times(tmp_path / "c") == before


def _steps(store: LocalStore, read) -> int:
    """SQLite's virtual-machine steps (in hundreds) that `read()` takes: the work of its queries, not their time."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._cache._con.set_progress_handler(count, 100)
    try:
        read()
    finally:
        store._cache._con.set_progress_handler(None, 100)
    return steps[0]


def test_a_page_of_the_listing_costs_the_same_wherever_it_starts(tmp_path):
    # SQLite seeks to the first lower bound on the key a query gives it: with the meta records' own 'meta:' bound
    # first, every page scanned the index from its start (a whole listing of 1M entries took 84 s instead of 2 s)
    keys = _fill(tmp_path / "c", 6000)
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        first = _steps(store, lambda: store.entry_page("", None, 100))
        last = _steps(store, lambda: store.entry_page("", keys[-101], 100))
        assert store.entry_page("", keys[-101], 100)[0][-1][0] == keys[-1]
        assert last <= first * 2, (first, last)
    finally:
        store.close()


def test_totals_are_summed_in_sql_and_records_written_before_sizes_were_tagged_are_tagged_once(tmp_path, monkeypatch):
    keys = _fill(tmp_path / "c", 1500)
    decoded: list[int] = []
    real = keyscan._value
    monkeypatch.setattr(keyscan, "_value", lambda *args: decoded.append(1) or real(*args))
    store = LocalStore(tmp_path / "c", 1 << 40)
    try:
        expected = {"crate": [1200, sum(len(k) * 4 for k in keys if k.startswith("crate/"))],
                    "index": [300, sum(len(k) * 4 for k in keys if k.startswith("index/"))]}
        assert store.totals() == expected and decoded == []  # summed from the sizes index: no record read
        # as an older version wrote them: no size in the tag
        store._cache._sql("UPDATE Cache SET tag = NULL WHERE key >= 'meta:crate/crates-io/c00' AND key < "
                          "'meta:crate/crates-io/c01'")
        assert store.totals() == expected and len(decoded) == 800  # c00000-c00999 but the index files
        assert store.totals() == expected and len(decoded) == 800  # tagged by the first call
    finally:
        store.close()


def test_totals_of_a_read_only_folder_without_the_sizes_index_sum_the_listing(tmp_path):
    keys = _fill(tmp_path / "c", 300)
    with sqlite3.connect(tmp_path / "c" / "cache.db") as db:
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'Cache_meta_sizes'").fetchone() == (0,)
    with read_only(tmp_path / "c"):
        store = LocalStore(tmp_path / "c", 1 << 40)
        try:
            assert store.read_only
            assert store.totals() == {"crate": [240, sum(len(k) * 4 for k in keys if k.startswith("crate/"))],
                                      "index": [60, sum(len(k) * 4 for k in keys if k.startswith("index/"))]}
        finally:
            store.close()


def test_a_listing_takes_a_crates_spelling_from_the_first_line_of_its_index_file_that_names_it():
    body = b'not json\n{"name": "Inflector", "vers": "0.1.0"}\n{"name": "Inflector", "vers": "0.2.0"}\n'
    assert catalog.spelling(body, "inflector") == "Inflector"
    assert catalog.spelling(b'{"name": "other", "vers": "1.0.0"}\n', "inflector") == "inflector"
    assert catalog.spelling(b"", "inflector") == "inflector"


async def test_verify_reads_every_entry_without_writing_their_recency(tmp_path):
    from cratecache.operations import verify

    _fill(tmp_path / "c", 300)
    before = _access_times(tmp_path / "c")
    storage = DiskStorage(LocalStore(tmp_path / "c", 1 << 40))
    try:
        report = await verify.verify(storage)
    finally:
        await storage.close()
    assert (report.checked, report.bad) == (300, [])
    assert _access_times(tmp_path / "c") == before  # checking is not a use: eviction's order stays as it was
