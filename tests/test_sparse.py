"""sparse.py: Cargo's sparse-registry rules (names, index paths, dl templates, index files, config.json)."""

from __future__ import annotations

import hashlib
import json

import pytest
from cratecache.protocols import sparse
from cratecache.protocols.sparse import IndexEntry

CKSUM = hashlib.sha256(b"serde-1.0.0.crate").hexdigest()
CKSUM2 = hashlib.sha256(b"serde-1.0.1.crate").hexdigest()


def line(name="serde", vers="1.0.0", cksum=CKSUM, **extra) -> bytes:
    obj = {"name": name, "vers": vers, "deps": [], "cksum": cksum, "features": {}, "yanked": False, **extra}
    return json.dumps(obj).encode()


INDEX_FILE = line() + b"\n" + line(vers="1.0.1", cksum=CKSUM2, yanked=True) + b"\n"


@pytest.mark.parametrize("name", ["a", "serde", "serde_json", "tokio-util", "Inflector", "x" * 64])
def test_valid_names(name):
    assert sparse.name_problem(name) is None


@pytest.mark.parametrize(
    "name, problem",
    [("", "empty"), ("x" * 65, "longer than 64"), ("1abc", "invalid crate name"),
     ("_abc", "invalid crate name"), ("ser.de", "invalid crate name"), ("sérde", "invalid crate name"),
     ("serde\n", "invalid crate name")],
)
def test_invalid_names(name, problem):
    assert problem in sparse.name_problem(name)


@pytest.mark.parametrize("version", ["0.0.0", "1.2.3", "1.0.0-alpha.1", "1.0.0+build.5", "1.0.0-rc.1+zstd.1.5"])
def test_valid_versions(version):
    assert sparse.version_problem(version) is None


@pytest.mark.parametrize("version", ["1.0", "01.0.0", "1.0.0-", "1.0.0+", "v1.0.0", "1.0.0/x", "1.0.0\n", "1." * 64 + "0"])
def test_invalid_versions(version):
    assert "invalid version" in sparse.version_problem(version)


@pytest.mark.parametrize(
    "name, path",
    [("a", "1/a"), ("ab", "2/ab"), ("abc", "3/a/abc"), ("serde", "se/rd/serde"), ("Serde", "se/rd/serde"),
     ("AbC", "3/a/abc")],
)
def test_index_path(name, path):
    assert sparse.index_path(name) == path


@pytest.mark.parametrize(
    "dl, name, expected",
    [
        # no marker: Cargo appends /{crate}/{version}/download
        ("https://static.crates.io/crates", "serde", "https://static.crates.io/crates/serde/1.0.0/download"),
        ("https://static.crates.io/crates/", "serde", "https://static.crates.io/crates/serde/1.0.0/download"),
        ("https://dl.example/api/v1/crates", "Inflector", "https://dl.example/api/v1/crates/Inflector/1.0.0/download"),
        # markers
        ("https://dl.example/{crate}/{crate}-{version}.crate", "serde", "https://dl.example/serde/serde-1.0.0.crate"),
        ("https://dl.example/{version}", "serde", "https://dl.example/1.0.0"),
        ("https://dl.example/{prefix}/{crate}", "AbCd", "https://dl.example/Ab/Cd/AbCd"),
        ("https://dl.example/{lowerprefix}/{crate}", "AbCd", "https://dl.example/ab/cd/AbCd"),
        ("https://dl.example/{prefix}|{lowerprefix}", "Abc", "https://dl.example/3/A|3/a"),
        ("https://dl.example/{prefix}|{lowerprefix}", "Ab", "https://dl.example/2|2"),
        ("https://dl.example/{prefix}|{lowerprefix}", "A", "https://dl.example/1|1"),
        ("https://dl.example/{prefix}/{crate}", "serde", "https://dl.example/se/rd/serde"),
        ("https://dl.example/by-hash/{sha256-checksum}", "serde", f"https://dl.example/by-hash/{CKSUM}"),
    ],
)
def test_download_url(dl, name, expected):
    assert sparse.download_url(dl, name, "1.0.0", CKSUM) == expected


def test_parse_index_lines():
    body = b"\n" + line() + b"\r\n\n   \n" + line(vers="1.0.1", cksum=CKSUM2, yanked=True)
    assert sparse.parse_index(body) == [
        IndexEntry("serde", "1.0.0", CKSUM, False),
        IndexEntry("serde", "1.0.1", CKSUM2, True),
    ]


def test_parse_index_empty():
    assert sparse.parse_index(b"") == []


@pytest.mark.parametrize(
    "bad_line",
    [
        b"{not json",
        b"[1, 2]",
        b'"serde"',
        json.dumps({"name": "serde", "cksum": CKSUM}).encode(),
        json.dumps({"name": "serde", "vers": 1, "cksum": CKSUM}).encode(),
        line(cksum=None),
        line(cksum="abc123"),
        line(cksum=CKSUM + "00"),
        line(cksum=CKSUM + "\n"),
        line(vers="2.0.0", cksum=None)[:-1] + b',"v":3}',  # a newer format's line without cksum
        line(yanked="no"),
    ],
)
def test_lines_that_cannot_be_served_are_skipped_as_cargo_skips_them(bad_line):
    body = line() + b"\n" + bad_line + b"\n" + line(vers="1.0.1", cksum=CKSUM2) + b"\n"
    assert sparse.parse_index(body) == [IndexEntry("serde", "1.0.0", CKSUM, False), IndexEntry("serde", "1.0.1", CKSUM2, False)]
    sparse.validate_index(body, "serde")  # still an index file
    assert sparse.prune_index(body, lambda e: True) == line() + b"\n" + line(vers="1.0.1", cksum=CKSUM2) + b"\n"


def test_a_version_without_a_valid_checksum_is_never_found_for_download():
    body = line() + b"\n" + line(vers="2.0.0", cksum="not-hex") + b"\n"
    assert sparse.find_version(body, "serde", "2.0.0") is None
    assert sparse.listed_unverifiable(body, "serde", "2.0.0")
    assert not sparse.listed_unverifiable(body, "serde", "1.0.0") and not sparse.listed_unverifiable(body, "serde", "3.0.0")


@pytest.mark.parametrize("name", ["serde", "Serde", "SERDE"])
def test_find_version_matches_name_case_insensitively(name):
    assert sparse.find_version(INDEX_FILE, name, "1.0.1") == IndexEntry("serde", "1.0.1", CKSUM2, True)


def test_find_version_absent():
    assert sparse.find_version(INDEX_FILE, "serde", "2.0.0") is None
    assert sparse.find_version(INDEX_FILE, "serde_json", "1.0.0") is None


def test_validate_index_accepts_any_case():
    sparse.validate_index(line(name="Inflector"), "inflector")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<!DOCTYPE html>\n<html><body>Not Found</body></html>\n", "not an index file: line 1 is not a JSON object"),
        (b'{"error": "not found"}\n', "not an index file: line 1 is not a JSON object naming a crate"),
        (line() + b"\n" + line(name="serde_json") + b"\n", "index file is for 'serde_json', not 'serde'"),
    ],
)
def test_validate_index_rejects(body, message):
    with pytest.raises(ValueError, match=message):
        sparse.validate_index(body, "serde")


@pytest.mark.parametrize("body", [b"", b"\n\n", line(cksum="0" * 63)])
def test_validate_index_accepts_what_cargo_reads_as_an_index_file(body):
    sparse.validate_index(body, "serde")  # an empty file lists no versions; Cargo says "no matching package"


def test_parse_config():
    body = b'{"dl": "https://static.crates.io/crates", "api": "https://crates.io"}'
    assert sparse.parse_config(body) == {"dl": "https://static.crates.io/crates", "api": "https://crates.io"}


@pytest.mark.parametrize(
    "body, message",
    [(b"<html>", "not JSON"), (b"[]", "has no dl"), (b"{}", "has no dl"), (b'{"dl": ""}', "has no dl"),
     (b'{"dl": 5}', "has no dl")],
)
def test_parse_config_rejects(body, message):
    with pytest.raises(ValueError, match=message):
        sparse.parse_config(body)


def test_client_config_points_downloads_at_the_proxy_and_drops_auth():
    upstream = {"dl": "https://static.crates.io/crates", "api": "https://crates.io", "auth-required": True}
    body = sparse.client_config(upstream, "https://static.crates.io/crates", keep_api=True)
    assert body.endswith(b"\n")
    assert json.loads(body) == {"dl": "https://static.crates.io/crates", "api": "https://crates.io"}


def test_client_config_never_passes_on_a_mirrors_api():
    """Cargo would send its crates.io token to the mirror's API on `cargo publish`."""
    upstream = {"dl": "https://cargo.corp.example/dl/{crate}/{version}", "api": "https://cargo.corp.example"}
    assert json.loads(sparse.client_config(upstream, "https://static.crates.io/crates", keep_api=False)) == {
        "dl": "https://static.crates.io/crates"}


def test_client_config_without_api():
    body = sparse.client_config({"dl": "https://static.crates.io/crates"}, "https://dl.example/crates", keep_api=True)
    assert json.loads(body) == {"dl": "https://dl.example/crates"}
