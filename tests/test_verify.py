"""verify.py and `python -m cratecache verify [--repair]`: real stores in tmp_path (and a real SeaweedFS bucket)
with each kind of damage made on the storage itself; what the command prints, its exit status, what --repair
leaves behind."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from cratecache.cli import main
from cratecache.config import CacheSettings
from cratecache.operations import verify
from cratecache.storage import Meta, open_storage
from cratecache.storage.local import FILE_THRESHOLD

from tests.harness import write_proxies

LARGE = os.urandom(FILE_THRESHOLD + 4096)  # kept as a file of its own
SMALL = os.urandom(2000)  # kept inside diskcache's SQLite database
OTHER = os.urandom(3000)
COMPONENT = os.urandom(5000)
DATE = "2026-11-30"
COMPONENT_KEY = f"component/dist/{DATE}/rustc-1.95.0-x86_64-unknown-linux-gnu.tar.xz"
TABLE_KEY = f"dist-hashes/{DATE}/dist/{DATE}/channel-rust-1.95.0.toml"


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def index_file(*versions: tuple[str, str, bytes | str]) -> bytes:
    return b"".join(json.dumps({"name": name, "vers": vers, "deps": [], "features": {}, "yanked": False,
                                "cksum": body if isinstance(body, str) else sha(body)}).encode() + b"\n"
                    for name, vers, body in versions)


async def fill(store, component_hash: str | None = None) -> None:
    """A good cache: index files vouching for each crate, a component its manifest's table vouches for."""
    await store.put("config/crates-io", b'{"dl":"https://static.crates.io/crates"}', "up")
    await store.put("index/crates-io/big", index_file(("big", "1.0.0", LARGE)), "up")
    await store.put("crate/crates-io/big/1.0.0", LARGE, "up")
    await store.put("index/crates-io/small", index_file(("small", "1.0.0", SMALL)), "up")
    await store.put("crate/crates-io/small/1.0.0", SMALL, "up")
    await store.put("index/crates-io/other", index_file(("other", "1.0.0", component_hash and "0" * 64 or OTHER)),
                    "up")
    await store.put("crate/crates-io/other/1.0.0", OTHER, "up")
    table = {"date": DATE, "files": {COMPONENT_KEY.split("/", 1)[1]: component_hash or sha(COMPONENT)}}
    await store.put(TABLE_KEY, json.dumps(table).encode(), "up")
    await store.put(COMPONENT_KEY, COMPONENT, "up")


def flip_file_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))


def flip_sqlite_blob(folder: Path, body: bytes) -> None:
    changed = bytes([body[0] ^ 0xFF]) + body[1:]
    with sqlite3.connect(folder / "cache.db") as db:
        updated = db.execute("UPDATE Cache SET value = ? WHERE key = ?", (changed, f"blob:{sha(body)}")).rowcount
    assert updated == 1  # the small crate really is inside the database


async def run(config: Path, capsys, *args: str) -> tuple[int, list[str]]:
    """The command as a user runs it (its own event loop, so in a thread here)."""
    status = await asyncio.to_thread(main, ["verify", "--proxies", str(config), *args])
    return status, capsys.readouterr().out.splitlines()


async def test_verify_finds_each_damage_on_disk_and_repair_evicts_it(tmp_path, capsys):
    folder = tmp_path / "cache"
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
    await fill(store, component_hash=sha(b"what the manifest says"))
    big = await store.get("crate/crates-io/big/1.0.0")
    await store.close()
    flip_file_byte(big.file)  # a large crate's file rotted
    flip_sqlite_blob(folder, SMALL)  # a small crate's bytes rotted inside SQLite
    config = write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:9"}], folder)

    status, lines = await run(config, capsys)

    assert status == 1
    bad = {line.split()[1]: line for line in lines if line.startswith("BAD ")}
    assert set(bad) == {"crate/crates-io/big/1.0.0", "crate/crates-io/small/1.0.0", "crate/crates-io/other/1.0.0",
                        COMPONENT_KEY}
    assert "(disk): its bytes changed on the storage: SHA-256" in bad["crate/crates-io/big/1.0.0"]
    assert "(disk): its bytes changed on the storage" in bad["crate/crates-io/small/1.0.0"]
    assert f"differs from its index line's cksum {'0' * 16}" in bad["crate/crates-io/other/1.0.0"]
    assert "differs from the hash its manifest gives" in bad[COMPONENT_KEY]
    assert lines[-1].startswith("checked 9 entries (") and ": 4 bad (component 1, crate 3)" in lines[-1]

    status, lines = await run(config, capsys, "--repair")
    assert status == 1 and lines[-1].endswith("4 evicted, fetched again when next asked for")

    status, lines = await run(config, capsys)
    assert (status, lines) == (0, [lines[-1]]) and lines[-1].startswith("checked 5 entries (")
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
    try:
        assert await store.get("crate/crates-io/big/1.0.0") is None  # the next request fetches it again
        await store.put("crate/crates-io/big/1.0.0", LARGE, "up")  # as the proxy would, after a fetch
        assert Path((await store.get("crate/crates-io/big/1.0.0")).file).read_bytes() == LARGE  # not the bad blob
        assert (await store.get("index/crates-io/big")).body == index_file(("big", "1.0.0", LARGE))  # good ones kept
    finally:
        await store.close()
    assert (await run(config, capsys))[0] == 0


async def test_a_clean_cache_verifies_with_exit_0_and_a_plain_count_off_a_terminal(tmp_path, capsys):
    folder = tmp_path / "cache"
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
    await fill(store)
    progress = verify.Progress(io.StringIO(), every=0)
    try:
        report = await verify.verify(store, progress)
        stored = sum(meta.size for _, meta in await store.entries())
    finally:
        await store.close()
    assert report.bad == [] and report.checked == 9
    assert report.bytes == stored > len(LARGE)  # every entry's bytes counted
    text = progress.stream.getvalue().splitlines()
    assert text[0] == "verifying 9 entries (disk)" and text[-1] == f"verified 9/9 entries (disk), {report.bytes} bytes"


async def test_verify_on_s3_finds_a_changed_bucket_object_and_a_rotten_local_copy(seaweed, tmp_path, capsys):
    prefix = seaweed.new_prefix("verify")
    folder = tmp_path / "tier"
    config = write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:9"}], folder,
                           backend="s3", s3=seaweed.yaml(prefix))
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9, backend="s3",
                                       s3=seaweed.settings(prefix)))
    try:
        await fill(store)
        await store.bucket.put(f"blob/{sha(LARGE)}", bytes([LARGE[0] ^ 1]) + LARGE[1:])  # changed in the bucket
        small = await store.tier.get("crate/crates-io/small/1.0.0")
        assert small is not None
    finally:
        await store.close()
    flip_sqlite_blob(folder, SMALL)  # this gateway's local copy rotted; the bucket's is good

    status, lines = await run(config, capsys)

    assert status == 1
    bad = [line for line in lines if line.startswith("BAD ")]
    assert len(bad) == 2
    assert bad[0].startswith("BAD crate/crates-io/big/1.0.0 (bucket): its bytes changed on the storage")
    assert bad[1].startswith("BAD crate/crates-io/small/1.0.0 (local tier): its bytes changed on the storage")
    assert ": 2 bad (crate 2)" in lines[-1]

    assert (await run(config, capsys, "--repair"))[0] == 1
    assert (await run(config, capsys))[0] == 0
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9, backend="s3", s3=seaweed.settings(prefix)))
    try:
        assert await store.get("crate/crates-io/big/1.0.0") is None  # evicted from the bucket: fetched again
        assert (await store.get("crate/crates-io/small/1.0.0")).body == SMALL  # the bucket's good copy serves
        assert await store.bucket.get(f"blob/{sha(LARGE)}") is None  # the changed object is gone
    finally:
        await store.close()


META = Meta(sha(b"abc"), 3, "up", 0.0, 0.0)


@pytest.mark.parametrize("found, problem", [
    (verify.Digest(sha(b"abc"), 3), None),
    (None, "its stored bytes are missing"),
    (verify.Digest(sha(b"ab"), 2), "2 bytes stored, 3 recorded"),
    (verify.Digest(sha(b"abd"), 3), f"its bytes changed on the storage: SHA-256 {sha(b'abd')[:16]}…, recorded "
                                    f"{sha(b'abc')[:16]}…"),
])
def test_digest_problem(found, problem):
    assert verify.digest_problem(META, found) == problem


@pytest.mark.parametrize("index, problem", [
    (None, None),  # the index file is not cached: nothing to compare with
    (index_file(("foo", "2.0.0", "1" * 64)), None),  # the version is not listed
    (index_file(("Foo", "1.0.0", b"abc")), None),
    (index_file(("foo", "1.0.0", "1" * 64)), f"its SHA-256 {sha(b'abc')[:16]}… differs from its index line's cksum "
                                             f"{'1' * 16}…"),
])
def test_crate_problem(index, problem):
    assert verify.crate_problem("crate/crates-io/foo/1.0.0", META, index) == problem


def test_component_problem():
    key, path = f"component/dist/{DATE}/x.tar.xz", f"dist/{DATE}/x.tar.xz"
    assert verify.component_problem(key, META, {}) is None
    assert verify.component_problem(key, META, {"dist/a.toml": {path: META.sha256}}) is None
    assert "differs from the hash its manifest gives, 2222" in verify.component_problem(
        key, META, {"dist/a.toml": {path: "2" * 64}})
    assert "disagree on its hash" in verify.component_problem(
        key, META, {"dist/a.toml": {path: "2" * 64}, "dist/b.toml": {path: META.sha256}})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_is_a_bar_redrawn_in_place():
    progress = verify.Progress(Terminal())
    progress.start(2, "disk")
    progress.step("crate/crates-io/foo/1.0.0", 3 << 20)
    progress.step("index/crates-io/foo", 100)
    shown = progress.stream.getvalue()
    assert shown.startswith("\r[###############...............] 1/2 disk 3 MiB  crate/crates-io/foo/1.0.0")
    assert "\r[##############################] 2/2 disk 3 MiB  index/crates-io/foo" in shown
    assert shown.endswith("\n") and shown.count("\n") == 1


async def test_bytes_the_size_limit_evicted_are_no_damage_but_a_file_deleted_behind_the_stores_back_is(
        tmp_path, capsys):
    folder = tmp_path / "cache"
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
    await fill(store)
    big = await store.get("crate/crates-io/big/1.0.0")
    store.local.delete_blob(sha(SMALL))  # what diskcache's culling does: the blob's row goes, its meta may stay
    await store.close()
    config = write_proxies(tmp_path / "proxies.yaml", [{"name": "up", "url": "http://127.0.0.1:9"}], folder)

    status, lines = await run(config, capsys)
    assert status == 0
    assert len(lines) == 1 and re.fullmatch(r"checked 8 entries \(\d+ bytes\) in [\d.]+ s \(\d+ entries/s, [\d.]+ MB/s\): "
                                            r"0 bad, 1 whose bytes were evicted \(a miss, fetched again when asked for\)",
                                            lines[0])

    os.unlink(big.file)
    status, lines = await run(config, capsys)
    assert status == 1
    assert lines[0] == "BAD crate/crates-io/big/1.0.0 (disk): its stored bytes are missing"


class Recording(verify.Progress):
    """The keys checked, in the order they were."""

    def __init__(self):
        super().__init__(io.StringIO())
        self.keys: list[str] = []

    def step(self, key: str, size: int) -> None:
        self.keys.append(key)
        super().step(key, size)


async def test_a_cache_of_many_pages_is_read_a_page_at_a_time_each_entry_checked_once(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "PAGE", 4)
    monkeypatch.setattr(verify, "DIGESTS_KEPT", 2)  # what is kept beside the page is bounded; what it holds still used
    monkeypatch.setattr(verify, "INDEXES_KEPT", 1)
    monkeypatch.setattr(verify, "TABLES_KEPT", 1)
    folder = tmp_path / "cache"
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
    await fill(store, component_hash=sha(b"what the manifest says"))  # crate "other" and the component are bad
    bodies = {f"many{i}": os.urandom(100 + i) for i in range(6)}
    for name, body in bodies.items():
        await store.put(f"index/crates-io/{name}", index_file((name, "1.0.0", body)), "up")
        await store.put(f"crate/crates-io/{name}/1.0.0", body, "up")
    await store.close()
    flip_sqlite_blob(folder, bodies["many4"])
    store = open_storage(CacheSettings(directory=folder, size_limit=10**9))
    listed, reads = 0, []  # per page read: (entries listed before it, entries checked by then)
    read_page = store.local.entry_page

    def entry_page(prefix: str = "", after: str | None = None, limit: int = 1000):
        nonlocal listed
        page, then = read_page(prefix, after, limit)
        if prefix == "":  # the walk's listing (not an index file's or a date's tables' lookup)
            reads.append((listed, progress.done))
            listed += len(page)
        return page, then

    store.local.entry_page = entry_page
    progress = Recording()
    try:
        keys = await store.keys()
        report = await verify.verify(store, progress)
    finally:
        await store.close()

    assert len(keys) == 21 and len(reads) == 6  # 21 entries: six pages of four
    assert sorted(progress.keys) == keys and report.checked == 21  # each checked, once
    assert reads == [(n, n) for n in range(0, 21, 4)]  # each page read once the pages before it were all checked
    assert [bad.key for bad in report.bad] == [COMPONENT_KEY, "crate/crates-io/many4/1.0.0",
                                               "crate/crates-io/other/1.0.0"]
    assert "its bytes changed on the storage" in report.bad[1].problem
    assert "differs from its index line's cksum" in report.bad[2].problem


def test_the_summary_reports_the_throughput():
    report = verify.Report(checked=4, bytes=3_000_000, seconds=2.0)
    assert verify.summary(report, repair=False) == ["checked 4 entries (3000000 bytes) in 2.00 s (2 entries/s, "
                                                    "1.5 MB/s): 0 bad"]


def test_without_a_total_the_progress_counts_what_was_verified():
    progress = verify.Progress(io.StringIO())
    progress.start(None, "bucket")  # a bucket is not counted before its walk
    progress.step("crate/crates-io/foo/1.0.0", 3)
    progress.step("index/crates-io/foo", 2)
    progress.finish()
    assert progress.stream.getvalue().splitlines() == ["verifying every entry (bucket)",
                                                       "verified 2 entries (bucket), 5 bytes"]
    terminal = verify.Progress(Terminal())
    terminal.start(None, "bucket")
    terminal.step("crate/crates-io/foo/1.0.0", 3 << 20)
    terminal.finish()
    shown = terminal.stream.getvalue()
    assert shown.startswith("\r1 entries bucket 3 MiB  crate/crates-io/foo/1.0.0") and shown.endswith("\n")
    assert "[" not in shown  # no bar without a total


async def test_the_disk_s_entries_are_read_a_page_per_thread_hand_off_not_one_each(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "PAGE", 10)
    store = open_storage(CacheSettings(directory=tmp_path / "cache", size_limit=10**9))
    bodies = {f"c{i:02d}": os.urandom(500 + i) for i in range(20)}
    for name, body in bodies.items():  # 40 entries: each crate's index file vouches for it, a crate check to do
        await store.put(f"index/crates-io/{name}", index_file((name, "1.0.0", body)), "up")
        await store.put(f"crate/crates-io/{name}/1.0.0", body, "up")
    handed: list[str] = []
    real = asyncio.to_thread

    def counted(function, *args, **kwargs):
        handed.append(getattr(function, "__name__", "?"))
        return real(function, *args, **kwargs)

    monkeypatch.setattr(verify.asyncio, "to_thread", counted)
    try:
        report = await verify.verify(store, verify.Progress(io.StringIO()))
    finally:
        monkeypatch.undo()
        await store.close()
    assert (report.checked, report.bad) == (40, [])
    assert len(handed) <= 2 + 2 * 4  # the count, the end of the listing; per page of ten: its listing, its reads


async def test_index_files_beyond_what_a_page_may_hold_are_read_when_their_crate_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "PAGE_BODIES", 0)  # none read with the page
    store = open_storage(CacheSettings(directory=tmp_path / "cache", size_limit=10**9))
    try:
        await fill(store, component_hash=sha(b"what the manifest says"))  # crate "other"'s index line differs
        report = await verify.verify(store, verify.Progress(io.StringIO()))
    finally:
        await store.close()
    assert [bad.key for bad in report.bad] == [COMPONENT_KEY, "crate/crates-io/other/1.0.0"]
    assert "differs from its index line's cksum" in report.bad[1].problem
