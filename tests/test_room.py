"""Eviction for writes (storage/room.py): the cache folder stays within its size limit while it fills."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest
from cratecache.storage import room
from cratecache.storage.local import LocalStore
from cratecache.storage.room import Usage, to_free
from cratecache.storage.spool import OFFLOAD_BYTES, Spool

NOW = 1_700_000_000.0
MB = 1024 * 1024
LIMIT = 8 * MB
BOUND = 1.05 * LIMIT  # issue 33: the folder never above 105 % of the limit


def du(path: Path) -> int:
    """What `du` counts: the allocated blocks of every file and folder below `path`."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def value_files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*.val")}


@pytest.mark.parametrize("usage, incoming, expected", [
    (Usage(50, 0, 0), 40, 0),  # fits
    (Usage(60, 0, 0), 40, 0),  # exactly at the limit
    (Usage(60, 0, 0), 50, 15),  # down to 95 of 100, less the write
    (Usage(50, 10, 20), 30, 15),  # the log and partial downloads count
    (Usage(10, 0, 95), 5, 10),  # at most what can be evicted
])
def test_to_free_evicts_down_to_the_low_water_mark_less_the_write(usage, incoming, expected):
    assert to_free(usage, incoming, 100) == expected


def test_writes_keep_the_folder_within_its_limit_and_evict_the_least_recently_used(tmp_path):
    folder = tmp_path / "cache"
    store = LocalStore(folder, LIMIT, hot_bytes=0)
    rng = random.Random(33)
    try:
        store.put("crate/crates-io/kept/1.0.0", b"k" * 200_000, "a", now=NOW)
        written = 0
        for i in range(520):  # 10 times the limit: small entries (in SQLite) and files
            size = rng.choice([2_000, 20_000, 150_000, 600_000])
            store.put(f"crate/crates-io/c{i}/1.0.0", rng.randbytes(size), "a", now=NOW)
            written += size
            if i % 10 == 0:
                store.get("crate/crates-io/kept/1.0.0")  # used all along: never evicted
            assert du(folder) <= BOUND, f"after {written} bytes written"
        assert written > 10 * LIMIT
        assert store.get("crate/crates-io/kept/1.0.0").body == b"k" * 200_000
        assert store.get("crate/crates-io/c519/1.0.0") is not None
        assert store.get("crate/crates-io/c0/1.0.0") is None
        assert store.volume() <= LIMIT
    finally:
        store.close()


def test_a_large_download_makes_room_for_itself_as_it_is_spooled(tmp_path):
    folder = tmp_path / "cache"
    store = LocalStore(folder, LIMIT, hot_bytes=0)
    for i in range(30):  # full: 7.5 MB of 256 KB files
        store.put(f"crate/crates-io/old{i}/1.0.0", os.urandom(256 * 1024), "a", now=NOW)
    async def make_room(incoming: int) -> None:  # as the disk backend does it, on its store thread
        if store.needs_room(incoming):
            store.keep_within(incoming)

    spool = Spool(folder, 2 * MB, store.writability, room=make_room)
    sizes = []

    async def download() -> None:
        for _ in range(6 * MB // OFFLOAD_BYTES):  # a 6 MB crate arriving, a piece at a time
            await spool.awrite(os.urandom(OFFLOAD_BYTES))
            sizes.append(du(folder))

    try:
        asyncio.run(download())
        spooled = spool.finish()
        assert spooled.path.parent == folder / "partial"  # in the cache folder, not passed on
        assert max(sizes) <= BOUND
        store.put_file("crate/crates-io/big/1.0.0", spooled, "a", now=NOW)
        assert du(folder) <= BOUND
        assert store.get("crate/crates-io/big/1.0.0").meta.size == 6 * MB
    finally:
        store.close()


def test_eviction_inside_a_batch_that_rolls_back_keeps_the_evicted_entries_files(tmp_path):
    folder = tmp_path / "cache"
    store = LocalStore(folder, LIMIT, hot_bytes=0)
    try:
        for i in range(30):
            store.put(f"crate/crates-io/old{i}/1.0.0", os.urandom(256 * 1024), "a", now=NOW)
        before = value_files(folder)
        present = [i for i in range(30) if store.get(f"crate/crates-io/old{i}/1.0.0") is not None]
        with pytest.raises(RuntimeError), store.transaction():  # the store thread's batch, failing later on
            store.put("crate/crates-io/new/1.0.0", os.urandom(MB), "a", now=NOW)
            assert store._room.evicted > 0
            raise RuntimeError("a later call of the batch failed")
        assert before <= value_files(folder)
        assert all(store.get(f"crate/crates-io/old{i}/1.0.0") is not None for i in present)

        with store.transaction():  # committed: the evicted entries' files are gone with their rows
            store.put("crate/crates-io/new/1.0.0", os.urandom(MB), "a", now=NOW)
        assert [i for i in present if store.get(f"crate/crates-io/old{i}/1.0.0") is None]
        named = {f for (f,) in store._cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL")}
        assert value_files(folder) == named  # no file left that no row names
    finally:
        store.close()


@pytest.mark.parametrize("policy, index", [("least-recently-used", "Cache_access_time"),
                                           ("least-recently-stored", "Cache_store_time")])
def test_eviction_reads_the_policys_index_not_the_whole_table(tmp_path, policy, index):
    store = LocalStore(tmp_path / "cache", LIMIT, eviction_policy=policy)
    try:
        select = room.diskcache.core.EVICTION_POLICY[policy]["cull"].format(
            fields="rowid, filename, size + COALESCE(length(value), 0)", now=0)
        plan = " ".join(str(row[-1]) for row in store._cache._sql(f"EXPLAIN QUERY PLAN {select}", (room.BATCH,)))
        assert f"USING INDEX {index}" in plan and "TEMP B-TREE" not in plan
    finally:
        store.close()
