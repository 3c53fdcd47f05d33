"""The SQLite the proxy runs has the fix for the WAL-reset bug (sqlitelib.py), and the one library is used by every
module of the process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import diskcache.core
import pytest
from cratecache import sqlitelib

from tests.harness import ROOT


@pytest.mark.parametrize(("version", "affected"), [
    ((3, 6, 23), False),  # before WAL mode
    ((3, 7, 0), True), ((3, 40, 1), True),  # Debian 12's
    ((3, 44, 5), True), ((3, 44, 6), False),  # a backport
    ((3, 45, 0), True), ((3, 50, 6), True), ((3, 50, 7), False),
    ((3, 51, 2), True), ((3, 51, 3), False), ((3, 53, 4), False), ((4, 0, 0), False),
])
def test_which_sqlite_versions_have_the_wal_reset_bug(version, affected):
    assert sqlitelib.has_wal_reset_bug(version) is affected


def test_this_process_and_diskcache_run_the_one_fixed_sqlite():
    assert sqlite3.__name__ == "pysqlite3" and diskcache.core.sqlite3 is sqlite3
    assert not sqlitelib.has_wal_reset_bug(sqlite3.sqlite_version_info) and sqlitelib.problem() is None


def test_a_process_that_imported_the_standard_sqlite3_first_keeps_it_and_is_warned():
    code = ("import sqlite3, logging, sys, tempfile, pathlib; logging.basicConfig(stream=sys.stdout); "
            "from cratecache import sqlitelib; from cratecache.storage.local import LocalStore; "
            "print(sqlite3.__name__, sqlite3.sqlite_version); "
            "LocalStore(pathlib.Path(tempfile.mkdtemp()), 1 << 30).close()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "addon")}, timeout=60)
    assert done.returncode == 0, done.stderr
    name, version = done.stdout.splitlines()[0].split()
    assert name == "sqlite3"
    warned = [line for line in done.stdout.splitlines() if "WAL-reset bug" in line]
    if sqlitelib.has_wal_reset_bug(tuple(int(p) for p in version.split("."))):  # this machine's libsqlite3
        assert len(warned) == 1 and f"SQLite {version} (of the Python module sqlite3)" in warned[0]
    else:
        assert warned == []
