"""ahead.py: which index files a cached index file leads Cargo to ask for next, and which are in use (pure)."""

from __future__ import annotations

import json

from cratecache.protocols.ahead import InUse, dependency_names


def line(name: str, vers: str, *deps: dict) -> bytes:
    return json.dumps({"name": name, "vers": vers, "deps": list(deps), "cksum": "0" * 64, "features": {}}).encode()


def dep(name: str, kind: str = "normal", **fields: object) -> dict:
    return {"name": name, "req": "^1", "features": [], "optional": False, "default_features": True,
            "target": None, "kind": kind, "registry": None, **fields}


def test_normal_and_build_dependencies_count_dev_dependencies_do_not():
    body = line("foo", "1.0.0", dep("Serde"), dep("cc", "build"), dep("proptest", "dev"))
    assert dependency_names(body) == {"serde", "cc"}


def test_optional_and_target_specific_dependencies_count():
    body = line("foo", "1.0.0", dep("libc", target="cfg(unix)"), dep("rayon", optional=True))
    assert dependency_names(body) == {"libc", "rayon"}


def test_a_renamed_dependency_is_looked_up_by_its_package_name():
    assert dependency_names(line("foo", "1.0.0", dep("ser", package="serde"))) == {"serde"}


def test_a_dependency_in_another_registry_is_not_this_registrys_index_file():
    body = line("foo", "1.0.0", dep("corp-util", registry="https://github.com/rust-lang/crates.io-index"))
    assert dependency_names(body) == set()


def test_only_the_newest_versions_count():
    body = b"\n".join(line("foo", f"1.0.{i}", dep(f"old{i}")) for i in range(40)) + b"\n"
    names = dependency_names(body, recent=32)
    assert len(names) == 32 and "old39" in names and "old7" not in names
    assert dependency_names(body, recent=0) == set()


def test_lines_and_names_that_do_not_parse_are_skipped():
    body = b"\n".join([b"{not json", b"[1, 2]", json.dumps({"deps": "x"}).encode(),
                       line("foo", "1.0.0", dep("../etc"), dep("ok"), {"kind": "normal"}, "text"), b""])
    assert dependency_names(body) == {"ok"}


def test_in_use_lists_what_was_asked_for_within_the_window_newest_first():
    in_use = InUse()
    in_use.asked("old", 0.0)
    in_use.asked("serde", 100.0)
    in_use.asked("anyhow", 200.0)
    in_use.asked("serde", 300.0)  # asked again: newest now
    assert in_use.recent(300.0, window=3600) == ["serde", "anyhow", "old"]
    assert in_use.recent(3650.0, window=3600) == ["serde", "anyhow"]  # "old" was last asked 3650 s ago
    assert in_use.recent(4000.0, window=3600) == []


def test_in_use_keeps_a_bounded_number_dropping_the_longest_unasked():
    in_use = InUse(kept=2)
    for when, name in enumerate(["a", "b", "a", "c"]):
        in_use.asked(name, float(when))
    assert in_use.recent(4.0) == ["c", "a"]
