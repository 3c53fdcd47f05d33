"""recovery.py: a cache folder whose database was truncated or overwritten opens (the damaged files set aside,
logged, reported by `stats`), and a stale -wal/-shm changes nothing. Real damaged files, no mocks."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest
from cratecache.cli import main
from cratecache.storage import recovery
from cratecache.storage.local import LocalStore
from cratecache.storage.recovery import is_damage, set_aside

from tests.harness import write_proxies

LARGE = os.urandom(3 * 1024 * 1024)  # above FILE_THRESHOLD: a file of its own


def filled(folder: Path) -> Path:
    store = LocalStore(folder, 1 << 30)
    store.put("index/crates-io/foo", b'{"name":"foo"}\n', "up")
    store.put("crate/crates-io/foo/1.0.0", LARGE, "up")
    store.close()
    return folder


def truncate(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])


def overwrite_header(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:100] = b"\xde\xad" * 50
    db.write_bytes(bytes(data))


def overwrite_all(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size))


def damage_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset:offset + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))


@pytest.fixture(params=["bounded", "whole"])
def opening_check(request, monkeypatch):
    """Both checks an opening can make: the bounded one (the header and both ends of the table and its key index; the
    default at any size), and SQLite's whole quick_check (CARGO_CACHE_FULL_CHECK_BYTES asks for it)."""
    monkeypatch.setattr(recovery, "FULL_CHECK_BYTES", 1 << 40 if request.param == "whole" else 0)
    return request.param


@pytest.mark.parametrize("damage, problem", [
    (truncate, "database disk image is malformed"),
    (overwrite_header, "file is not a database"),
    (overwrite_all, "file is not a database"),
    (damage_pages, "database disk image is malformed"),
])
def test_a_damaged_database_is_set_aside_and_the_store_works_empty(tmp_path, caplog, damage, problem, opening_check):
    folder = filled(tmp_path / "cache")
    damage(folder / "cache.db")
    damaged_bytes = (folder / "cache.db").read_bytes()

    with caplog.at_level(logging.WARNING):
        store = LocalStore(folder, 1 << 30)
    try:
        assert store.keys() == []  # started empty
        store.put("index/crates-io/bar", b"bar", "up")
        assert store.get("index/crates-io/bar").body == b"bar"
    finally:
        store.close()

    [aside] = set_aside(folder)
    assert aside.folder.parent == folder and aside.folder.name.startswith("damaged-")
    assert (aside.folder / "cache.db").read_bytes() == damaged_bytes  # kept as it was, for a look
    assert problem in aside.reason
    assert aside.files >= 2 and aside.bytes >= len(LARGE)  # the stored files went with it
    [line] = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert str(folder / "cache.db") in line and problem in line and str(aside.folder) in line
    assert LocalStore(folder, 1 << 30).keys() == ["index/crates-io/bar"]  # opened again: nothing more set aside
    assert len(set_aside(folder)) == 1


@pytest.mark.parametrize("stale", ["cache.db-wal", "cache.db-shm"])
def test_a_garbage_wal_or_shm_left_by_a_crash_changes_nothing(tmp_path, stale):
    folder = filled(tmp_path / "cache")
    (folder / stale).write_bytes(os.urandom(40000))
    store = LocalStore(folder, 1 << 30)
    try:
        assert store.get("index/crates-io/foo").body == b'{"name":"foo"}\n'
        assert Path(store.get("crate/crates-io/foo/1.0.0").file).read_bytes() == LARGE
    finally:
        store.close()
    assert set_aside(folder) == []


def test_a_wal_with_a_valid_header_but_garbage_frames_changes_nothing(tmp_path):
    folder = filled(tmp_path / "cache")
    (folder / "cache.db-wal").write_bytes(bytes.fromhex("377f0682002de218") + os.urandom(40000))
    store = LocalStore(folder, 1 << 30)
    try:
        assert store.keys() == ["crate/crates-io/foo/1.0.0", "index/crates-io/foo"]
    finally:
        store.close()
    assert set_aside(folder) == []


@pytest.mark.parametrize("error, damage", [
    (sqlite3.DatabaseError("file is not a database"), True),
    (sqlite3.DatabaseError("database disk image is malformed"), True),
    (sqlite3.OperationalError("database is locked"), False),
    (sqlite3.OperationalError("attempt to write a readonly database"), False),
    (sqlite3.OperationalError("database or disk is full"), False),
    (OSError(28, "No space left on device"), False),
])
def test_only_a_damaged_file_counts_as_damage_not_a_lock_a_full_or_read_only_disk(error, damage):
    assert is_damage(error) is damage


def _open_and_put(folder: str, name: str) -> None:
    store = LocalStore(Path(folder), 1 << 30)
    store.put(f"index/crates-io/{name}", name.encode(), "up")
    store.close()


def test_workers_opening_a_damaged_folder_at_once_set_it_aside_once(tmp_path):
    folder = filled(tmp_path / "cache")
    overwrite_header(folder / "cache.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_open_and_put, args=(str(folder), f"w{i}")) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert len(set_aside(folder)) == 1
    assert LocalStore(folder, 1 << 30).keys() == ["index/crates-io/w0", "index/crates-io/w1", "index/crates-io/w2"]


def test_stats_reports_the_damaged_database_set_aside(tmp_path, capsys):
    folder = filled(tmp_path / "cache")
    truncate(folder / "cache.db")
    config = write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:9"}], folder)

    assert main(["stats", "--proxies", str(config)]) == 0
    [aside] = set_aside(folder)
    out = capsys.readouterr().out
    assert f"damaged database set aside at {aside.when} (UTC) in {aside.folder}: database disk image is malformed" in out

    assert main(["stats", "--json", "--proxies", str(config)]) == 0
    [reported] = json.loads(capsys.readouterr().out)["damaged"]
    assert reported["folder"] == str(aside.folder) and reported["when"] == aside.when
    assert reported["bytes"] >= len(LARGE)


async def test_the_s3_backends_local_tier_is_set_aside_too_and_the_bucket_still_serves(seaweed, tmp_path, caplog):
    from cratecache.storage import open_storage

    from tests.fixtures.seaweed import s3_cache

    settings = s3_cache(tmp_path / "tier", seaweed.settings(seaweed.new_prefix("recovery")))
    first = open_storage(settings)
    await first.put("crate/crates-io/foo/1.0.0", LARGE, "up")
    await first.close()
    overwrite_header(tmp_path / "tier" / "cache.db")

    with caplog.at_level(logging.WARNING):
        again = open_storage(settings)
    try:
        got = await again.get("crate/crates-io/foo/1.0.0")  # from the bucket, into the new local tier
        assert Path(got.file).read_bytes() == LARGE
    finally:
        await again.close()
    assert len(set_aside(tmp_path / "tier")) == 1
    assert "is damaged (file is not a database)" in caplog.text


def test_a_damaged_pending_uploads_database_is_set_aside_too(tmp_path):
    folder = tmp_path / "cache"
    store = LocalStore(folder, 1 << 30)
    store.mark_pending("crate/crates-io/foo/1.0.0")
    store.close()
    overwrite_header(folder / "pending" / "cache.db")

    store = LocalStore(folder, 1 << 30)
    try:
        assert store.pending() == []
        store.mark_pending("crate/crates-io/bar/1.0.0")
        assert store.pending() == ["crate/crates-io/bar/1.0.0"]
    finally:
        store.close()
    [aside] = set_aside(folder)
    assert aside.folder.parent == folder / "pending" and "file is not a database" in aside.reason


def checkpoint(db: Path) -> None:
    """What SQLite does by itself every 1000 pages: the -wal's pages written into the database file."""
    connection = sqlite3.connect(db)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize("damage, problem", [(overwrite_all, "file is not a database"),
                                             (damage_pages, "database disk image is malformed")])
async def test_a_database_damaged_under_the_running_store_is_a_miss_then_set_aside_by_the_upkeep(
        tmp_path, caplog, damage, problem):
    from cratecache.config import CacheSettings
    from cratecache.storage import open_storage
    from cratecache.storage.faults import describe

    folder = tmp_path / "cache"
    settings = CacheSettings(directory=folder, size_limit=1 << 30)
    store, worker = open_storage(settings), open_storage(settings)  # worker: another process on the folder
    counted: list[str] = []
    store.on_fault = counted.append
    try:
        await store.put("index/crates-io/foo", b'{"name":"foo"}\n', "up")
        await store.put("crate/crates-io/foo/1.0.0", LARGE, "up")
        assert (await worker.get("index/crates-io/foo")).body == b'{"name":"foo"}\n'
        checkpoint(folder / "cache.db")
        damage(folder / "cache.db")
        with caplog.at_level(logging.WARNING):
            assert await store.get("index/crates-io/foo") is None  # a miss: the request fetches it
            assert await store.get("crate/crates-io/foo/1.0.0") is None
            for write in (store.put("index/crates-io/bar", b"x", "up"), store.claim("index/crates-io/bar", 30)):
                with pytest.raises(sqlite3.DatabaseError) as refused:  # refused as damaged: passed through
                    await write
                assert describe(refused.value).startswith("damaged database")
        assert counted == ["get"]
        folder_state = store.health()["folder"]
        assert folder_state["writable"] is False and folder_state["error"] == f"damaged database ({problem})"
        warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
        assert len(warnings) == 1 and f"is damaged (DatabaseError: {problem}, found by get)" in warnings[0]
        assert "set aside and the cache started afresh within 5 s" in warnings[0]
        assert [a.reason for a in set_aside(folder)] == []  # not yet: by the upkeep, not in the request

        with caplog.at_level(logging.WARNING):
            await store.maintain()  # the upkeep (every 5 s): its probe reopens the folder, which sets the file aside
        [aside] = set_aside(folder)
        assert aside.reason == problem
        assert store.writability.writable
        await store.put("index/crates-io/bar", b"kept", "up")
        assert (await store.get("index/crates-io/bar")).body == b"kept"
        await worker.maintain()  # the other process notices the new database and uses it
        assert (await worker.get("index/crates-io/bar")).body == b"kept"
        assert "was replaced by another process" in caplog.text
    finally:
        await store.close()
        await worker.close()


def damage_a_middle_leaf(db: Path) -> int:
    """Overwrite one table leaf page in the middle of the file (none of the pages at either end of the table or of
    an index, which the bounded check reads); its page number."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    leaves = [n for n in range(1, len(data) // size) if data[n * size] == 0x0D]  # 0x0d: a table b-tree leaf
    middle = leaves[len(leaves) // 2]
    data[middle * size:(middle + 1) * size] = b"\xff" * size
    db.write_bytes(bytes(data))
    return middle + 1


def test_an_opening_checks_in_bounded_time_and_leaves_damage_in_the_middle_to_the_read_that_meets_it(tmp_path,
                                                                                                        monkeypatch):
    """The opening does not run the whole quick_check (it reports damage that is not there while another process
    writes); a page in the middle is found by the read that meets it (SQLite raises it)."""
    folder = tmp_path / "cache"
    store = LocalStore(folder, 1 << 30)
    for n in range(3000):
        store.put(f"index/crates-io/c{n:05}", b"x" * 300 + str(n).encode(), "up")
    store.close()
    damage_a_middle_leaf(folder / "cache.db")
    assert recovery.check(folder / "cache.db", full=True) is not None  # damage SQLite's quick_check finds...
    assert recovery.check(folder / "cache.db", full=False) is None  # ...where the bounded check does not look
    monkeypatch.setattr(recovery, "FULL_CHECK_BYTES", 64 * 1024)  # "large": above it
    store = LocalStore(folder, 1 << 30)
    try:
        assert set_aside(folder) == []  # opened at once
        assert store.get("index/crates-io/c00000").body.startswith(b"x")  # the rest is served
    finally:
        store.close()
