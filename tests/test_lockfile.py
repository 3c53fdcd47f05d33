"""lockfile.py: which lockfile packages are staged for which registry, and which are skipped."""

from __future__ import annotations

import re

import pytest
from cratecache.protocols.lockfile import find_lockfiles, plan, read_lockfile

from tests.fake_registry import make_settings, upstream

LOCK = """version = 3

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde", "tool"]

[[package]]
name = "serde"
version = "1.0.152"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "bb7d1f0d3021d347a83e556fc4683dea2ea09d87bccdf88ff5c12545d89d5efb"

[[package]]
name = "serde"
version = "0.9.15"
source = "sparse+https://index.crates.io/"

[[package]]
name = "tool"
version = "0.3.0"
source = "git+https://git.example.com/tool#0123abcd"

[[package]]
name = "inhouse"
version = "2.0.0"
source = "sparse+https://cargo.corp.example/index/"

[[package]]
name = "other"
version = "1.0.0"
source = "registry+https://example.com/git-index"
"""


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, [upstream("a", "http://a.test/index/")])


def test_registry_packages_are_planned_git_and_path_skipped_and_unservable_ones_named(tmp_path, settings):
    (tmp_path / "Cargo.lock").write_text(LOCK)
    wanted = plan(read_lockfile(tmp_path / "Cargo.lock"), settings)

    assert wanted.crates == {"crates-io": {"serde": {
        "1.0.152": "bb7d1f0d3021d347a83e556fc4683dea2ea09d87bccdf88ff5c12545d89d5efb", "0.9.15": None}}}
    assert wanted.count() == 2
    assert [(p.name, reason) for p, reason in wanted.skipped] == [
        ("app", "path dependency or workspace member"),
        ("tool", "git source"),
    ]
    assert [(p.name, reason) for p, reason in wanted.unservable] == [  # they would break the offline build
        ("inhouse", "registry not configured (sparse+https://cargo.corp.example/index/)"),
        ("other", "a git-protocol registry index (registry+https://example.com/git-index); the proxy serves sparse "
                  "registries: use its sparse+ index URL in Cargo's configuration"),
    ]


def test_only_target_folders_inside_the_tree_are_skipped_and_finding_none_is_an_error(tmp_path):
    tree = tmp_path / "target" / "work"  # a checkout below a folder named target (a CI workspace)
    (tree / "app").mkdir(parents=True)
    (tree / "app" / "Cargo.lock").write_text(LOCK)
    assert find_lockfiles([tree]) == [tree / "app" / "Cargo.lock"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Cargo.lock in .*/empty"):
        find_lockfiles([tmp_path / "empty"])


def test_folders_are_searched_and_missing_paths_named(tmp_path):
    for sub in ("a", "b/c", "b/target/debug"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "Cargo.lock").write_text(LOCK)
    assert find_lockfiles([tmp_path]) == [tmp_path / "a/Cargo.lock", tmp_path / "b/c/Cargo.lock"]
    with pytest.raises(FileNotFoundError, match="no such lockfile or folder: .*/nope"):
        find_lockfiles([tmp_path / "nope"])


@pytest.mark.parametrize("text", ["[[package]]\nversion = 1", "not toml ["])
def test_an_unreadable_lockfile_is_named(tmp_path, text):
    (tmp_path / "Cargo.lock").write_text(text)
    with pytest.raises(ValueError, match="Cargo.lock"):
        read_lockfile(tmp_path / "Cargo.lock")


@pytest.mark.parametrize(("name", "version", "checksum", "problem"), [
    ("../../admin/api/delete-all", "1.0.0", None, "invalid crate name"),
    ("serde", "1.0.0/../../x", None, "version"),
    ("serde", "1.0.0", "../etc", "checksum is not 64 lowercase hex digits"),
])
def test_registry_packages_are_checked_as_the_proxy_checks_requests(tmp_path, name, version, checksum, problem):
    sum_line = f'checksum = "{checksum}"\n' if checksum else ""
    (tmp_path / "Cargo.lock").write_text(f'[[package]]\nname = "{name}"\nversion = "{version}"\n'
                                         f'source = "registry+https://github.com/rust-lang/crates.io-index"\n{sum_line}')
    with pytest.raises(ValueError, match=re.escape(problem)):
        read_lockfile(tmp_path / "Cargo.lock")


@pytest.mark.parametrize(("source", "expected"), [
    ("sparse+https://corp.example/artifactory/api/cargo/corp/index/", "corp"),
    ("sparse+https://corp.example:443/artifactory/api/cargo/corp/index/", "corp"),
    ("sparse+https://corp.example/artifactory/api/cargo/corp/index", "corp"),
    ("sparse+https://corp.example/", None),  # the host, but not that registry's index: Cargo's requests would 404
    ("sparse+https://corp.example/artifactory/api/cargo/other/index/", None),
    ("sparse+https://index.crates.io/sub/", None),
    ("sparse+https://index.crates.io/", "crates-io"),
])
def test_a_sparse_source_belongs_to_the_registry_whose_index_is_exactly_there(tmp_path, source, expected):
    from dataclasses import replace

    from cratecache.protocols.lockfile import registry_for_source

    settings = make_settings(tmp_path, [upstream("a", "http://a.test/index/")])
    corp = replace(settings.registries[0], name="corp", index_host="corp.example", download_host="corp.example",
                   index_path="/artifactory/api/cargo/corp/index/")
    settings = replace(settings, registries=(*settings.registries, corp))
    registry, _ = registry_for_source(source, settings)
    assert (registry.name if registry else None) == expected


V1_LOCK = """[[package]]
name = "app"
version = "0.1.0"
dependencies = [
 "serde 1.0.152 (registry+https://github.com/rust-lang/crates.io-index)",
]

[[package]]
name = "serde"
version = "1.0.152"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "tool"
version = "0.3.0"
source = "git+https://git.example.com/tool#0123abcd"

[metadata]
"checksum serde 1.0.152 (registry+https://github.com/rust-lang/crates.io-index)" = "{serde}"
"checksum tool 0.3.0 (git+https://git.example.com/tool#0123abcd)" = "<none>"
"""


def test_a_version_1_lockfile_gives_its_checksums_from_its_metadata_table(tmp_path, settings):
    (tmp_path / "Cargo.lock").write_text(V1_LOCK.format(serde="bb" * 32))
    wanted = plan(read_lockfile(tmp_path / "Cargo.lock"), settings)
    assert wanted.crates == {"crates-io": {"serde": {"1.0.152": "bb" * 32}}}


def test_a_version_1_lockfile_with_a_malformed_checksum_is_refused(tmp_path):
    (tmp_path / "Cargo.lock").write_text(V1_LOCK.format(serde="../../etc/passwd"))
    with pytest.raises(ValueError, match="package 'serde' '1.0.152': checksum is not 64 lowercase hex digits"):
        read_lockfile(tmp_path / "Cargo.lock")
