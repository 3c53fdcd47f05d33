"""cli.py's parser and the `ls` table (pure): what a user types and reads."""

from __future__ import annotations

import pytest
from cratecache.cli import human_size, listing, parser
from cratecache.operations.catalog import Row


@pytest.mark.parametrize("argv, proxies", [
    (["ls", "--proxies", "after.yaml"], "after.yaml"),
    (["--proxies", "before.yaml", "ls"], "before.yaml"),
    (["--proxies", "before.yaml", "stats", "--proxies", "after.yaml"], "after.yaml"),
    (["purge", "--all", "--proxies", "after.yaml"], "after.yaml"),
])
def test_proxies_is_taken_before_or_after_the_command(argv, proxies):
    assert parser().parse_args(argv).proxies == proxies


def test_proxies_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("CARGO_CACHE_PROXIES", "/etc/cargo-cache/proxies.yaml")
    assert parser().parse_args(["ls"]).proxies == "/etc/cargo-cache/proxies.yaml"


@pytest.mark.parametrize("size, shown", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (9123, "8.9 KiB"),
                                         (123456789, "117.7 MiB"), (3 * 1024**3, "3.0 GiB")])
def test_sizes_are_shown_in_binary_units(size, shown):
    assert human_size(size) == shown


def test_ls_columns_line_up_whatever_the_lengths():
    rows = [Row("k1", "crate", "crates-io", "anyhow", "1.0.69", 9123, "secondary", 5),
            Row("k2", "index", "a-very-long-registry-name", "serde_derive_internals", None, 123456789, "up", 3 * 86400),
            Row("k3", "config", "crates-io", None, None, 300, "crates-io", 120)]
    lines = listing(rows)
    assert lines[0].split() == ["KIND", "REGISTRY", "NAME", "VERSION", "SIZE", "UPSTREAM", "AGE"]
    for column in ("REGISTRY", "NAME", "VERSION", "UPSTREAM", "AGE"):  # left-aligned: every cell starts there
        start = lines[0].index(column)
        assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines[1:])
    end = lines[0].index("SIZE") + len("SIZE")  # right-aligned: every size ends there
    assert [line[:end].rsplit("  ", 1)[-1].strip() for line in lines[1:]] == ["8.9 KiB", "117.7 MiB", "300 B"]
