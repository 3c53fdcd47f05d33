"""bundle.py: export and import round trip, and rejection of damaged bundles."""

from __future__ import annotations

import hashlib
import json

import pytest
from cratecache.bundle import BundleError, export_bundle, import_bundle
from cratecache.catalog import parse_age
from cratecache.store import Store

CRATE = b"\x1f\x8b crate bytes " * 50
INDEX = json.dumps({"name": "foo", "vers": "1.0.0", "deps": [], "cksum": hashlib.sha256(CRATE).hexdigest(),
                    "features": {}, "yanked": False}).encode() + b"\n"


@pytest.fixture
def source(tmp_path):
    store = Store(tmp_path / "source", 10**9)
    store.put("index/crates-io/foo", INDEX, "a", '"etag"', None, now=1000.0)
    store.put("crate/crates-io/foo/1.0.0", CRATE, "a", now=1000.0)
    yield store
    store.close()


@pytest.fixture
def target(tmp_path):
    store = Store(tmp_path / "target", 10**9)
    yield store
    store.close()


def test_round_trip_keeps_bytes_and_provenance(source, target, tmp_path):
    summary = export_bundle(source, tmp_path / "b.bundle", ["index/crates-io/foo", "crate/crates-io/foo/1.0.0"])
    imported = import_bundle(target, tmp_path / "b.bundle")
    again = import_bundle(target, tmp_path / "b.bundle")

    assert (summary.entries, summary.crates, summary.index_files) == (2, 1, 1)
    assert imported == again
    assert target.get("crate/crates-io/foo/1.0.0").body == CRATE
    assert target.get("index/crates-io/foo").meta == source.get("index/crates-io/foo").meta


def test_a_crate_that_does_not_match_its_index_is_rejected(source, target, tmp_path):
    source.put("crate/crates-io/foo/1.0.0", CRATE + b"tampered", "a")
    export_bundle(source, tmp_path / "b.bundle", ["index/crates-io/foo", "crate/crates-io/foo/1.0.0"])
    with pytest.raises(BundleError, match="crate foo 1.0.0 does not match its index checksum"):
        import_bundle(target, tmp_path / "b.bundle")
    assert target.keys() == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_damaged_bundles_import_nothing(source, target, tmp_path, damage):
    path = tmp_path / "b.bundle"
    export_bundle(source, path, ["index/crates-io/foo", "crate/crates-io/foo/1.0.0"])
    data = path.read_bytes()
    at = data.index(b"crate bytes")
    path.write_bytes({"flip": data[:at] + b"X" + data[at + 1:], "truncate": data[: at + 100],
                      "empty": b"", "garbage": b"not a tar" * 100}[damage])
    with pytest.raises(BundleError):
        import_bundle(target, path)
    assert target.keys() == []


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000),
                                               ("2w", 1209600), ("1.5h", 5400)])
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "thirty days", "-1d", "3y"])
def test_parse_age_rejects(text):
    with pytest.raises(ValueError, match="expected an age"):
        parse_age(text)
