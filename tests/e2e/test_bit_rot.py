"""Bit rot: bytes flipped on the disk or in the bucket under a real mitmdump are never served; the real cargo
still gets the right bytes, with one new upstream request per damaged object.

A byte is flipped in place (tests/fixtures/rot.py): in a small crate whose bytes diskcache keeps in its SQLite file,
in a crate and an index file kept as files (read whole), in a 20 MB crate checked while it streams (the download is
cut: httpx sees it, cargo retries), in a 6 MB crate and a 3 MB toolchain component checked before their first byte
(fetched again on the same request, for cargo and rustup), and in a crate's object in the bucket of the s3 backend
(SeaweedFS).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sqlite3
import ssl
import time

import httpx
import pytest

from tests.fixtures.registry import CrateFile, Registry, encode_index, index_entry, load_manifest, pack_crate
from tests.fixtures.rot import blob_row, flip_byte, rot_blob
from tests.fixtures.upstream import UpstreamServer
from tests.harness import free_port, make_project

BIG, BIG_VERSION = "anyhow", "1.0.69"
BIG_URL = f"https://static.crates.io/crates/{BIG}/{BIG_VERSION}/download"
# Both above the 2 MiB file threshold (streamed from the file through the blob server); the big one above
# PRECHECK_BYTES (16 MiB: hashed while it streams), the mid-size one below it (hashed before its first byte).
BIG_PAYLOAD_BYTES, MID_PAYLOAD_BYTES = 20 * 1000 * 1000, 6 * 1000 * 1000


@pytest.fixture
def new_rustup_in(tmp_path):
    from tests.fixtures.rustup import Rustup

    def make(proxy, name: str):
        return Rustup(tmp_path / f"rustup-{name}", {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(proxy.ca_cert)})

    return make


def crate_downloads(upstream: UpstreamServer, name: str) -> list[str]:
    return [p for p in upstream.paths() if p.startswith(f"/crates/{name}/")]


def index_fetches(upstream: UpstreamServer, name: str) -> list[str]:
    return [p for p in upstream.paths() if p.startswith("/index/") and p.endswith(f"/{name}")]


def unpacked(home, name: str, version: str) -> bytes:
    """The .crate file cargo kept after verifying it (registry/cache/*/name-version.crate)."""
    return next(home.glob(f"registry/cache/*/{name}-{version}.crate")).read_bytes()


def fetched(result) -> bool:
    return result.returncode == 0 and not re.search(r"^error", result.stderr, re.M)


def metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics").text


def test_bytes_flipped_in_cached_crates_and_an_index_file_are_fetched_again_once_and_never_served(
        registry: Registry, entry, start_proxy, new_cargo, tmp_path):
    """cfg-if's .crate (7 KB) is held in SQLite, log's (38 KB) and its index file in diskcache's files."""
    project = make_project(tmp_path / "app", 'log = "=0.4.17"\n')
    cache = tmp_path / "cache"
    cfg_if, log = registry.crate("cfg-if", "1.0.0"), registry.crate("log", "0.4.17")
    with UpstreamServer(registry, name="origin") as origin:
        first = start_proxy([entry(origin)], cache_dir=cache)
        assert fetched(new_cargo(first).fetch(project))
        first.stop()  # its memory tier goes with it: the next proxy reads the cache folder
        log_index = registry.index_files["log"]
        assert rot_blob(cache, cfg_if.cksum) == "sqlite"
        assert rot_blob(cache, log.cksum) == "file"
        assert rot_blob(cache, hashlib.sha256(log_index).hexdigest(), at=10) == "sqlite"
        before = {"cfg-if": len(crate_downloads(origin, "cfg-if")), "log": len(crate_downloads(origin, "log")),
                  "index": len(index_fetches(origin, "log"))}

        status = free_port()
        second = start_proxy([entry(origin)], cache_dir=cache, args=("--set", f"cargo_status_port={status}"))
        cargo = new_cargo(second)
        result = cargo.fetch(project)
        after = {"cfg-if": len(crate_downloads(origin, "cfg-if")), "log": len(crate_downloads(origin, "log")),
                 "index": len(index_fetches(origin, "log"))}
        again = new_cargo(second).fetch(project)  # and now from the repaired cache
        final = len(origin.paths())
        text = metrics(status)

    assert fetched(result), result.stderr
    assert {k: after[k] - before[k] for k in after} == {"cfg-if": 1, "log": 1, "index": 1}
    assert unpacked(cargo.home, "cfg-if", "1.0.0") == cfg_if.data  # cargo checks these too: a bad one would fail
    assert unpacked(cargo.home, "log", "0.4.17") == log.data
    log_text = second.log()
    for key in ("crate/crates-io/cfg-if/1.0.0", "crate/crates-io/log/0.4.17", "index/crates-io/log"):
        assert len(re.findall(f"cache folder entry {re.escape(key)} is incomplete or damaged", log_text)) == 1, key
    assert f"stored as sha256 {cfg_if.cksum[:12]}…, its bytes now hash to " \
           f"{hashlib.sha256(flip_byte(cfg_if.data)).hexdigest()[:12]}…" in log_text
    assert 'cargo_cache_corrupt_entries_total{kind="crate"} 2.0' in text
    assert 'cargo_cache_corrupt_entries_total{kind="index"} 1.0' in text
    assert fetched(again), again.stderr
    assert final == len(origin.paths())  # the second fetch asked the upstream nothing
    assert value_of(cache, cfg_if.cksum) == cfg_if.data


def eventually(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def has_blob(cache, sha256: str) -> bool:
    with sqlite3.connect(cache / "cache.db") as db:
        return db.execute("SELECT 1 FROM Cache WHERE key = ?", (f"blob:{sha256}",)).fetchone() is not None


def value_of(cache, sha256: str) -> bytes:
    value, file = blob_row(cache, sha256)
    return bytes(value) if file is None else open(file, "rb").read()


def with_big_crate(registry: Registry, folder, payload_bytes: int) -> Registry:
    """The test registry with anyhow 1.0.69 replaced by a .crate of the same sources plus `payload_bytes` of noise."""
    source = folder / f"{BIG}-{BIG_VERSION}"
    shutil.copytree(f"/usr/share/cargo/registry/{BIG}-{BIG_VERSION}", source,
                    ignore=shutil.ignore_patterns("debian", ".cargo-checksum.json"))
    (source / "payload.bin").write_bytes(os.urandom(payload_bytes))
    data = pack_crate(source, BIG, BIG_VERSION)
    cksum = hashlib.sha256(data).hexdigest()
    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    own.crates[(BIG, BIG_VERSION)] = CrateFile(BIG, BIG_VERSION, data, cksum)
    own.index_files[BIG] = encode_index([index_entry(load_manifest(source), cksum)])
    return own


@pytest.fixture(scope="module")
def big_registry(registry: Registry, tmp_path_factory) -> Registry:
    """anyhow 1.0.69 as a 20 MB .crate: above PRECHECK_BYTES, checked while it streams."""
    return with_big_crate(registry, tmp_path_factory.mktemp("big"), BIG_PAYLOAD_BYTES)


@pytest.fixture(scope="module")
def mid_registry(registry: Registry, tmp_path_factory) -> Registry:
    """anyhow 1.0.69 as a 6 MB .crate: above the file threshold, at most PRECHECK_BYTES, checked before it streams."""
    return with_big_crate(registry, tmp_path_factory.mktemp("mid"), MID_PAYLOAD_BYTES)


async def _download_through(proxy) -> tuple[bytes, str | None]:
    """The big crate through the proxy: (the bytes received, the error that cut the body, or None)."""
    received = bytearray()
    verify = ssl.create_default_context(cafile=str(proxy.ca_cert))
    async with httpx.AsyncClient(proxy=proxy.url, verify=verify, trust_env=False, timeout=60) as client:
        async with client.stream("GET", BIG_URL) as response:
            assert response.status_code == 200
            try:
                async for chunk in response.aiter_raw():
                    received += chunk
            except httpx.HTTPError as e:
                return bytes(received), f"{type(e).__name__}: {e}"
    return bytes(received), None


def test_a_large_cached_crate_that_rotted_is_cut_short_evicted_and_fetched_again_once(
        big_registry: Registry, entry, start_proxy, new_cargo, tmp_path):
    data = big_registry.crate(BIG, BIG_VERSION).data
    project = make_project(tmp_path / "app", f'{BIG} = "={BIG_VERSION}"\n')
    cache = tmp_path / "cache"
    with UpstreamServer(big_registry, name="origin") as origin:
        status = free_port()
        proxy = start_proxy([entry(origin)], cache_dir=cache, args=("--set", f"cargo_status_port={status}"))
        assert fetched(new_cargo(proxy).fetch(project))
        assert blob_row(cache, hashlib.sha256(data).hexdigest())[1] is not None  # kept as a file
        assert asyncio.run(_download_through(proxy)) == (data, None)  # a hit, streamed whole

        rot_blob(cache, hashlib.sha256(data).hexdigest(), at=len(data) - 100)  # near the end
        cut, error = asyncio.run(_download_through(proxy))
        downloads_after_cut = len(crate_downloads(origin, BIG))
        evicted = eventually(lambda: not has_blob(cache, hashlib.sha256(data).hexdigest()))  # the proxy evicts
        again = asyncio.run(_download_through(proxy))
        downloads = len(crate_downloads(origin, BIG))
        text = metrics(status)

    assert error is not None and len(cut) < len(data)  # the client saw a failed download, not a complete body
    assert cut == data[:len(cut)]  # and what it got of it is the stored bytes' start (the rot is near the end)
    assert downloads_after_cut == 1 and evicted
    assert again == (data, None) and downloads == 2  # fetched again, once
    assert has_blob(cache, hashlib.sha256(data).hexdigest()) and value_of(cache, hashlib.sha256(data).hexdigest()) == data
    assert 'cargo_cache_corrupt_entries_total{kind="crate"} 1.0' in text


def test_real_cargo_retries_a_large_download_cut_for_rot_and_gets_it_with_one_new_upstream_request(
        big_registry: Registry, entry, start_proxy, new_cargo, tmp_path):
    data = big_registry.crate(BIG, BIG_VERSION).data
    project = make_project(tmp_path / "app", f'{BIG} = "={BIG_VERSION}"\n')
    cache = tmp_path / "cache"
    with UpstreamServer(big_registry, name="origin") as origin:
        status = free_port()
        proxy = start_proxy([entry(origin)], cache_dir=cache, args=("--set", f"cargo_status_port={status}"))
        assert fetched(new_cargo(proxy).fetch(project))
        rot_blob(cache, hashlib.sha256(data).hexdigest(), at=len(data) // 2)
        cargo = new_cargo(proxy)
        result = cargo.fetch(project)
        downloads = crate_downloads(origin, BIG)
        text = metrics(status)

    assert fetched(result), result.stderr
    assert "spurious network error" in result.stderr  # the cut download, which cargo retried
    assert downloads == [f"/crates/{BIG}/{BIG_VERSION}/download"] * 2  # the first fill, and one after the rot
    assert unpacked(cargo.home, BIG, BIG_VERSION) == data
    log = proxy.log()
    assert len(re.findall(f"cache folder entry crate/crates-io/{BIG}/{BIG_VERSION} is incomplete or damaged",
                          log)) == 1
    assert f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 origin miss {len(data)}B" in log
    assert 'cargo_cache_corrupt_entries_total{kind="crate"} 1.0' in text


def test_real_cargo_gets_a_mid_size_crate_that_rotted_on_the_first_try_with_one_new_upstream_request(
        mid_registry: Registry, entry, start_proxy, new_cargo, tmp_path):
    data = mid_registry.crate(BIG, BIG_VERSION).data
    project = make_project(tmp_path / "app", f'{BIG} = "={BIG_VERSION}"\n')
    cache = tmp_path / "cache"
    with UpstreamServer(mid_registry, name="origin") as origin:
        proxy = start_proxy([entry(origin)], cache_dir=cache)
        assert fetched(new_cargo(proxy).fetch(project))
        assert blob_row(cache, hashlib.sha256(data).hexdigest())[1] is not None  # kept as a file
        rot_blob(cache, hashlib.sha256(data).hexdigest(), at=len(data) // 2)
        cargo = new_cargo(proxy)
        result = cargo.fetch(project)
        downloads = crate_downloads(origin, BIG)

    assert fetched(result), result.stderr
    assert "spurious" not in result.stderr  # checked before its first byte: no cut download to retry
    assert downloads == [f"/crates/{BIG}/{BIG_VERSION}/download"] * 2
    assert unpacked(cargo.home, BIG, BIG_VERSION) == data
    log = proxy.log()
    assert len(re.findall(f"cache folder entry crate/crates-io/{BIG}/{BIG_VERSION} is incomplete or damaged",
                          log)) == 1
    assert f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 origin miss {len(data)}B" in log
    assert f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 cache hit" not in log.split(
        "is incomplete or damaged")[1]


def test_a_crate_changed_in_the_bucket_is_fetched_again_once_by_the_gateway_that_pulls_it(
        registry: Registry, seaweed, entry, start_proxy, new_cargo, tmp_path):
    from cratecache.storage.bucket import Bucket

    project = make_project(tmp_path / "app", 'log = "=0.4.17"\n')
    log = registry.crate("log", "0.4.17")
    prefix = seaweed.new_prefix("rot")
    with UpstreamServer(registry, name="origin") as origin:
        a = start_proxy([entry(origin)], cache_dir=tmp_path / "tier-a", backend="s3", s3=seaweed.yaml(prefix))
        assert fetched(new_cargo(a).fetch(project))

        async def rot() -> None:
            bucket = Bucket(seaweed.settings(prefix))
            got = await bucket.get(f"blob/{log.cksum}")
            assert got is not None and got[0] == log.data
            await bucket.put(f"blob/{log.cksum}", flip_byte(got[0]))

        asyncio.run(rot())
        before = len(crate_downloads(origin, "log"))
        status = free_port()
        b = start_proxy([entry(origin)], cache_dir=tmp_path / "tier-b", backend="s3", s3=seaweed.yaml(prefix),
                        args=("--set", f"cargo_status_port={status}"))
        cargo = new_cargo(b)
        result = cargo.fetch(project)  # b's local tier is empty: everything comes from the bucket
        after = len(crate_downloads(origin, "log"))
        text = metrics(status)
        c = start_proxy([entry(origin)], cache_dir=tmp_path / "tier-c", backend="s3", s3=seaweed.yaml(prefix))
        third = new_cargo(c).fetch(project)  # the bucket was repaired by b's fetch
        last = len(crate_downloads(origin, "log"))

    assert fetched(result), result.stderr
    assert after - before == 1
    assert unpacked(cargo.home, "log", "0.4.17") == log.data
    assert "bucket entry crate/crates-io/log/0.4.17 is incomplete or damaged" in b.log()
    assert 'cargo_cache_corrupt_entries_total{kind="crate"} 1.0' in text
    assert fetched(third), third.stderr
    assert last == after and "incomplete or damaged" not in c.log()


def test_a_toolchain_component_that_rotted_is_fetched_again_once_for_rustup(start_proxy, new_rustup_in,
                                                                                    tmp_path):
    from tests.e2e.test_toolchains import STABLE, toolchains
    from tests.fixtures.dist import write_toolchain
    from tests.fixtures.dist_server import DistServer

    write_toolchain(tmp_path / "tree", STABLE)
    rustc = STABLE.component_path("rustc")  # 3 MB: above the file threshold, streamed
    data = (tmp_path / "tree" / rustc).read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    with DistServer(tmp_path / "tree", name="origin") as origin:
        proxy = start_proxy([], cache_dir=cache, toolchains=toolchains(origin))
        new_rustup_in(proxy, "first").install("stable")
        assert blob_row(cache, sha256)[1] is not None  # kept as a file
        rot_blob(cache, sha256, at=len(data) // 3)  # in its first half
        rustup = new_rustup_in(proxy, "second")
        rustup.install("stable")
        asked = origin.count(rustc)

    assert rustup.rustc_version("stable") == STABLE.rustc_output
    assert asked == 2  # the first fill, and once after the rot
    log = proxy.log()
    assert f"cache folder entry component/{rustc} is incomplete or damaged" in log
    after = log.split("is incomplete or damaged")[1]
    assert f"GET static.rust-lang.org/{rustc} 200 origin miss {len(data)}B" in after  # mid-size: on the same request
    assert f"GET static.rust-lang.org/{rustc} 200 cache hit" not in after
    assert value_of(cache, sha256) == data
