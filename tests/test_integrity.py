"""integrity.py: each damaged entry is told once (key, both digests' prefixes) and counted by kind."""

from __future__ import annotations

import logging

from cratecache.storage.integrity import Damage, damage_line, kind_of

EXPECTED, ACTUAL = "a" * 64, "b" * 64


def test_damage_is_told_once_per_entry_and_counted_by_kind(caplog):
    caplog.set_level(logging.WARNING)
    damage, found = Damage(), []
    damage.on_found = found.append
    assert damage.found("crate/crates-io/foo/1.0.0", EXPECTED, ACTUAL, "cache folder") is True
    assert damage.found("crate/crates-io/foo/1.0.0", EXPECTED, ACTUAL, "cache folder") is False  # a second reader
    assert damage.found("component/dist/2026-04-16/rustc.tar.xz", EXPECTED, ACTUAL, "cache folder") is True
    assert damage.found("crate/crates-io/foo/1.0.0", EXPECTED, "c" * 64, "bucket") is True  # new bytes, new damage

    assert damage.counts == {"crate": 2, "component": 1}
    assert found == ["crate", "component", "crate"]
    assert [r.getMessage() for r in caplog.records] == [
        damage_line("crate/crates-io/foo/1.0.0", EXPECTED, ACTUAL, "cache folder"),
        damage_line("component/dist/2026-04-16/rustc.tar.xz", EXPECTED, ACTUAL, "cache folder"),
        damage_line("crate/crates-io/foo/1.0.0", EXPECTED, "c" * 64, "bucket")]


def test_the_line_names_the_key_and_both_digest_prefixes():
    line = damage_line("index/crates-io/serde", EXPECTED, ACTUAL, "bucket")
    assert "bucket entry index/crates-io/serde is incomplete or damaged" in line
    assert f"sha256 {'a' * 12}…" in line and f"hash to {'b' * 12}…" in line and "a" * 13 not in line


def test_kind_of_a_key():
    assert [kind_of(k) for k in ("crate/crates-io/foo/1.0.0", "index/x/y", "manifest/dist/channel-rust-stable.toml",
                                 "config/crates-io", "")] == ["crate", "index", "manifest", "config", "-"]
