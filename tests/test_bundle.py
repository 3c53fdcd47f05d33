"""bundle.py: export and import round trip, and rejection of damaged bundles."""

from __future__ import annotations

import hashlib
import json

import pytest
from cratecache.bundle import BundleError, export_bundle, import_bundle
from cratecache.catalog import parse_age
from cratecache.storage.disk import DiskStorage
from cratecache.storage.local import LocalStore

CRATE = b"\x1f\x8b crate bytes " * 50
INDEX = json.dumps({"name": "foo", "vers": "1.0.0", "deps": [], "cksum": hashlib.sha256(CRATE).hexdigest(),
                    "features": {}, "yanked": False}).encode() + b"\n"


@pytest.fixture
async def source(tmp_path):
    store = DiskStorage(LocalStore(tmp_path / "source", 10**9))
    await store.put("index/crates-io/foo", INDEX, "a", '"etag"', None, now=1000.0)
    await store.put("crate/crates-io/foo/1.0.0", CRATE, "a", now=1000.0)
    yield store
    await store.close()


@pytest.fixture
async def target(tmp_path):
    store = DiskStorage(LocalStore(tmp_path / "target", 10**9))
    yield store
    await store.close()


async def test_round_trip_keeps_bytes_and_provenance(source, target, tmp_path):
    summary = await export_bundle(source, tmp_path / "b.bundle", ["index/crates-io/foo", "crate/crates-io/foo/1.0.0"])
    imported = await import_bundle(target, tmp_path / "b.bundle")
    again = await import_bundle(target, tmp_path / "b.bundle")

    assert (summary.entries, summary.crates, summary.index_files) == (2, 1, 1)
    assert imported == again
    assert (await target.get("crate/crates-io/foo/1.0.0")).body == CRATE
    assert (await target.get("index/crates-io/foo")).meta == (await source.get("index/crates-io/foo")).meta


async def test_a_crate_that_does_not_match_its_index_is_rejected(source, target, tmp_path):
    await source.put("crate/crates-io/foo/1.0.0", CRATE + b"tampered", "a")
    await export_bundle(source, tmp_path / "b.bundle", ["index/crates-io/foo", "crate/crates-io/foo/1.0.0"])
    with pytest.raises(BundleError, match="crate foo 1.0.0 does not match its index checksum"):
        await import_bundle(target, tmp_path / "b.bundle")
    assert await target.keys() == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
async def test_damaged_bundles_import_nothing(source, target, tmp_path, damage):
    path = tmp_path / "b.bundle"
    await export_bundle(source, path, ["index/crates-io/foo", "crate/crates-io/foo/1.0.0"])
    data = path.read_bytes()
    at = data.index(b"crate bytes")
    path.write_bytes({"flip": data[:at] + b"X" + data[at + 1:], "truncate": data[: at + 100],
                      "empty": b"", "garbage": b"not a tar" * 100}[damage])
    with pytest.raises(BundleError):
        await import_bundle(target, path)
    assert await target.keys() == []


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000),
                                               ("2w", 1209600), ("1.5h", 5400)])
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "thirty days", "-1d", "3y"])
def test_parse_age_rejects(text):
    with pytest.raises(ValueError, match="expected an age"):
        parse_age(text)


async def test_an_export_naming_an_entry_not_in_the_cache_fails_and_writes_nothing(source, tmp_path):
    with pytest.raises(BundleError, match="crate/crates-io/foo/9.9.9 is not in the cache"):
        await export_bundle(source, tmp_path / "b.bundle", ["index/crates-io/foo", "crate/crates-io/foo/9.9.9"])
    assert list(tmp_path.glob("b.bundle*")) == [] and list(tmp_path.glob(".export-*")) == []
