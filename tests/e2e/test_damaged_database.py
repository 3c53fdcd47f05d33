"""A cache whose database was truncated or overwritten while the proxy was down: a real mitmdump starts on it, says
in one log line what it set aside and why, and the real cargo fetches through it (from the upstream again)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import cli, locked_packages


def truncate(db: Path) -> None:
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])


def overwrite(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size))


@pytest.mark.parametrize("damage, problem", [(truncate, "database disk image is malformed"),
                                             (overwrite, "file is not a database")])
def test_a_proxy_starts_on_a_damaged_database_sets_it_aside_and_cargo_fetches(
        tmp_path, secondary, entry, start_proxy, new_cargo, small_project, damage, problem):
    cache_dir = tmp_path / "shared-cache"
    upstreams = [entry(secondary, name="origin")]
    first = start_proxy(upstreams, cache_dir=cache_dir)
    assert new_cargo(first).fetch(small_project).returncode == 0
    locked = locked_packages(small_project)
    first.stop()
    damage(cache_dir / "cache.db")
    secondary.clear()

    second = start_proxy(upstreams, cache_dir=cache_dir)
    fetched = new_cargo(second).fetch(small_project)

    assert fetched.returncode == 0, fetched.stderr
    assert locked_packages(small_project) == locked
    [line] = [ln for ln in second.log().splitlines() if "is damaged" in ln]
    assert f"the cache database {cache_dir / 'cache.db'} is damaged ({problem}): set aside in {cache_dir}/damaged-" in line
    assert "starting with an empty cache" in line
    crates = [p for p in secondary.paths() if p.startswith("/crates/")]
    assert len(crates) == len(locked)  # fetched again, once each
    stats = cli(second.config, "stats")
    assert stats.returncode == 0, stats.stderr
    assert "damaged database set aside at " in stats.stdout and problem in stats.stdout


def test_a_database_overwritten_under_the_running_proxy_passes_answers_through_then_is_set_aside(
        tmp_path, secondary, entry, start_proxy, new_cargo, small_project):
    import sqlite3

    from tests.e2e.test_disk_faults import metric, status_proxy, wait_for
    from tests.harness import make_project

    cache_dir = tmp_path / "cache"
    other = make_project(tmp_path / "other", 'itoa = "=1.0.1"\n')  # not cached before the damage
    proxy = status_proxy(start_proxy, [entry(secondary, name="origin")], cache_dir)
    warm = new_cargo(proxy).fetch(small_project)
    connection = sqlite3.connect(cache_dir / "cache.db")  # what SQLite does by itself every 1000 pages: the
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # -wal's pages written into the file
    connection.close()
    overwrite(cache_dir / "cache.db")  # under the running proxy

    asked = len(secondary.paths())
    passed = new_cargo(proxy).fetch(other)
    asked_passed = [p for p in secondary.paths()[asked:] if p.startswith("/crates/")]
    errors = metric(proxy, "cargo_cache_store_errors_total")
    healed = wait_for(lambda: metric(proxy, "cargo_cache_store_writable") == 1)  # the upkeep sets it aside
    kept = new_cargo(proxy).fetch(other)
    asked_kept = [p for p in secondary.paths() if p.startswith("/crates/itoa/")]
    hit = new_cargo(proxy).fetch(other)
    asked_hit = [p for p in secondary.paths() if p.startswith("/crates/itoa/")]
    log = proxy.log()
    proxy.stop()

    assert warm.returncode == 0, warm.stderr
    assert passed.returncode == 0, passed.stderr  # answered: passed through, not a 5xx
    assert asked_passed == ["/crates/itoa/1.0.1/download"]
    assert errors >= 1
    damaged = [ln for ln in log.splitlines() if "the cache database in" in ln and "is damaged" in ln]
    assert len(damaged) == 1, log
    assert "file is not a database" in damaged[0] and "answers are passed through without being kept" in damaged[0]
    assert healed, "cargo_cache_store_writable did not return to 1: the damaged database was not set aside"
    assert f"the cache database {cache_dir / 'cache.db'} is damaged (file is not a database): set aside in" in log
    assert len(list(cache_dir.glob("damaged-*"))) == 1
    assert kept.returncode == 0 and hit.returncode == 0, kept.stderr + hit.stderr
    assert len(asked_kept) == 2 and asked_hit == asked_kept  # fetched once more into the new database, then a hit
    assert "Traceback" not in log and "internal error" not in log
