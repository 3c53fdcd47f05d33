"""storage/faults.py and the write path on a cache folder that refuses writes (issue 30: full disk, read-only).

The decisions (which error is a fault of the folder, keep or pass through, the once-a-minute warning) are tested as
plain functions; the write path over a real small tmpfs filled up (skipped where mounting is not permitted): a spool
goes on in another folder, a failed write leaves no file, eviction makes room, and a large crate is served without
being kept, then cached once space returns.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3

import diskcache
import pytest
from cratecache.resolver import Resolver
from cratecache.storage import open_storage
from cratecache.storage.faults import RETRY_SECONDS, WARN_SECONDS, Throttle, Writability, describe, is_full, keep
from cratecache.storage.local import LocalStore
from cratecache.storage.spool import NoRoom, Spool

from tests.fake_registry import A_DL, A, FakeNet, a_download, make_settings, upstream
from tests.tmpfs import files, fill, tmpfs

MiB = 1024 * 1024


# -- decisions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "says"), [
    (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk full"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    (OSError(errno.EACCES, "Permission denied"), "permission denied"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), "cannot write"),  # diskcache on a read-only folder
    (sqlite3.OperationalError("database or disk is full"), "disk full"),
    (sqlite3.OperationalError("attempt to write a readonly database"), "read-only file system"),
    (sqlite3.OperationalError("disk I/O error"), "cannot write"),
])
def test_errors_of_the_cache_folder_are_faults(error, says):
    assert describe(error).startswith(says)
    assert is_full(error) == (says == "disk full")


@pytest.mark.parametrize("error", [ValueError("bug"), KeyError("x"), diskcache.Timeout(), sqlite3.OperationalError(
    "database is locked")])
def test_other_errors_are_not_faults_of_the_folder(error):
    assert describe(error) is None
    assert not is_full(error)


@pytest.mark.parametrize(("writable", "last_attempt", "now", "kept"), [
    (True, None, 100.0, True),  # writable: always kept
    (True, 99.0, 100.0, True),
    (False, None, 100.0, True),  # never tried since it failed
    (False, 99.0, 100.0, False),  # tried a second ago: passed through
    (False, 100.0 - RETRY_SECONDS, 100.0, True),  # the periodic retry
])
def test_keep_or_pass_through(writable, last_attempt, now, kept):
    assert keep(writable, last_attempt, now) is kept


def test_throttle_allows_one_per_interval_and_counts_the_rest():
    throttle = Throttle(60)
    assert throttle.allow(0.0)
    assert not throttle.allow(1.0) and not throttle.allow(59.0)
    assert throttle.take_suppressed() == 2
    assert throttle.allow(60.0)
    assert throttle.take_suppressed() == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_writability_warns_once_a_minute_counts_each_failure_and_resumes(caplog):
    clock, counted = Clock(), []
    state = Writability("/cache", clock)
    state.on_error = counted.append
    full = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.WARNING):
        for op in ("put", "spool", "put"):
            assert state.failed(op, full, "crate/x")
            clock.now += 1
        assert not state.failed("put", ValueError("a bug, not the disk"))  # the caller reports it as before
    assert caplog.text.count("cannot be written") == 1
    assert "cache write failed for crate/x (OSError: [Errno 28] No space left on device) in put" in caplog.text
    assert counted == ["put", "spool", "put"] and state.errors == {"put": 2, "spool": 1}
    assert state.snapshot() | {"errors": None} == {"writable": False, "since": 1000.0, "error": describe(full),
                                                  "errors": None}
    assert not state.keep()  # within RETRY_SECONDS of the last failure: passed through
    clock.now += RETRY_SECONDS
    assert state.keep()  # the retry...
    assert not state.keep()  # ...one, not every answer
    clock.now += WARN_SECONDS
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        state.failed("put", full)
        state.succeeded()
    assert "(1 more failed write(s) in the last minute)" not in caplog.text  # only 2 warned, the 2nd and 3rd counted
    assert "(2 more failed write(s) in the last minute)" in caplog.text
    assert "is writable again" in caplog.text
    assert state.writable and state.keep() and state.snapshot()["since"] is None
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a disk that flaps (a few KiB freed and taken again) within the minute
        clock.now += 5
        state.failed("spool", full)
        state.succeeded()
    assert caplog.text == "" and state.errors["spool"] == 2  # counted, not warned again


# -- the write path on a real full tmpfs ----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", 8 * MiB) as disk:
        yield disk


async def test_a_spool_that_fills_the_disk_goes_on_in_the_temporary_folder_with_every_byte(small_disk, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    state = Writability(str(small_disk))
    fill(small_disk, leave=1 * MiB)
    data = os.urandom(3 * MiB)
    spool = Spool(small_disk, 64 * 1024, state, elsewhere)
    for i in range(0, len(data), 64 * 1024):
        await spool.awrite(data[i:i + 64 * 1024])
    spooled = spool.finish()
    assert spooled.passing and spooled.path.parent == elsewhere
    assert spooled.path.read_bytes() == data and spooled.sha256 == hashlib.sha256(data).hexdigest()
    assert list((small_disk / "partial").iterdir()) == []  # nothing partial left in the cache folder
    assert not state.writable and state.errors == {"spool": 1}
    # while the folder is known not writable, the next spool starts elsewhere without failing again
    second = Spool(small_disk, 64 * 1024, state, elsewhere)
    await second.awrite(data[:MiB])
    assert second.passing and state.errors == {"spool": 1}
    second.discard()
    spooled.discard()
    assert list(elsewhere.iterdir()) == []


async def test_a_spool_neither_folder_can_take_is_held_in_memory_up_to_its_bound(small_disk, caplog):
    state = Writability(str(small_disk))
    fill(small_disk, leave=1 * MiB)
    data = os.urandom(3 * MiB)
    elsewhere = small_disk / "tmp"  # the temporary folder on the same full file system
    spool = Spool(small_disk, 64 * 1024, state, elsewhere, memory_limit=4 * MiB)
    with caplog.at_level(logging.WARNING):
        for i in range(0, len(data), 64 * 1024):
            await spool.awrite(data[i:i + 64 * 1024])
    spooled = spool.finish()
    assert spooled.passing and spooled.path is None and spooled.body == data
    assert spooled.sha256 == hashlib.sha256(data).hexdigest()
    assert [f for f in files(small_disk) if f.endswith(".part")] == []
    assert "cannot take an answer the cache folder could not either" in caplog.text

    bounded = Spool(small_disk, 64 * 1024, state, elsewhere, memory_limit=2 * MiB)
    with pytest.raises(NoRoom, match="larger than 2097152 bytes"):
        for i in range(0, len(data), 64 * 1024):
            await bounded.awrite(data[i:i + 64 * 1024])
        bounded.finish()
    bounded.discard()
    assert [f for f in files(small_disk) if f.endswith(".part")] == []


def test_a_write_that_does_not_fit_leaves_no_file(small_disk):
    store = LocalStore(small_disk / "cache", 10**9)
    try:
        store.put("crate/r/small/1.0.0", b"kept", "up")
        before = files(small_disk)
        fill(small_disk, leave=64 * 1024)
        with pytest.raises(OSError) as raised:
            store.put("crate/r/big/1.0.0", os.urandom(512 * 1024), "up")
        assert is_full(raised.value)
        assert files(small_disk) == before  # diskcache's half-written blob file is gone
        assert store.get("crate/r/big/1.0.0") is None and store.get("crate/r/small/1.0.0").body == b"kept"
    finally:
        store.close()


def test_a_full_disk_evicts_least_recently_used_entries_to_make_room(small_disk):
    store = LocalStore(small_disk / "cache", 10**9)  # a size limit far above the disk: cull alone never evicts
    try:
        old = [os.urandom(MiB) for _ in range(3)]
        for n, body in enumerate(old):
            store.put(f"crate/r/old{n}/1.0.0", body, "up")
        store.get("crate/r/old0/1.0.0")  # the most recently used of the three now
        fill(small_disk, leave=256 * 1024)
        new = os.urandom(MiB)
        store.put("crate/r/new/1.0.0", new, "up")  # ENOSPC, evict, once more
        assert store.get("crate/r/new/1.0.0").body == new
        assert store.get("crate/r/old1/1.0.0") is None  # the least recently used went first
    finally:
        store.close()


def test_eviction_that_cannot_make_enough_room_evicts_nothing(small_disk):
    store = LocalStore(small_disk / "cache", 10**9)
    try:
        store.put("crate/r/old/1.0.0", b"x" * 1000, "up")
        fill(small_disk, leave=64 * 1024)
        assert not store.make_room(4 * MiB)
        assert store.get("crate/r/old/1.0.0").body == b"x" * 1000
    finally:
        store.close()


def test_a_size_limit_above_the_disk_is_a_warning_at_start(small_disk, caplog):
    stores = [LocalStore(small_disk / "cache", 10**9), LocalStore(small_disk / "small", 1 * MiB)]
    with caplog.at_level(logging.WARNING):
        for store in stores:
            store.warn_if_larger_than_disk()
            store.close()
    assert caplog.text.count("cache size_limit") == 1
    assert f"cache size_limit {10**9} bytes is above the space its file system" in caplog.text


async def test_a_large_crate_on_a_full_disk_is_served_not_kept_then_cached_once_space_returns(small_disk, tmp_path):
    big = os.urandom(3 * MiB)  # above FILE_THRESHOLD: spooled to a file, served from it
    net = FakeNet()
    net.registry(A, A_DL, a_download, {"big": {"1.0.0": big}, "tin": {"1.0.0": b"\x1f\x8b tin"}})
    settings = make_settings(tmp_path, [upstream("a", A)], directory=str(small_disk / "cache"))
    resolver = Resolver(settings, open_storage(settings.cache), transport=net.transport())
    reg = settings.registries[0]
    clock = Clock()
    resolver.store.writability.clock = clock
    try:
        await resolver.crate(reg, "tin", "1.0.0")  # a hit to serve later
        filler = fill(small_disk, leave=512 * 1024)
        served = await resolver.crate(reg, "big", "1.0.0")
        assert served.state == "miss" and open(served.entry.file, "rb").read() == big
        assert not served.entry.file.startswith(str(small_disk))  # served from the temporary folder
        assert list(resolver.engine.passing) == [served.entry.file]  # deleted a while after (or at close)
        assert [f for f in files(small_disk) if f.startswith("cache/partial")] == []
        assert await resolver.store.get("crate/crates-io/big/1.0.0") is None
        assert not resolver.store.writability.writable
        assert resolver.store.health()["folder"]["error"].startswith("disk full")
        hit = await resolver.crate(reg, "tin", "1.0.0")
        assert hit.state == "hit" and hit.entry.body == b"\x1f\x8b tin"

        filler.unlink()  # space is back: the next miss after the retry interval is kept
        clock.now += RETRY_SECONDS
        asked = len(net.asked())
        again = await resolver.crate(reg, "big", "1.0.0")
        assert again.state == "miss" and len(net.asked()) == asked + 1
        assert resolver.store.writability.writable
        cached = await resolver.crate(reg, "big", "1.0.0")
        assert cached.state == "hit" and len(net.asked()) == asked + 1
        assert open(cached.entry.file, "rb").read() == big
    finally:
        await resolver.aclose()
        await resolver.store.close()
    assert not os.path.exists(served.entry.file)


async def test_an_s3_gateway_whose_local_tier_is_full_serves_the_buckets_entries_without_keeping_them(
    seaweed, small_disk, tmp_path
):
    from tests.fixtures.seaweed import s3_cache

    prefix = seaweed.new_prefix("full-tier")
    writer = open_storage(s3_cache(tmp_path / "writer", seaweed.settings(prefix)))
    reader = open_storage(s3_cache(small_disk / "tier", seaweed.settings(prefix)))
    big, small = os.urandom(3 * MiB), b"\x1f\x8b small crate"
    try:
        await writer.put("crate/crates-io/big/1.0.0", big, "up")
        await writer.put("crate/crates-io/tin/1.0.0", small, "up")
        fill(small_disk)
        got_big = await reader.get("crate/crates-io/big/1.0.0")
        got_small = await reader.get("crate/crates-io/tin/1.0.0")
        assert got_big is not None and open(got_big.file, "rb").read() == big
        assert got_small is not None and got_small.body == small
        assert [f for f in files(small_disk) if "partial" in f or f.endswith(".part")] == []
        assert not reader.writability.writable and sum(reader.writability.errors.values()) >= 2
        os.unlink(got_big.file)
    finally:
        await writer.close()
        await reader.close()
