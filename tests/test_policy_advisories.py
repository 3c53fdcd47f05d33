"""The RustSec advisory database: real advisories of the snapshot read as cargo-audit reads them, broken files
skipped with a warning naming them, and a fingerprint that changes exactly when the files do."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from cratecache.policy.advisories import Database, fingerprint, load, parse
from cratecache.semver import parse_version

from tests.fixtures.rustsec import SNAPSHOT as SNAPSHOT_DIR

RUSTSEC = SNAPSHOT_DIR


@pytest.fixture(scope="module")
def db() -> Database:
    return load(RUSTSEC)


def advisory(db: Database, crate: str, id: str):
    (found,) = [a for a in db.for_crate(crate) if a.id == id]
    return found


def affected(adv, versions: list[str]) -> list[str]:
    return [v for v in versions if adv.affects(parse_version(v))]


def test_the_whole_snapshot_loads(db: Database) -> None:
    files = list(RUSTSEC.glob("crates/*/*.md"))
    assert len(files) == 1205
    assert db.count == len(files)
    assert db.skipped == ()
    assert len(db.by_crate) == 908
    assert sum(len(found) for found in db.by_crate.values()) == db.count
    assert db.newest == "2026-08-20"
    assert db.path == str(RUSTSEC)
    assert db.fingerprint == fingerprint(RUSTSEC)
    kinds = Counter(a.kind for found in db.by_crate.values() for a in found)
    assert kinds == {"vulnerable": 656, "informational": 476, "malicious": 73}
    informational = Counter(a.informational for found in db.by_crate.values() for a in found)
    assert informational == {None: 729, "unmaintained": 267, "unsound": 203, "notice": 6}
    # the toolchain's own advisories (rust/std, rust/rustdoc ...) are not crates
    assert db.for_crate("std") == ()


def test_openssl_advisories(db: Database) -> None:
    old = advisory(db, "openssl", "RUSTSEC-2016-0001")
    assert (old.kind, old.informational, old.date) == ("vulnerable", None, "2016-11-05")
    assert old.title == "SSL/TLS MitM vulnerability due to insecure defaults"
    assert [str(r) for r in old.patched] == [">=0.9.0"] and old.unaffected == () and old.withdrawn is None
    assert affected(old, ["0.1.0", "0.8.3", "0.9.0-rc.1", "0.9.0", "0.10.70"]) == ["0.1.0", "0.8.3", "0.9.0-rc.1"]
    alpn = advisory(db, "openssl", "RUSTSEC-2025-0004")
    # no `unaffected`: every version below the fix counts, 0.9 included (RustSec's rule, as cargo-audit applies it)
    assert affected(alpn, ["0.9.24", "0.10.0", "0.10.69", "0.10.70", "0.10.72", "0.11.0"]) == [
        "0.9.24",
        "0.10.0",
        "0.10.69",
    ]
    assert db.for_crate("OpenSSL") == db.for_crate("openssl") and len(db.for_crate("openssl")) == 10


def test_malicious_advisories(db: Database) -> None:
    squat = advisory(db, "win-crypto", "RUSTSEC-2023-0109")
    assert squat.kind == "malicious" and squat.patched == () and squat.unaffected == ()
    assert affected(squat, ["0.0.1", "0.2.0", "1.0.0-alpha", "99.0.0"]) == ["0.0.1", "0.2.0", "1.0.0-alpha", "99.0.0"]
    # the compromised release of a popular crate: only it, the earlier ones are unaffected
    arrayref = advisory(db, "arrayref", "RUSTSEC-2026-0260")
    assert arrayref.kind == "malicious"
    assert affected(arrayref, ["0.3.6", "0.3.9", "0.3.10", "0.4.0"]) == ["0.3.10", "0.4.0"]
    # four malware advisories of the snapshot lack the category: they read as vulnerable, every version
    unmarked = advisory(db, "aronenao", "RUSTSEC-2026-0261")
    assert unmarked.kind == "vulnerable" and affected(unmarked, ["0.1.0", "2.3.4"]) == ["0.1.0", "2.3.4"]


def test_informational_and_withdrawn(db: Database) -> None:
    adler = advisory(db, "adler", "RUSTSEC-2025-0056")
    assert (adler.kind, adler.informational) == ("informational", "unmaintained")
    assert adler.title == "adler crate is unmaintained, use adler2 instead"
    assert affected(adler, ["1.0.2"]) == ["1.0.2"]
    withdrawn = advisory(db, "daemonize", "RUSTSEC-2021-0147")
    assert withdrawn.withdrawn == "2023-02-19" and withdrawn.kind == "informational"
    assert affected(withdrawn, ["0.4.1", "0.5.0"]) == []


def test_unaffected_and_patched_ranges(db: Database) -> None:
    tls = advisory(db, "tokio-rustls", "RUSTSEC-2020-0019")
    assert [str(r) for r in tls.unaffected] == ["<0.12"]
    versions = ["0.11.9", "0.12.0", "0.12.2", "0.12.3", "0.12.9", "0.13.0", "0.13.1", "0.14.0"]
    assert affected(tls, versions) == ["0.12.0", "0.12.2", "0.13.0"]


FRONT = (
    '```toml\n[advisory]\nid = "RUSTSEC-2099-0001"\npackage = "demo"\ndate = "2099-01-02"\n{extra}\n'
    "[versions]\npatched = [{patched}]\n```\n\n# Demo title\n\nBody.\n"
)


def demo(extra: str = "", patched: str = '">= 1.2.0"') -> str:
    return FRONT.format(extra=extra, patched=patched)


def test_parse_one_file() -> None:
    adv = parse(demo(), "crates/demo/RUSTSEC-2099-0001.md")
    assert (adv.id, adv.package, adv.kind, adv.title, adv.date) == (
        "RUSTSEC-2099-0001",
        "demo",
        "vulnerable",
        "Demo title",
        "2099-01-02",
    )
    assert affected(adv, ["1.1.9", "1.2.0"]) == ["1.1.9"]
    assert parse(demo('categories = ["malicious", "code-execution"]')).kind == "malicious"
    notice = parse(demo('informational = "notice"'))
    assert (notice.kind, notice.informational) == ("informational", "notice")
    assert parse(demo("", "")).affects(parse_version("5.0.0"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# no front block\n", "x.md: no ```toml front block at the top"),
        (demo('informational = "unmaintained'), "x.md: bad TOML: "),
        (demo().replace('package = "demo"\n', ""), "x.md: [advisory] package missing"),
        (demo().replace('id = "RUSTSEC-2099-0001"', "id = 7"), "x.md: [advisory] id not a string: 7"),
        (demo(patched='">= 1.2.0 || 2"'), "x.md: [versions] patched: invalid version requirement '>= 1.2.0 || 2'"),
        (demo(patched='"1.0.0-"'), "empty identifier segment in pre-release identifier"),
        (demo().replace("patched = [", "patched = 1 #["), "x.md: [versions] patched is not a list of strings"),
        (demo().replace("[advisory]", "[other]"), "x.md: no [advisory] table"),
    ],
)
def test_parse_errors_name_the_file_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse(text, "x.md")
    assert problem in str(caught.value)


def copy_some(tmp_path: Path, crates: list[str]) -> Path:
    for crate in crates:
        shutil.copytree(RUSTSEC / "crates" / crate, tmp_path / "crates" / crate)
    return tmp_path


def test_broken_files_are_skipped_with_a_warning_naming_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = copy_some(tmp_path, ["openssl", "tokio-rustls", "adler", "win-crypto", "arrayref"])
    crates = root / "crates"
    (crates / "adler" / "RUSTSEC-2025-0056.md").write_text(demo('informational = "unmaint'))
    openssl = crates / "openssl" / "RUSTSEC-2016-0001.md"
    openssl.write_text(openssl.read_text().replace('package = "openssl"\n', ""))
    tls = crates / "tokio-rustls" / "RUSTSEC-2020-0019.md"
    tls.write_text(tls.read_text().replace('unaffected = ["< 0.12"]', 'unaffected = ["< 0.12 || > 1"]'))
    (crates / "win-crypto" / "RUSTSEC-2099-0002.md").write_bytes(b"```toml\n\xff\xfe\n```\n")
    (crates / "arrayref" / "RUSTSEC-2099-0003.md").write_text(demo() + "x" * 300_000)

    with caplog.at_level(logging.WARNING, logger="cratecache.policy.advisories"):
        db = load(root)

    broken = {
        str(crates / "adler" / "RUSTSEC-2025-0056.md"): "bad TOML",
        str(openssl): "[advisory] package missing",
        str(tls): "[versions] unaffected: invalid version requirement '< 0.12 || > 1'",
        str(crates / "win-crypto" / "RUSTSEC-2099-0002.md"): "not UTF-8",
        str(crates / "arrayref" / "RUSTSEC-2099-0003.md"): "larger than 262144 bytes",
    }
    assert {file for file, _ in db.skipped} == set(broken)
    for file, reason in db.skipped:
        assert broken[file] in reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(broken)
    for file, problem in broken.items():
        assert any(file in w and problem in w for w in warnings), (file, warnings)
    files = list(crates.glob("*/*.md"))
    assert db.count == len(files) - len(broken) == 11
    assert advisory(db, "win-crypto", "RUSTSEC-2023-0109").kind == "malicious"
    assert [a.id for a in db.for_crate("adler")] == []
    assert len(db.for_crate("openssl")) == 9


def test_a_missing_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no crates/ folder"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        fingerprint(tmp_path / "nowhere")


def test_fingerprint_changes_exactly_when_an_advisory_file_does(tmp_path: Path) -> None:
    root = copy_some(tmp_path, ["openssl", "adler"])
    (root / "rust" / "std").mkdir(parents=True)
    first = fingerprint(root)
    assert fingerprint(root) == first
    assert load(root).fingerprint == first

    # reading, files beside the advisories and other folders do not count
    (root / "crates" / "openssl" / "RUSTSEC-2016-0001.md").read_text()
    (root / "README.md").write_text("readme")
    (root / "crates" / "openssl" / "notes.txt").write_text("x")
    (root / "rust" / "std" / "CVE-2099-0001.md").write_text(demo())
    assert fingerprint(root) == first

    touched = root / "crates" / "adler" / "RUSTSEC-2025-0056.md"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = fingerprint(root)
    assert second != first

    added = root / "crates" / "demo" / "RUSTSEC-2099-0001.md"
    added.parent.mkdir()
    added.write_text(demo())
    third = fingerprint(root)
    assert third not in (first, second) and third[0] == first[0] + 1
    assert load(root).for_crate("demo")[0].id == "RUSTSEC-2099-0001"

    added.unlink()
    assert fingerprint(root) == second

    # a git pull writes a new file and renames it over the old one; same size, even with the old mtime
    replaced = root / "crates" / "openssl" / "RUSTSEC-2016-0001.md"
    text, stat = replaced.read_text(), replaced.stat()
    fresh = replaced.with_suffix(".tmp")
    fresh.write_text(text.replace("2016-11-05", "2016-11-06"))
    os.utime(fresh, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(fresh, replaced)
    assert fingerprint(root) != second
