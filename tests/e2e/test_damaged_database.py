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
