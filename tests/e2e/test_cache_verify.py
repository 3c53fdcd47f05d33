"""`verify` while a real mitmdump serves: crates cached by the real cargo rot on disk (a file of diskcache's and a row
of its SQLite database); `verify` names both and exits 1, `--repair` evicts them, and the next cargo gets them
again from the upstream, once each."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from cratecache.storage.local import LocalStore

from tests.harness import cli, locked_packages

FILE_CRATE = "crate/crates-io/anyhow/1.0.69"  # 43 KiB: a file of diskcache's own
ROW_CRATE = "crate/crates-io/cfg-if/1.0.0"  # 8 KiB: a row in cache.db
UPKEEP_SECONDS = 6  # a serving proxy drops its memory copies of what another process deleted at its next upkeep


def rot(cache_dir: Path) -> None:
    """One byte changed in each crate's stored bytes, behind the proxy's back (it keeps serving meanwhile)."""
    store = LocalStore(cache_dir, 10**9)
    try:
        stored = store.read_blob(store.meta(FILE_CRATE).sha256)
        assert not isinstance(stored, bytes | None)
        with stored, open(stored.name, "r+b") as f:
            byte = f.read(1)
            f.seek(0)
            f.write(bytes([byte[0] ^ 0xFF]))
        key = f"blob:{store.meta(ROW_CRATE).sha256}"
        body = store.read_blob(store.meta(ROW_CRATE).sha256)
        assert isinstance(body, bytes)
    finally:
        store.close()
    with sqlite3.connect(cache_dir / "cache.db") as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (body[:100] + b"\0" + body[101:], key))


def test_verify_finds_rotten_crates_under_a_serving_proxy_and_repair_makes_cargo_fetch_them_again(
        tmp_path, secondary, entry, start_proxy, new_cargo, small_project):
    cache_dir = tmp_path / "cache"
    proxy = start_proxy([entry(secondary, name="origin")], cache_dir=cache_dir)
    assert new_cargo(proxy).fetch(small_project).returncode == 0
    locked = locked_packages(small_project)
    rot(cache_dir)

    found = cli(proxy.config, "verify")

    assert found.returncode == 1, found.stderr
    bad = sorted(line.split()[1] for line in found.stdout.splitlines() if line.startswith("BAD "))
    assert bad == [FILE_CRATE, ROW_CRATE]
    assert "its bytes changed on the storage" in found.stdout
    assert ": 2 bad (crate 2); `verify --repair` evicts them" in found.stdout
    assert cli(proxy.config, "verify", "--repair").returncode == 1
    assert cli(proxy.config, "verify").returncode == 0

    time.sleep(UPKEEP_SECONDS)
    secondary.clear()
    again = new_cargo(proxy).fetch(small_project)

    assert again.returncode == 0, again.stderr
    assert locked_packages(small_project) == locked  # cargo checked each .crate against these
    assert sorted(p for p in secondary.paths() if p.startswith("/crates/")) == [
        "/crates/anyhow/1.0.69/download", "/crates/cfg-if/1.0.0/download"]
    assert cli(proxy.config, "verify").returncode == 0
