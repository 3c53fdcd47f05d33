"""bundle.py: export and import round trip, and rejection of damaged bundles."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile

import pytest
from cratecache.airgap.bundle import BundleError, export_bundle, import_bundle
from cratecache.operations.catalog import parse_age
from cratecache.storage.disk import DiskStorage
from cratecache.storage.local import LocalStore

from tests.test_dist import DATE, HOST, manifest_text

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
    assert (imported.entries, imported.new, imported.present) == (2, 2, 0)
    assert (again.entries, again.new, again.present) == (2, 0, 2)  # re-importing says nothing was new
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


# -- a bundle is untrusted input ------------------------------------------------------------------------------


def write_bundle(path, entries: list[dict], blobs: dict[str, bytes], members: list[tarfile.TarInfo | bytes] = ()):
    """A bundle made by hand: `entries` as the manifest, each blob as blobs/<name>, then raw `members`."""
    manifest = json.dumps({"format": "cargo-cache-bundle/1", "created": 1000.0, "entries": entries}).encode()
    with open(path, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in [("manifest.json", manifest), *((f"blobs/{k}", v) for k, v in blobs.items())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            f.seek(tar.offset)
            for raw in members:
                f.write(raw)
                tar.offset += len(raw)
    return path


def item(key: str, body: bytes, **fields) -> dict:
    meta = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "upstream": "a", "stored_at": 1000.0,
            "checked_at": 1000.0, "etag": None, "last_modified": None}
    return {"key": key, **meta, **fields}


async def test_a_manifest_digest_that_names_a_path_outside_the_bundle_imports_nothing(target, tmp_path):
    secret = tmp_path / "ca.pem"  # beside the cache folder, as certs/mitmproxy-ca.pem is
    secret.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"k" * 100)
    relative = os.path.relpath(secret, target.directory / "import-x")  # from inside the staging folder
    traversal = relative.replace("/", "/" * (65 - len(relative)), 1)  # padded to 64 characters
    assert len(traversal) == 64
    bundle = write_bundle(tmp_path / "b.bundle", [item("index/crates-io/foo", secret.read_bytes(), sha256=traversal)], {})
    with pytest.raises(BundleError, match="sha256 is not 64 lowercase hex digits"):
        await import_bundle(target, bundle)
    assert await target.keys() == []


@pytest.mark.parametrize(("fields", "problem"), [
    ({"checked_at": 4102444800.0}, "checked_at is in the future"),  # 2100: pinned fresh forever
    ({"checked_at": "1000"}, "checked_at is not a time"),
    ({"stored_at": "yesterday"}, "stored_at is not a time"),
    ({"stored_at": True}, "stored_at is not a time"),
    ({"size": -1}, "size is not an integer"),
    ({"upstream": "a\r\nSet-Cookie: x=1"}, "upstream is not a printable name"),
    ({"last_modified": "Tue\r\nX-Evil: 1"}, "last_modified is not a printable header value"),
    ({"etag": 7}, "etag is not a printable header value"),
])
async def test_every_manifest_field_is_checked_and_a_bad_one_imports_nothing(target, tmp_path, fields, problem):
    good = item("index/crates-io/foo", INDEX)
    bad = item("crate/crates-io/foo/1.0.0", CRATE, **fields)
    if "size" in fields:
        bad["size"] = fields["size"]
    bundle = write_bundle(tmp_path / "b.bundle", [good, bad], {good["sha256"]: INDEX, bad["sha256"]: CRATE})
    with pytest.raises(BundleError, match=re.escape(problem)):
        await import_bundle(target, bundle)
    assert await target.keys() == []  # the valid entry before it was not written either


@pytest.mark.parametrize("key", ["crate/crates-io/../../x/1.0.0", "index/crates-io/Foo", "crate/crates-io/foo/1.0.0/x",
                                 "index/../foo", "negative/crates-io/foo", "crate/crates-io/foo/not a version"])
async def test_keys_the_proxy_would_never_use_are_rejected(target, tmp_path, key):
    bundle = write_bundle(tmp_path / "b.bundle", [item(key, CRATE)], {hashlib.sha256(CRATE).hexdigest(): CRATE})
    with pytest.raises(BundleError, match="unexpected entry"):
        await import_bundle(target, bundle)
    assert await target.keys() == []


async def test_a_bundle_cannot_replace_a_verified_crate_with_bytes_the_served_index_does_not_list(target, tmp_path):
    await target.put("index/crates-io/foo", INDEX, "a", now=2000.0)  # the cache's index, newer than the bundle's
    await target.put("crate/crates-io/foo/1.0.0", CRATE, "a", now=2000.0)
    evil = b"\x1f\x8b evil bytes" * 40
    old_index = INDEX.replace(hashlib.sha256(CRATE).hexdigest().encode(), hashlib.sha256(evil).hexdigest().encode())
    entries = [item("index/crates-io/foo", old_index, checked_at=1500.0), item("crate/crates-io/foo/1.0.0", evil,
                                                                                 checked_at=3000.0, stored_at=3000.0)]
    bundle = write_bundle(tmp_path / "b.bundle", entries, {entries[0]["sha256"]: old_index, entries[1]["sha256"]: evil})
    with pytest.raises(BundleError, match="crate foo 1.0.0 does not match its index checksum"):
        await import_bundle(target, bundle)
    assert (await target.get("crate/crates-io/foo/1.0.0")).body == CRATE


async def test_an_imported_config_json_is_rebuilt_without_a_planted_api(target, tmp_path):
    from tests.fake_registry import make_settings

    settings = make_settings(tmp_path, [{"name": "a", "url": "https://mirror.example/"}])
    planted = json.dumps({"dl": "https://evil.example/dl", "api": "https://evil.example"}).encode()
    bundle = write_bundle(tmp_path / "b.bundle", [item("config/crates-io", planted)],
                          {hashlib.sha256(planted).hexdigest(): planted})
    await import_bundle(target, bundle, settings)
    served = json.loads((await target.get("config/crates-io")).body)
    assert served == {"dl": "https://static.crates.io/crates"}


def sparse_member(name: str, real_size: int) -> bytes:
    """An old-GNU sparse member: one stored block of data, `real_size` bytes once expanded (mostly a hole)."""
    info = tarfile.TarInfo(name)
    info.size = 512
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = b"%011o\0" % (real_size - 512)  # the one data region, at the end
    header[398:410] = b"%011o\0" % 512
    header[483:495] = b"%011o\0" % real_size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"x" * 512


async def test_a_sparse_member_is_refused_before_it_is_expanded(target, tmp_path):
    name = hashlib.sha256(b"x" * 512).hexdigest()
    bundle = write_bundle(tmp_path / "b.bundle", [item("crate/crates-io/foo/1.0.0", b"x" * 512)], {},
                          [sparse_member(f"blobs/{name}", 2 << 30), b"\0" * 1024])
    with pytest.raises(BundleError, match="unexpected member"):
        await import_bundle(target, bundle)
    assert await target.keys() == []


async def test_a_member_larger_than_its_manifest_entry_is_refused_unread(target, tmp_path):
    small = item("crate/crates-io/foo/1.0.0", CRATE)
    info = tarfile.TarInfo(f"blobs/{small['sha256']}")
    info.size = 1 << 40  # the header claims a terabyte; not a byte of it follows
    bundle = write_bundle(tmp_path / "b.bundle", [small], {}, [info.tobuf(tarfile.GNU_FORMAT)])
    with pytest.raises(BundleError, match="size mismatch"):
        await import_bundle(target, bundle)
    assert await target.keys() == []


# -- issue 27: toolchain files, the manifest's size, entry order ----------------------------------------------

STABLE_MANIFEST = manifest_text().encode()
CLIPPY = f"dist/{DATE}/clippy-preview-1.95.0-{HOST}.tar.xz"
CLIPPY_BYTES = CLIPPY.rsplit("/", 1)[1].encode()  # test_dist.manifest_text lists the hash of the file's name


def blobs(*bodies: bytes) -> dict[str, bytes]:
    return {hashlib.sha256(b).hexdigest(): b for b in bodies}


async def test_a_crate_entry_before_a_component_entry_imports_both(target, tmp_path):
    entries = [item("index/crates-io/foo", INDEX), item("crate/crates-io/foo/1.0.0", CRATE),
               item(f"component/{CLIPPY}", CLIPPY_BYTES), item("manifest/dist/channel-rust-stable.toml", STABLE_MANIFEST)]
    bundle = write_bundle(tmp_path / "b.bundle", entries, blobs(INDEX, CRATE, CLIPPY_BYTES, STABLE_MANIFEST))
    summary = await import_bundle(target, bundle)
    assert (summary.new, summary.present) == (4, 0)
    assert (await target.get(f"component/{CLIPPY}")).body == CLIPPY_BYTES


async def test_a_bundled_manifest_of_another_channel_and_date_cannot_vouch_for_a_component(target, tmp_path):
    evil = b"evil clippy"
    foreign = STABLE_MANIFEST.replace(f'date = "{DATE}"'.encode(), b'date = "2020-01-01"').replace(
        hashlib.sha256(CLIPPY_BYTES).hexdigest().encode(), hashlib.sha256(evil).hexdigest().encode())
    entries = [item("manifest/dist/2020-01-01/channel-rust-beta.toml", foreign), item(f"component/{CLIPPY}", evil)]
    bundle = write_bundle(tmp_path / "b.bundle", entries, blobs(foreign, evil))
    with pytest.raises(BundleError, match="cannot be verified: no channel manifest of its channel and date"):
        await import_bundle(target, bundle)
    assert await target.keys() == []


async def test_a_bundle_never_replaces_a_cached_component_nor_contradicts_a_cached_manifest(target, tmp_path):
    genuine = write_bundle(tmp_path / "genuine.bundle", [item("manifest/dist/channel-rust-stable.toml", STABLE_MANIFEST),
                                                         item(f"component/{CLIPPY}", CLIPPY_BYTES)],
                           blobs(STABLE_MANIFEST, CLIPPY_BYTES))
    await import_bundle(target, genuine)
    evil = b"evil clippy"
    lying = STABLE_MANIFEST.replace(hashlib.sha256(CLIPPY_BYTES).hexdigest().encode(),
                                    hashlib.sha256(evil).hexdigest().encode())
    newer = {"checked_at": 1500.0, "stored_at": 1500.0}
    replacing = write_bundle(tmp_path / "evil.bundle", [item(f"manifest/dist/{DATE}/channel-rust-stable.toml", lying),
                                                        item(f"component/{CLIPPY}", evil, **newer)], blobs(lying, evil))
    with pytest.raises(BundleError, match="disagree on its hash"):
        await import_bundle(target, replacing)
    alone = write_bundle(tmp_path / "alone.bundle", [item(f"component/{CLIPPY}", evil, **newer)], blobs(evil))
    with pytest.raises(BundleError, match="does not match the hash its channel manifest lists"):
        await import_bundle(target, alone)
    assert (await target.get(f"component/{CLIPPY}")).body == CLIPPY_BYTES


async def test_a_bundle_does_not_replace_a_cached_file_that_never_changes_even_with_verified_bytes(target, tmp_path):
    await target.put(f"component/{CLIPPY}", b"what this cache verified before the manifest was re-published", "a")
    bundle = write_bundle(tmp_path / "b.bundle", [item("manifest/dist/channel-rust-stable.toml", STABLE_MANIFEST),
                                                  item(f"component/{CLIPPY}", CLIPPY_BYTES)],
                          blobs(STABLE_MANIFEST, CLIPPY_BYTES))
    with pytest.raises(BundleError, match=f"component/{CLIPPY} differs from the copy the cache already holds"):
        await import_bundle(target, bundle)
    assert (await target.get(f"component/{CLIPPY}")).body.startswith(b"what this cache verified")


async def test_rustup_init_is_refused_and_release_stable_toml_checked(target, tmp_path):
    init = b"#!/bin/sh\necho anything\n"
    bundle = write_bundle(tmp_path / "b.bundle", [item(f"rustup/rustup/dist/{HOST}/rustup-init", init)], blobs(init))
    with pytest.raises(BundleError, match=f"rustup/dist/{HOST}/rustup-init is an executable the bundle cannot vouch"):
        await import_bundle(target, bundle)
    html = b"<html>login</html>"
    bundle = write_bundle(tmp_path / "c.bundle", [item("rustup/rustup/release-stable.toml", html)], blobs(html))
    with pytest.raises(BundleError, match="is not rustup's release file"):
        await import_bundle(target, bundle)
    assert await target.keys() == []
    release = b'schema-version = "1"\nversion = "1.29.1"\n'
    bundle = write_bundle(tmp_path / "d.bundle", [item("rustup/rustup/release-stable.toml", release)], blobs(release))
    assert (await import_bundle(target, bundle)).new == 1


async def test_an_export_leaves_rustup_init_out(source, tmp_path):
    await source.put(f"rustup/rustup/dist/{HOST}/rustup-init", b"#!/bin/sh\n", "a")
    summary = await export_bundle(source, tmp_path / "b.bundle", ["index/crates-io/foo",
                                                                 f"rustup/rustup/dist/{HOST}/rustup-init"])
    assert (summary.entries, summary.skipped) == (1, (f"rustup/rustup/dist/{HOST}/rustup-init",))


async def test_a_huge_manifest_is_refused_without_being_parsed_whole(target, tmp_path):
    import tracemalloc

    path = tmp_path / "b.bundle"
    nested = b"[" * 20_000_000 + b"]" * 20_000_000  # 40 MB that json.loads would inflate many times over
    manifest = b'{"format": "cargo-cache-bundle/1", "created": 1000.0, "entries": [' + nested + b"]}"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    del manifest, nested
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=r"entries\[0\] is not JSON of at most 4096 bytes"):
            await import_bundle(target, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # a few pieces of the text at a time, not 40 MB of it


async def test_a_manifest_with_more_entries_than_allowed_is_refused(target, tmp_path, monkeypatch):
    from cratecache.airgap import bundle as bundle_module

    monkeypatch.setattr(bundle_module, "MAX_ENTRIES", 2)
    entries = [item("index/crates-io/foo", INDEX), item("crate/crates-io/foo/1.0.0", CRATE),
               item("index/crates-io/bar", INDEX)]
    bundle = write_bundle(tmp_path / "b.bundle", entries, blobs(INDEX, CRATE))
    with pytest.raises(BundleError, match="more than 2 entries"):
        await import_bundle(target, bundle)


class CountingStore:
    """A store that records which of its methods were called, with which key (issue 33: what an export or import of
    a lockfile's bundle reads must follow the bundle, not the cache)."""

    def __init__(self, store):
        self._store, self.calls = store, []

    def __getattr__(self, name):
        found = getattr(self._store, name)
        if not callable(found):
            return found

        def call(*args, **kwargs):
            self.calls.append((name, args[0] if args else None))
            return found(*args, **kwargs)

        return call

    def keys_read(self, *methods: str) -> list[str]:
        return [key for name, key in self.calls if name in methods]


def lockfile(path, packages: list[tuple[str, str, str]]):
    text = "version = 3\n" + "".join(
        f'\n[[package]]\nname = "{n}"\nversion = "{v}"\nsource = "registry+https://github.com/rust-lang/crates.io-index"'
        f'\nchecksum = "{c}"\n' for n, v, c in packages)
    path.write_text(text)
    return path


def crate_and_index(name: str, versions: list[str]) -> tuple[dict[str, bytes], bytes]:
    crates = {v: f"{name} {v} bytes".encode() * 20 for v in versions}
    lines = [json.dumps({"name": name, "vers": v, "deps": [], "cksum": hashlib.sha256(body).hexdigest(),
                         "features": {}, "yanked": False}) for v, body in crates.items()]
    return crates, ("\n".join(lines) + "\n").encode()


async def test_an_export_of_a_lockfile_reads_only_the_lockfiles_entries_and_no_listing(source, target, tmp_path):
    from cratecache.cli import cmd_export, parser
    from cratecache.config import load_settings

    from tests.harness import write_proxies

    for i in range(200):  # unrelated entries: never read
        await source.put(f"index/crates-io/unrelated{i}", INDEX, "a", now=1000.0)
        await source.put(f"crate/crates-io/unrelated{i}/1.0.0", CRATE, "a", now=1000.0)
    packages = []
    for name in ("alpha", "beta"):
        crates, index = crate_and_index(name, ["1.0.0", "2.0.0"])
        await source.put(f"index/crates-io/{name}", index, "a", now=1000.0)
        for version, body in crates.items():
            await source.put(f"crate/crates-io/{name}/{version}", body, "a", now=1000.0)
            packages.append((name, version, hashlib.sha256(body).hexdigest()))
    await source.put("config/crates-io", b'{"dl": "https://static.crates.io/crates"}', "a", now=1000.0)
    settings = load_settings(write_proxies(tmp_path / "proxies.yaml", [{"name": "a", "url": "http://127.0.0.1:1/"}],
                                           tmp_path / "source"))
    lock = lockfile(tmp_path / "Cargo.lock", packages)
    counting = CountingStore(source)

    args = parser().parse_args(["export", str(tmp_path / "b.bundle"), "--lockfile", str(lock)])
    assert await cmd_export(args, settings, counting) == 0

    wanted = {"config/crates-io", "index/crates-io/alpha", "index/crates-io/beta", "crate/crates-io/alpha/1.0.0",
              "crate/crates-io/alpha/2.0.0", "crate/crates-io/beta/1.0.0", "crate/crates-io/beta/2.0.0"}
    assert set(counting.keys_read("get", "latest", "meta")) == wanted
    assert not {name for name, _ in counting.calls} & {"entries", "keys", "entry_pages", "counts", "figures"}
    with tarfile.open(tmp_path / "b.bundle") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert [e["key"] for e in manifest["entries"]] == [
        "config/crates-io", "index/crates-io/alpha", "crate/crates-io/alpha/1.0.0", "crate/crates-io/alpha/2.0.0",
        "index/crates-io/beta", "crate/crates-io/beta/1.0.0", "crate/crates-io/beta/2.0.0"]


async def test_an_import_reads_each_cached_index_file_once_whatever_the_order_of_its_crates(target, tmp_path):
    alpha, alpha_index = crate_and_index("alpha", ["1.0.0", "2.0.0", "3.0.0"])
    beta, beta_index = crate_and_index("beta", ["1.0.0", "2.0.0"])
    await target.put("index/crates-io/alpha", alpha_index, "a", now=1000.0)  # the cache's, newer: it is served
    await target.put("index/crates-io/beta", beta_index, "a", now=1000.0)
    interleaved = [("alpha", "1.0.0"), ("beta", "1.0.0"), ("alpha", "2.0.0"), ("beta", "2.0.0"), ("alpha", "3.0.0")]
    bodies = {"alpha": alpha, "beta": beta}
    entries = [item(f"crate/crates-io/{n}/{v}", bodies[n][v]) for n, v in interleaved]
    write_bundle(tmp_path / "b.bundle", entries, blobs(*(bodies[n][v] for n, v in interleaved)))
    counting = CountingStore(target)

    summary = await import_bundle(counting, tmp_path / "b.bundle")

    assert (summary.entries, summary.new) == (5, 5)
    assert sorted(counting.keys_read("get", "latest")) == ["index/crates-io/alpha", "index/crates-io/beta"]
    assert (await target.get("crate/crates-io/alpha/3.0.0")).body == alpha["3.0.0"]
