"""store.py: entries (bytes + provenance) in diskcache; a missing or damaged blob is a miss."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from cratecache.storage.local import FILE_THRESHOLD, LocalStore
from cratecache.storage.spool import Spool

from tests.fixtures.rot import flip_byte, rot_blob

NOW = 1_700_000_000.0
BODY = b'{"name":"foo","vers":"1.0.0"}\n'
LARGE = bytes(range(256)) * 1024  # 256 KiB: diskcache keeps it as a file, not in SQLite


@pytest.fixture
def store(tmp_path: Path):
    store = LocalStore(tmp_path / "cache", size_limit=10**9)
    yield store
    store.close()


def test_put_then_get_round_trips_bytes_and_provenance(store):
    put = store.put("index/crates-io/foo", BODY, "mirror", etag='"abc"',
                    last_modified="Tue, 14 Nov 2023 22:13:20 GMT", now=NOW)
    got = store.get("index/crates-io/foo")
    assert got == put
    assert got.body == BODY
    meta = got.meta
    assert (meta.upstream, meta.etag, meta.last_modified) == ("mirror", '"abc"', "Tue, 14 Nov 2023 22:13:20 GMT")
    assert (meta.sha256, meta.size) == (hashlib.sha256(BODY).hexdigest(), len(BODY))
    assert meta.stored_at == meta.checked_at == NOW


def test_missing_key_is_a_miss(store):
    assert store.get("index/crates-io/nope") is None
    assert store.meta("index/crates-io/nope") is None
    assert store.mark_checked("index/crates-io/nope", NOW) is None


def test_put_replaces_an_entry(store):
    store.put("index/crates-io/foo", BODY, "a", etag='"1"', now=NOW)
    store.put("index/crates-io/foo", BODY + BODY, "b", now=NOW + 5)
    got = store.get("index/crates-io/foo")
    assert (got.body, got.meta.upstream, got.meta.etag, got.meta.stored_at) == (BODY + BODY, "b", None, NOW + 5)


def test_mark_checked_updates_checked_at_only(store):
    before = store.put("index/crates-io/foo", BODY, "a", etag='"1"', now=NOW).meta
    after = store.mark_checked("index/crates-io/foo", NOW + 600)
    assert after.checked_at == NOW + 600
    assert after == replace(before, checked_at=NOW + 600)
    assert store.get("index/crates-io/foo").meta == after
    assert store.get("index/crates-io/foo").body == BODY


def test_meta_whose_blob_is_gone_reads_as_a_miss(store):
    meta = store.put("crate/crates-io/foo/1.0.0", LARGE, "a", now=NOW).meta
    store._cache.delete(f"blob:{meta.sha256}")  # as eviction would
    assert store.meta("crate/crates-io/foo/1.0.0") == meta
    assert store.get("crate/crates-io/foo/1.0.0") is None


def test_blob_of_the_wrong_size_reads_as_a_miss(store):
    meta = store.put("crate/crates-io/foo/1.0.0", BODY, "a", now=NOW).meta
    store._cache.set(f"blob:{meta.sha256}", BODY[:-1])  # truncated
    restarted = LocalStore(store.directory, 10**9)  # nothing in memory: only the disk speaks
    assert restarted.get("crate/crates-io/foo/1.0.0") is None
    restarted.close()


def test_identical_bytes_share_a_blob_and_deleting_one_key_keeps_the_other(store):
    store.put("crate/crates-io/foo/1.0.0", LARGE, "a", now=NOW)
    store.put("crate/crates-io/foo-copy/1.0.0", LARGE, "b", now=NOW)
    assert store.delete("crate/crates-io/foo/1.0.0") is True
    assert store.delete("crate/crates-io/foo/1.0.0") is False
    assert store.get("crate/crates-io/foo/1.0.0") is None
    assert store.get("crate/crates-io/foo-copy/1.0.0").body == LARGE


def test_keys_lists_entries_by_prefix(store):
    for key in ("index/crates-io/foo", "index/crates-io/bar", "crate/crates-io/foo/1.0.0", "config/crates-io"):
        store.put(key, key.encode(), "a", now=NOW)
    assert store.keys("index/") == ["index/crates-io/bar", "index/crates-io/foo"]
    assert store.keys("crate/crates-io/foo") == ["crate/crates-io/foo/1.0.0"]
    assert store.keys() == sorted(["index/crates-io/foo", "index/crates-io/bar", "crate/crates-io/foo/1.0.0",
                                   "config/crates-io"])  # blobs are not entries
    assert store.keys("nothing/") == []


def test_a_new_store_on_the_same_directory_sees_the_entries(tmp_path):
    first = LocalStore(tmp_path / "cache", size_limit=10**9)
    first.put("crate/crates-io/foo/1.0.0", LARGE, "a", etag='"x"', now=NOW)
    first.put("index/crates-io/foo", BODY, "b", now=NOW)
    first.close()
    reopened = LocalStore(tmp_path / "cache", size_limit=10**9)
    try:
        assert reopened.keys() == ["crate/crates-io/foo/1.0.0", "index/crates-io/foo"]
        crate = reopened.get("crate/crates-io/foo/1.0.0")
        assert (crate.body, crate.meta.upstream, crate.meta.etag) == (LARGE, "a", '"x"')
        assert reopened.get("index/crates-io/foo").body == BODY
        assert reopened.volume() >= len(LARGE)
    finally:
        reopened.close()


def test_store_creates_its_directory(tmp_path):
    store = LocalStore(tmp_path / "deep" / "cache", size_limit=10**9)
    store.close()
    assert (tmp_path / "deep" / "cache").is_dir()


def test_memory_tier_serves_repeated_reads_and_follows_other_writers(store):
    store.put("index/crates-io/foo", BODY, "a", now=NOW)
    assert store.peek("index/crates-io/foo").body == BODY
    other = LocalStore(store.directory, 10**9)  # another worker on the same folder
    other.put("index/crates-io/foo", BODY + b"more", "b", now=NOW + 1)
    assert store.peek("index/crates-io/foo").body == BODY  # memory until asked for the disk's view
    assert store.get("index/crates-io/foo").body == BODY + b"more"
    assert store.peek("index/crates-io/foo").meta.upstream == "b"
    other.close()


def test_memory_tier_is_bounded(tmp_path):
    small = LocalStore(tmp_path / "small", 10**9, hot_bytes=3 * len(BODY))
    for i in range(10):
        small.put(f"index/crates-io/c{i}", BODY, "a", now=NOW)
    assert [small.peek(f"index/crates-io/c{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3
    small.close()


def test_a_lease_is_released_only_by_its_holder(store):
    other = LocalStore(store.directory, 10**9)  # another worker
    assert store.acquire_lease("crate/crates-io/foo/1.0.0", 60)
    assert not other.acquire_lease("crate/crates-io/foo/1.0.0", 60)
    other.release_lease("crate/crates-io/foo/1.0.0")  # not its lease: nothing happens
    assert other.lease_holder("crate/crates-io/foo/1.0.0")
    store.release_lease("crate/crates-io/foo/1.0.0")
    assert not other.lease_holder("crate/crates-io/foo/1.0.0")
    other.close()


def test_a_lease_of_a_dead_process_is_free(store):
    store._cache.set("lease:crate/crates-io/foo/1.0.0", (2**22 + 12345, "gone"), expire=60)  # no such PID
    assert not store.lease_holder("crate/crates-io/foo/1.0.0")
    assert store.acquire_lease("crate/crates-io/foo/1.0.0", 60)


def test_a_304_is_recorded_only_for_the_bytes_it_confirmed(store):
    meta = store.put("index/crates-io/foo", BODY, "a", now=NOW).meta
    assert store.mark_checked("index/crates-io/foo", NOW + 5, sha256="0" * 64) is None
    assert store.mark_checked("index/crates-io/foo", NOW + 5, sha256=meta.sha256).checked_at == NOW + 5


def test_entries_purged_by_another_process_leave_memory_at_the_next_touch(store):
    store.put("crate/crates-io/foo/1.0.0", BODY, "a", now=NOW)
    store.note_hit("crate/crates-io/foo/1.0.0")
    other = LocalStore(store.directory, 10**9)
    other.delete("crate/crates-io/foo/1.0.0")  # `make cache-purge` elsewhere
    assert store.peek("crate/crates-io/foo/1.0.0") is not None
    assert store.touch_hits() == 1
    assert store.peek("crate/crates-io/foo/1.0.0") is None
    other.close()


def test_pending_upload_marks_survive_the_size_limit_and_a_restart(tmp_path):
    small = LocalStore(tmp_path / "tier", size_limit=64 * 1024)
    small.mark_pending("crate/crates-io/foo/1.0.0")
    for i in range(100):  # far beyond the limit: the oldest entries are culled
        small.put(f"crate/crates-io/filler/{i}", bytes([i]) * 4096, "up")
    small.close()
    reopened = LocalStore(tmp_path / "tier", size_limit=64 * 1024)
    assert reopened.count("crate/") < 100
    assert reopened.pending() == ["crate/crates-io/foo/1.0.0"]
    reopened.unmark_pending("crate/crates-io/foo/1.0.0")
    assert reopened.pending() == []
    reopened.close()


async def test_a_spool_keeps_small_answers_in_memory_and_large_ones_in_a_file_hashed_in_order(tmp_path):
    import hashlib
    import os

    from cratecache.storage.spool import OFFLOAD_BYTES, Spool

    small = Spool(tmp_path, threshold=1000)
    await small.awrite(b"abc")
    done = small.finish()
    assert (done.body, done.path, done.sha256) == (b"abc", None, hashlib.sha256(b"abc").hexdigest())

    pieces = [os.urandom(64 * 1024 + i) for i in range(40)]  # ~2.6 MB in uneven pieces, past OFFLOAD_BYTES twice
    large = Spool(tmp_path, threshold=100_000)
    for piece in pieces:
        await large.awrite(piece)
    spooled = large.finish()
    whole = b"".join(pieces)
    assert spooled.body is None and spooled.path.read_bytes() == whole and len(whole) > 2 * OFFLOAD_BYTES
    assert (spooled.sha256, spooled.size) == (hashlib.sha256(whole).hexdigest(), len(whole))

    cut = Spool(tmp_path, threshold=100_000)
    for piece in pieces[:20]:
        await cut.awrite(piece)
    cut.discard()  # a download cut short: nothing is left behind
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == [spooled.path.name]


@pytest.mark.parametrize("sizes", [
    [64 * 1024 + i for i in range(40)],  # past OFFLOAD_BYTES twice, the file opened by a piece
    [60_000, 60_000, 50_000],  # outgrows memory only with its tail: the file opened by the finish
])
async def test_a_spool_writes_its_file_off_the_event_loop(tmp_path, monkeypatch, sizes):
    """Every write to a partial file (what memory held, each piece, the tail) happens on a thread, never on the loop
    (a write can wait on the disk: the loop would stop serving everyone else meanwhile)."""
    import hashlib
    import os
    import threading

    from cratecache.storage.spool import Spool

    writers, put = [], Spool._put

    def recording(self, data):
        writers.append((threading.get_ident(), len(data)))
        return put(self, data)

    monkeypatch.setattr(Spool, "_put", recording)
    pieces = [os.urandom(n) for n in sizes]
    spool = Spool(tmp_path, threshold=100_000)
    for piece in pieces:
        await spool.awrite(piece)
    spooled = await spool.afinish()
    whole = b"".join(pieces)
    assert spooled.body is None and spooled.path.read_bytes() == whole
    assert (spooled.sha256, spooled.size) == (hashlib.sha256(whole).hexdigest(), len(whole))
    assert sum(n for _, n in writers) == len(whole)
    assert threading.get_ident() not in {thread for thread, n in writers if n}


async def test_an_answer_that_stays_in_memory_finishes_without_a_thread(tmp_path, monkeypatch):
    import asyncio

    from cratecache.storage.spool import Spool

    def no_thread(*args):
        raise AssertionError("a thread for an answer held in memory")

    spool = Spool(tmp_path, threshold=1000)
    await spool.awrite(b"abc")
    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    done = await spool.afinish()
    assert (done.body, done.path) == (b"abc", None) and not (tmp_path / "partial").exists()


def test_a_304_for_an_entry_held_in_memory_reaches_the_disk_with_the_recency(store, tmp_path):
    store.put("index/crates-io/foo", BODY, "mirror", now=NOW)
    other = LocalStore(tmp_path / "cache", size_limit=10**9)  # another worker on the same folder
    try:
        held = store.note_checked("index/crates-io/foo", NOW + 60, hashlib.sha256(BODY).hexdigest())
        assert held.checked_at == NOW + 60
        assert store.peek("index/crates-io/foo").meta.checked_at == NOW + 60
        assert store.get("index/crates-io/foo").meta.checked_at == NOW + 60  # a disk read keeps the newer check
        assert other.meta("index/crates-io/foo").checked_at == NOW  # not written yet
        store.touch_hits()
        assert other.meta("index/crates-io/foo").checked_at == NOW + 60
    finally:
        other.close()


def test_a_304_only_in_memory_is_written_at_close_and_never_over_other_bytes(tmp_path):
    first = LocalStore(tmp_path / "cache", size_limit=10**9)
    first.put("index/crates-io/foo", BODY, "mirror", now=NOW)
    first.put("index/crates-io/bar", BODY, "mirror", now=NOW)
    assert first.note_checked("index/crates-io/foo", NOW + 60) is not None
    assert first.note_checked("index/crates-io/bar", NOW + 60) is not None
    assert first.note_checked("index/crates-io/nope", NOW + 60) is None  # not held: the caller writes it itself
    assert first.note_checked("index/crates-io/foo", NOW + 60, "0" * 64) is None  # other bytes than those held
    second = LocalStore(tmp_path / "cache", size_limit=10**9)
    second.put("index/crates-io/bar", b"replaced\n", "mirror", now=NOW + 30)  # another worker's 200 meanwhile
    first.close()
    try:
        assert second.meta("index/crates-io/foo").checked_at == NOW + 60
        bar = second.get("index/crates-io/bar")
        assert (bar.body, bar.meta.checked_at) == (b"replaced\n", NOW + 30)
    finally:
        second.close()


def test_upkeep_evicts_the_least_recently_used_entries_down_to_the_size_limit(tmp_path):
    filled = LocalStore(tmp_path / "cache", size_limit=10**9, hot_bytes=0)
    bodies = {f"crate/crates-io/c{i}/1.0.0": bytes([i]) * 100_000 for i in range(40)}  # 4 MB in all
    for key, body in bodies.items():
        filled.put(key, body, "mirror", now=NOW)
    filled._cache.close()  # (no close(): that evicts too)
    filled._pending.close()
    # the same folder under a smaller limit (another worker's, or a restart's): its writes did not evict, the upkeep
    store = LocalStore(tmp_path / "cache", size_limit=2 * 1024 * 1024, hot_bytes=0)
    assert all(store.get(key) is not None for key in bodies)
    store.get("crate/crates-io/c0/1.0.0")  # used again: now the most recent
    store.upkeep()
    kept = [key for key in bodies if store.get(key) is not None]
    assert store._cache.volume() <= 2 * 1024 * 1024
    assert "crate/crates-io/c0/1.0.0" in kept and "crate/crates-io/c39/1.0.0" in kept
    assert "crate/crates-io/c1/1.0.0" not in kept and 5 < len(kept) < 30
    store.close()


@pytest.mark.parametrize("body, where", [(BODY, "sqlite"), (LARGE, "file")])
def test_bytes_that_rotted_on_disk_are_a_miss_told_once_and_evicted_and_a_new_copy_is_stored_anew(
        tmp_path, caplog, body, where):
    first = LocalStore(tmp_path / "cache", 10**9)
    meta = first.put("crate/crates-io/foo/1.0.0", body, "a", now=NOW).meta
    first.close()
    assert rot_blob(tmp_path / "cache", meta.sha256) == where
    store = LocalStore(tmp_path / "cache", 10**9)  # nothing in memory: the disk is read
    try:
        assert store.get("crate/crates-io/foo/1.0.0") is None
        assert store.get("crate/crates-io/foo/1.0.0") is None  # evicted: no second warning
        assert store.meta("crate/crates-io/foo/1.0.0") is None and f"blob:{meta.sha256}" not in store._cache
        assert store.damage.counts == {"crate": 1}
        told = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
        actual = hashlib.sha256(flip_byte(body)).hexdigest()
        assert told == [f"cargo-cache: cache folder entry crate/crates-io/foo/1.0.0 is incomplete or damaged: stored "
                        f"as sha256 {meta.sha256[:12]}…, its bytes now hash to {actual[:12]}…; not served, evicted, "
                        "fetched again"]

        store.put("crate/crates-io/foo/1.0.0", body, "a", now=NOW)  # fetched again
        restarted = LocalStore(tmp_path / "cache", 10**9)
        assert restarted.get("crate/crates-io/foo/1.0.0").body == body
        restarted.close()
    finally:
        store.close()


def test_a_large_file_found_damaged_is_evicted_and_its_next_copy_replaces_the_damaged_file(tmp_path):
    store = LocalStore(tmp_path / "cache", 10**9)
    try:
        data = LARGE * 12  # 3 MiB: above FILE_THRESHOLD, kept and served as a file
        spool = Spool(tmp_path / "cache", FILE_THRESHOLD)
        spool.write(data)
        entry = store.put_file("crate/crates-io/big/1.0.0", spool.finish(), "a", now=NOW)
        assert entry.file is not None
        rot_blob(tmp_path / "cache", entry.meta.sha256)
        store.evict_damaged("crate/crates-io/big/1.0.0", entry.meta.sha256, "0" * 64)  # as the blob server does
        assert store.get("crate/crates-io/big/1.0.0") is None

        spool = Spool(tmp_path / "cache", FILE_THRESHOLD)
        spool.write(data)
        again = store.put_file("crate/crates-io/big/1.0.0", spool.finish(), "a", now=NOW)
        assert Path(again.file).read_bytes() == data  # not the damaged file kept as "the same bytes already stored"
        assert store.damage.counts == {"crate": 1}
    finally:
        store.close()


def test_an_entry_that_rotted_in_another_workers_folder_is_evicted_from_every_workers_memory(tmp_path):
    store = LocalStore(tmp_path / "cache", 10**9)
    other = LocalStore(tmp_path / "cache", 10**9)  # another worker on the folder, holding the entry in memory
    try:
        meta = store.put("index/crates-io/foo", BODY, "a", now=NOW).meta
        assert other.get("index/crates-io/foo").body == BODY
        store.evict_damaged("index/crates-io/foo", meta.sha256, "0" * 64)
        other.touch_hits()  # its upkeep
        assert other.peek("index/crates-io/foo") is None
    finally:
        other.close()
        store.close()


def test_a_damaged_file_a_read_only_folder_will_not_let_go_stays_a_miss(store, monkeypatch):
    spool = Spool(store.directory, FILE_THRESHOLD)
    spool.write(LARGE * 12)
    entry = store.put_file("crate/crates-io/big/1.0.0", spool.finish(), "a", now=NOW)

    def read_only():
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(store._cache, "transact", read_only)  # what a remount read-only does to SQLite's writes
    store.evict_damaged("crate/crates-io/big/1.0.0", entry.meta.sha256, "0" * 64)
    assert store.meta("crate/crates-io/big/1.0.0") is not None  # still there...
    assert store.get("crate/crates-io/big/1.0.0") is None  # ...and never served again
    assert store.damage.counts == {"crate": 1}
