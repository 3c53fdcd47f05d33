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
from pathlib import Path

import diskcache
import pytest
from cratecache.config import CacheSettings
from cratecache.resolver import Resolver
from cratecache.storage import open_storage
from cratecache.storage.faults import RETRY_SECONDS, WARN_SECONDS, Throttle, Writability, describe, is_full, keep
from cratecache.storage.local import LocalStore
from cratecache.storage.spool import NoRoom, Spool

from tests.fake_registry import A_DL, A, FakeNet, a_download, make_settings, upstream
from tests.tmpfs import files, fill, read_only, tmpfs

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
    (sqlite3.DatabaseError("file is not a database"), "damaged database"),  # overwritten under the running proxy
    (sqlite3.DatabaseError("database disk image is malformed"), "damaged database"),
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


# -- a cache folder that refuses writes when the store opens (read-only mount, no write permission) -------

def _stored(folder) -> tuple[bytes, bytes]:
    """A writable store's entries, closed: an index file (in the database) and a large crate (a value file)."""
    small, big = b'{"name":"tin","vers":"1.0.0"}\n' * 10, os.urandom(3 * MiB)
    store = LocalStore(folder, 10**9)
    store.put("index/crates-io/tin", small, "up", '"e1"')
    store.put("crate/crates-io/big/1.0.0", big, "up")
    store.close()
    return small, big


def test_a_read_only_cache_folder_opens_read_only_serves_its_entries_and_refuses_every_write(tmp_path, caplog):
    folder = tmp_path / "cache"
    small, big = _stored(folder)
    before = files(folder)
    with read_only(folder), caplog.at_level(logging.WARNING):
        store = LocalStore(folder, 10**9)
        try:
            assert store.read_only
            index, crate = store.get("index/crates-io/tin"), store.get("crate/crates-io/big/1.0.0")
            assert (index.body, index.meta.etag) == (small, '"e1"')
            assert crate.body is None and open(crate.file, "rb").read() == big  # served from its file
            assert store.get("crate/crates-io/none/1.0.0") is None
            assert store.keys() == ["crate/crates-io/big/1.0.0", "index/crates-io/tin"]
            assert store.count("crate/") == 1 and store.volume() >= len(big)
            for write in (lambda: store.put("index/crates-io/new", b"x", "up"),
                          lambda: store.acquire_lease("crate/crates-io/new/1.0.0", 30),
                          lambda: store.set_negative("crate/crates-io/new/1.0.0", "gone", 30),
                          lambda: store.mark_checked("index/crates-io/tin", 2000.0),
                          lambda: store.delete("index/crates-io/tin")):
                with pytest.raises(OSError) as refused:
                    write()
                assert describe(refused.value) == "read-only file system"
            store.upkeep()  # nothing to write back: no error
            snapshot = store.writability.snapshot()
        finally:
            store.close()
        assert files(folder) == before  # nothing written, nothing set aside as damaged
    assert snapshot["writable"] is False and snapshot["error"] == "read-only file system" and snapshot["since"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"the cache folder {folder} cannot be written (read-only file system): opened read-only" in warnings[0]
    assert "serving hits from it, passing misses through, not caching" in warnings[0]


def test_a_read_only_folder_without_a_usable_database_opens_empty_and_sets_nothing_aside(tmp_path, caplog):
    never_used, damaged = tmp_path / "ro" / "never-used", tmp_path / "damaged"
    (tmp_path / "ro").mkdir()
    _stored(damaged)
    with open(damaged / "cache.db", "r+b") as db:
        db.write(os.urandom(4096))  # the header and first page overwritten
    with read_only(tmp_path / "ro"), read_only(damaged), caplog.at_level(logging.WARNING):
        for folder in (never_used, damaged):
            store = LocalStore(folder, 10**9)
            assert store.read_only and store.keys() == [] and store.get("index/crates-io/tin") is None
            store.close()
    assert not never_used.exists()
    assert sorted(p.name for p in damaged.iterdir() if p.name.startswith("damaged-")) == []  # not set aside
    assert f"the cache database {damaged / 'cache.db'} cannot be read" in caplog.text
    assert "cannot be set aside in a folder that refuses writes" in caplog.text


async def test_a_store_opened_read_only_is_reopened_for_writing_once_the_folder_takes_writes(tmp_path, caplog):
    folder = tmp_path / "cache"
    small, _ = _stored(folder)
    with read_only(folder) as bind:
        store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
        counted = []
        store.on_fault = counted.append
        try:
            await store.maintain()  # the upkeep's probe: still read-only
            assert store.local.read_only and not store.writability.writable and counted == ["probe"]
            bind.writable()
            with caplog.at_level(logging.WARNING):
                await store.maintain()  # no miss needed: the upkeep finds it writable and reopens the database
            assert not store.local.read_only and store.writability.writable
            assert "takes writes again: its database is reopened for writing" in caplog.text
            assert "is writable again" in caplog.text
            await store.put("index/crates-io/new", b"kept", "up")
            assert (await store.get("index/crates-io/tin")).body == small
        finally:
            await store.close()
    reopened = LocalStore(folder, 10**9)
    assert not reopened.read_only and reopened.get("index/crates-io/new").body == b"kept"
    reopened.close()


async def test_a_proxy_on_a_read_only_folder_serves_hits_passes_misses_through_then_caches_once_writable(tmp_path):
    big = os.urandom(3 * MiB)  # above FILE_THRESHOLD: spooled to a file, served from it
    net = FakeNet()
    net.registry(A, A_DL, a_download, {"big": {"1.0.0": big}, "tin": {"1.0.0": b"\x1f\x8b tin"}})
    folder = tmp_path / "cache"

    def downloads(net: FakeNet) -> int:
        return len([url for url in net.asked() if url.startswith(A_DL)])

    settings = make_settings(tmp_path, [upstream("a", A)], directory=str(folder))
    reg = settings.registries[0]
    warm = Resolver(settings, open_storage(settings.cache), transport=net.transport())
    await warm.crate(reg, "tin", "1.0.0")
    await warm.aclose()
    await warm.store.close()
    with read_only(folder) as bind:
        resolver = Resolver(settings, open_storage(settings.cache), transport=net.transport())
        try:
            asked = downloads(net)
            hit = await resolver.crate(reg, "tin", "1.0.0")
            assert hit.state == "hit" and hit.entry.body == b"\x1f\x8b tin" and downloads(net) == asked
            passed = await resolver.crate(reg, "big", "1.0.0")
            assert passed.state == "miss" and open(passed.entry.file, "rb").read() == big
            assert not passed.entry.file.startswith(str(folder))  # served from the temporary folder, not kept
            again = await resolver.crate(reg, "big", "1.0.0")
            assert again.state == "miss" and downloads(net) == asked + 2  # fetched each time
            assert resolver.store.health()["folder"]["error"] == "read-only file system"

            bind.writable()
            await resolver.store.maintain()  # the upkeep (every 5 s in the proxy) reopens it for writing
            assert resolver.store.writability.writable
            kept = await resolver.crate(reg, "big", "1.0.0")
            assert kept.state == "miss" and downloads(net) == asked + 3
            cached = await resolver.crate(reg, "big", "1.0.0")
            assert cached.state == "hit" and downloads(net) == asked + 3
            assert open(cached.entry.file, "rb").read() == big
        finally:
            await resolver.aclose()
            await resolver.store.close()


async def test_an_s3_gateway_whose_local_tier_is_read_only_at_start_serves_the_buckets_entries(seaweed, tmp_path):
    from tests.fixtures.seaweed import s3_cache

    prefix = seaweed.new_prefix("ro-tier")
    writer = open_storage(s3_cache(tmp_path / "writer", seaweed.settings(prefix)))
    (tmp_path / "tier").mkdir()
    big, small = os.urandom(3 * MiB), b"\x1f\x8b small crate"
    try:
        await writer.put("crate/crates-io/big/1.0.0", big, "up")
        await writer.put("crate/crates-io/tin/1.0.0", small, "up")
        with read_only(tmp_path / "tier"):
            reader = open_storage(s3_cache(tmp_path / "tier", seaweed.settings(prefix)))
            try:
                got_big = await reader.get("crate/crates-io/big/1.0.0")
                got_small = await reader.get("crate/crates-io/tin/1.0.0")
                assert got_big is not None and open(got_big.file, "rb").read() == big
                assert got_small is not None and got_small.body == small
                assert files(tmp_path / "tier") == []
                assert not reader.writability.writable
                os.unlink(got_big.file)
            finally:
                await reader.close()
    finally:
        await writer.close()


PERMISSION_DENIED = """
import json, sys
from pathlib import Path
from cratecache.storage.faults import describe
from cratecache.storage.local import LocalStore
store = LocalStore(Path(sys.argv[1]), 10**9)
found = store.get("index/crates-io/tin")
try:
    store.put("index/crates-io/new", b"x", "up")
    refused = None
except OSError as e:
    refused = describe(e)
print(json.dumps({"read_only": store.read_only, "body": found.body.decode() if found else None, "refused": refused,
                  "folder": store.writability.snapshot()}))
store.close()
"""


def test_a_folder_the_proxys_user_may_not_write_opens_read_only_too(tmp_path):
    """EACCES, for real: root without CAP_DAC_OVERRIDE (as an unprivileged user) on a folder of mode 0555."""
    import json
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("dropping root's permission override needs root and setpriv (util-linux)")
    folder = tmp_path / "cache"
    small, _ = _stored(folder)
    before = files(folder)
    folder.chmod(0o555)
    try:
        done = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c",
                               PERMISSION_DENIED, str(folder)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "addon")})
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["read_only"] and seen["body"] == small.decode()
    assert seen["refused"].startswith("permission denied") and seen["folder"]["error"].startswith("permission denied")
    assert "opened read-only" in done.stderr and "permission denied" in done.stderr
    assert files(folder) == before


def test_an_immutable_reading_turns_to_misses_once_another_process_writes_the_database(small_disk, caplog):
    """A file system remounted read-only: SQLite reads the database only as an immutable file. Once the folder is
    writable again and another worker has reopened it and written, that reading would mix cached and new pages."""
    import subprocess

    folder = small_disk / "cache"
    small, _ = _stored(folder)
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True).returncode == 0
    reader = LocalStore(folder, 10**9)
    try:
        assert reader.read_only and reader.get("index/crates-io/tin").body == small
        assert subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], capture_output=True).returncode == 0
        worker = LocalStore(folder, 10**9)  # the other worker reopened it first, and writes
        for n in range(50):
            worker.put(f"index/crates-io/new{n}", os.urandom(2000), "up")
        worker.close()  # (its last connection checkpoints the -wal into the database file)
        with caplog.at_level(logging.WARNING):
            assert reader.get("index/crates-io/tin") is None and reader.keys() == []
        assert "changed while it was read as an immutable file" in caplog.text
        reader.probe()  # the upkeep's: reopened for writing, it reads the new database
        assert not reader.read_only and reader.get("index/crates-io/new49") is not None
        assert reader.get("index/crates-io/tin").body == small
    finally:
        reader.close()
