"""The advisory databases kept current (policy/databases.py): a checkout caught half-way through a change is not
read, a failure is said once."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from cratecache.policy.databases import Databases

ADVISORY = '''```toml
[advisory]
id = "RUSTSEC-2099-{n:04d}"
package = "crate{n}"
date = "2099-01-02"
categories = ["malicious"]

[versions]
patched = []
```

# crate{n} is malicious
'''


def write(database: Path, *numbers: int) -> None:
    for n in numbers:
        (database / "crates" / f"crate{n}").mkdir(parents=True, exist_ok=True)
        (database / "crates" / f"crate{n}" / f"RUSTSEC-2099-{n:04d}.md").write_text(ADVISORY.format(n=n))


def look(databases: Databases, path: Path) -> list[str]:
    return asyncio.run(databases.refresh([str(path)]))


def test_a_change_is_read_once_a_look_finds_the_files_as_the_look_before(tmp_path):
    write(tmp_path, 1, 2, 3)
    databases = Databases()
    databases.load([str(tmp_path)])
    shutil.rmtree(tmp_path / "crates" / "crate1")  # half-way through a pull or a new clone

    assert look(databases, tmp_path) == [] and databases.get(str(tmp_path)).count == 3  # not read half-way
    shutil.rmtree(tmp_path / "crates" / "crate2")
    write(tmp_path, 4)
    assert look(databases, tmp_path) == [] and databases.get(str(tmp_path)).count == 3  # still changing
    assert look(databases, tmp_path) == [str(tmp_path)]  # settled
    assert sorted(databases.get(str(tmp_path)).by_crate) == ["crate3", "crate4"]
    assert look(databases, tmp_path) == []


def test_a_checkout_that_cannot_be_read_keeps_the_loaded_copy_and_is_said_once(tmp_path, caplog):
    database = tmp_path / "advisory-db"
    write(database, 1)
    databases = Databases()
    databases.load([str(database)])
    shutil.rmtree(database)

    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            assert look(databases, database) == []
    assert databases.get(str(database)).count == 1
    assert [r.getMessage().split(": ", 2)[-1] for r in caplog.records] == [
        f"advisory database '{database}': no such directory (the copy loaded before stays in use)"]
    assert "no such directory" in databases.errors[str(database)]
