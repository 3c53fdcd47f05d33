"""What only the s3 backend does, against a real SeaweedFS: the local tier in front of the bucket, the
bucket's outage and recovery, first-writer-wins for crates, damaged objects, and keeping secrets out of
what an operator sees, and listings read a page at a time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tarfile
import time
from dataclasses import asdict, replace

import pytest
from cratecache.config import CacheSettings
from cratecache.storage import StorageUnavailable, open_storage
from cratecache.storage import bucket as bucket_module
from cratecache.storage import s3 as s3_module
from cratecache.storage.bucket import LIST_CHUNK, Bucket, BucketDown, _describe, _is_outage, _s3_store

from tests.fixtures.rot import flip_byte, rot_blob
from tests.fixtures.seaweed import SECRET_KEY, s3_cache
from tests.fixtures.upstream import dead_url

CRATE = b"\x1f\x8b crate " * 200


@pytest.fixture
async def gateways(seaweed, tmp_path):
    opened = []
    prefix = seaweed.new_prefix("s3")

    def open_one(**s3):
        storage = open_storage(s3_cache(tmp_path / f"tier-{len(opened)}", seaweed.settings(prefix, **s3)))
        opened.append(storage)
        return storage

    yield open_one
    for storage in opened:
        await storage.close()


def dead(storage) -> None:
    """Point the storage's bucket at a port where nothing listens (the bucket is down)."""
    bucket = storage.bucket
    bucket.live_stores = bucket.store, bucket.blob_store
    bucket.store = bucket.blob_store = _s3_store(replace(bucket.settings, endpoint_url=dead_url("")), transfer=2)


def revive(storage) -> None:
    storage.bucket.store, storage.bucket.blob_store = storage.bucket.live_stores
    storage.bucket.retry_at = 0.0  # do not wait out the back-off in a test


async def test_repeated_hits_are_served_by_the_local_tier_without_asking_the_bucket(gateways):
    a, b = gateways(), gateways()
    await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    assert (await b.get("crate/crates-io/foo/1.0.0")).body == CRATE  # from the bucket
    asked = b.bucket.requests
    for _ in range(5):
        assert (await b.get("crate/crates-io/foo/1.0.0")).body == CRATE
    assert b.bucket.requests == asked
    assert b.peek("crate/crates-io/foo/1.0.0").body == CRATE  # and from memory without any I/O


async def test_the_first_complete_copy_of_a_crate_wins(gateways):
    a, b = gateways(), gateways()
    await a.put("crate/crates-io/foo/1.0.0", CRATE, "first")
    await b.put("crate/crates-io/foo/1.0.0", CRATE + b"x", "second")
    got = await gateways().get("crate/crates-io/foo/1.0.0")
    assert (got.body, got.meta.upstream) == (CRATE, "first")


async def test_a_damaged_object_in_the_bucket_is_a_miss_and_the_next_fetch_repairs_it(gateways, caplog):
    a = gateways()
    entry = await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    await a.bucket.put(f"blob/{entry.meta.sha256}", CRATE[:100])  # truncated behind our back
    b = gateways()
    assert await b.get("crate/crates-io/foo/1.0.0") is None
    assert "bucket entry crate/crates-io/foo/1.0.0 is incomplete or damaged" in caplog.text
    await b.put("crate/crates-io/foo/1.0.0", CRATE, "up")  # b fetched it from an upstream again
    assert (await gateways().get("crate/crates-io/foo/1.0.0")).body == CRATE


async def test_an_object_whose_bytes_changed_in_the_bucket_is_a_miss_told_and_counted_small_or_large(gateways, caplog):
    a = gateways()
    small = await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    large_body = bytes(range(256)) * 12 * 1024  # 3 MiB: pulled through a spool into a file
    spool = a.spool()
    spool.write(large_body)
    large = await a.put_file("component/dist/2026-04-16/rustc.tar.xz", spool.finish(), "up")
    for entry, body in ((small, CRATE), (large, large_body)):
        await a.bucket.put(f"blob/{entry.meta.sha256}", flip_byte(body))  # same size, one bit changed
    b = gateways()

    assert await b.get("crate/crates-io/foo/1.0.0") is None
    assert await b.get("component/dist/2026-04-16/rustc.tar.xz") is None
    assert b.damage.counts == {"crate": 1, "component": 1}
    actual = hashlib.sha256(flip_byte(CRATE)).hexdigest()
    assert (f"bucket entry crate/crates-io/foo/1.0.0 is incomplete or damaged: stored as sha256 "
            f"{small.meta.sha256[:12]}…, its bytes now hash to {actual[:12]}…") in caplog.text
    assert await b.bucket.get(f"blob/{small.meta.sha256}") is None  # deleted: the next fetch can write it again
    assert b.local.keys() == []  # nothing damaged reached the local tier


async def test_a_local_tier_copy_that_rotted_is_evicted_and_pulled_again_from_the_bucket(gateways):
    a = gateways()
    entry = await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    rot_blob(a.directory, entry.meta.sha256)
    worker = open_storage(s3_cache(a.directory, a.bucket.settings))  # another worker on the tier: nothing in memory
    try:
        got = await worker.get("crate/crates-io/foo/1.0.0")
        assert got is not None and got.body == CRATE  # from the bucket, checked there
        assert worker.damage.counts == {"crate": 1}
        assert rot_blob(a.directory, entry.meta.sha256) == "sqlite"  # the tier holds the bucket's copy again
    finally:
        await worker.close()


async def test_with_the_bucket_down_the_local_tier_serves_and_writes_wait_to_be_uploaded(gateways, caplog):
    caplog.set_level(logging.INFO)
    a = gateways()
    await a.put("index/crates-io/foo", b"old", "up")
    dead(a)

    assert (await a.get("index/crates-io/foo")).body == b"old"
    stored = await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")  # a miss answered while the bucket is down
    owned, _, _ = await a.claim("crate/crates-io/bar/1.0.0", 5)  # leases fall back to this host's

    assert stored.body == CRATE and owned
    health = a.health()
    assert health["state"] == "degraded" and health["pending"] == 1 and health["errors"] >= 1
    assert "unreachable" in caplog.text and "serving from the local tier and the upstreams" in caplog.text
    assert await gateways().get("crate/crates-io/foo/1.0.0") is None  # not in the bucket yet
    with pytest.raises(StorageUnavailable):
        await a.entries()  # listing needs the bucket, and says so

    revive(a)
    await a.maintain()

    assert a.health()["state"] == "ok" and a.health()["pending"] == 0
    assert (await gateways().get("crate/crates-io/foo/1.0.0")).body == CRATE
    assert "reachable again" in caplog.text and "caught up 1 entries" in caplog.text


async def test_requests_never_wait_for_a_dead_bucket_only_the_upkeep_probes_it(gateways):
    a = gateways()
    dead(a)
    await a.get("crate/crates-io/foo/1.0.0")
    failures = a.bucket.requests
    a.bucket.retry_at = 0.0  # the back-off is over
    for _ in range(20):
        assert await a.get("crate/crates-io/foo/1.0.0") is None
    assert a.bucket.requests == failures  # failing fast: no connection attempts from requests
    await a.maintain()
    assert a.bucket.requests == failures + 1 and a.health()["state"] == "degraded"  # one probe, still down
    await a.maintain()
    assert a.bucket.requests == failures + 1  # the next probe waits RETRY_SECONDS


async def test_secrets_never_reach_logs_errors_or_health(gateways, seaweed, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = gateways(secret_access_key="a-wrong-secret-value-123")
    await wrong.put("crate/crates-io/foo/1.0.0", CRATE, "up")  # denied: served from the local tier
    health = wrong.health()
    text = caplog.text + repr(health) + repr(wrong.bucket.settings)
    assert health["state"] == "degraded" and "403" in health["last_error"]
    assert "a-wrong-secret-value-123" not in text and SECRET_KEY not in text
    assert "fleet-test-key" not in text


async def test_a_revalidation_by_one_gateway_refreshes_the_others_without_new_bytes(gateways):
    a, b = gateways(), gateways()
    body = b'{"name":"foo","vers":"1.0.0","cksum":"' + b'0' * 64 + b'"}\n'
    await a.put("index/crates-io/foo", body, "up", '"v1"', None, 1000.0)
    await b.get("index/crates-io/foo")
    await a.mark_checked("index/crates-io/foo", 5000.0, hashlib.sha256(body).hexdigest())
    asked = b.bucket.requests
    owned, entry, _ = await b.claim("index/crates-io/foo", 5)
    assert owned and entry.meta.checked_at == 5000.0
    # lease + meta only: the bytes it already held were not downloaded again
    assert b.bucket.requests - asked == 2
    await b.release_lease("index/crates-io/foo")


def test_bucket_target_names_no_credentials(seaweed):
    bucket = Bucket(seaweed.settings("team-a"))
    assert bucket.target == f"{seaweed.endpoint}/cargo-cache/team-a/"
    assert bucket.health()["state"] == "ok"


async def test_what_waits_to_be_uploaded_survives_a_restart(gateways, tmp_path, seaweed, caplog):
    caplog.set_level(logging.INFO)
    a = gateways()
    dead(a)
    await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    assert a.health()["pending"] == 1
    with pytest.raises(StorageUnavailable, match="1 entries are in this host's local tier but not yet in bucket"):
        await a.flush()  # what a command says when it ends with the bucket down
    await a.close()

    restarted = open_storage(s3_cache(a.directory, a.bucket.settings))
    try:
        assert restarted.health()["pending"] == 1
        await restarted.maintain()
        assert restarted.health()["pending"] == 0
    finally:
        await restarted.close()
    assert (await gateways().get("crate/crates-io/foo/1.0.0")).body == CRATE
    assert "caught up 1 entries" in caplog.text


async def test_what_rotted_while_waiting_to_be_uploaded_is_evicted_not_uploaded(gateways, caplog):
    caplog.set_level(logging.INFO)
    a = gateways()
    dead(a)
    small = await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    large_body = bytes(range(256)) * 12 * 1024  # 3 MiB: kept as a file, not hashed when read
    spool = a.spool()
    spool.write(large_body)
    large = await a.put_file("component/dist/2026-04-16/rustc.tar.xz", spool.finish(), "up")
    good = await a.put("crate/crates-io/bar/1.0.0", CRATE + b"bar", "up")
    assert a.health()["pending"] == 3
    for entry in (small, large):
        rot_blob(a.directory, entry.meta.sha256)
    a.local._memory.forget("crate/crates-io/foo/1.0.0")  # as after a restart: the bytes come from the disk

    revive(a)
    await a.maintain()

    assert a.health()["pending"] == 0
    assert a.damage.counts == {"crate": 1, "component": 1}
    assert "cache folder entry component/dist/2026-04-16/rustc.tar.xz is incomplete or damaged" in caplog.text
    b = gateways()
    assert await b.get("crate/crates-io/foo/1.0.0") is None
    assert await b.get("component/dist/2026-04-16/rustc.tar.xz") is None
    for entry in (small, large):
        assert await b.bucket.get(f"blob/{entry.meta.sha256}") is None  # no damaged bytes went up
    assert (await b.get("crate/crates-io/bar/1.0.0")).body == good.body
    assert await a.get("component/dist/2026-04-16/rustc.tar.xz") is None  # evicted: the next request fetches it


async def test_catching_up_never_replaces_a_newer_index_from_another_gateway(gateways):
    a, b = gateways(), gateways()
    dead(a)
    await a.put("index/crates-io/foo", b"older", "up", None, None, 1000.0)
    await b.put("index/crates-io/foo", b"newer", "up", None, None, 2000.0)
    revive(a)
    await a.maintain()
    assert a.health()["pending"] == 0
    got = await gateways().get("index/crates-io/foo")
    assert (got.body, got.meta.checked_at) == (b"newer", 2000.0)


async def test_export_reads_the_buckets_newest_copy_not_a_stale_local_one(gateways, tmp_path):
    from cratecache.airgap.bundle import export_bundle, import_bundle

    a, b = gateways(), gateways()
    first, second = (b'{"name":"foo","vers":"%s","cksum":"%s"}\n' % (v, b"0" * 64) for v in (b"1.0.0", b"2.0.0"))
    await a.put("index/crates-io/foo", first, "up", None, None, 1000.0)
    await b.get("index/crates-io/foo")  # b's local tier now holds the first version
    await a.put("index/crates-io/foo", second, "up", None, None, 2000.0)
    await export_bundle(b, tmp_path / "x.bundle", ["index/crates-io/foo"])
    with tarfile.open(tmp_path / "x.bundle") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        blob = tar.extractfile(f"blobs/{manifest['entries'][0]['sha256']}").read()
    assert blob == second and manifest["entries"][0]["checked_at"] == 2000.0
    disk = open_storage(CacheSettings(directory=tmp_path / "plain", size_limit=10**9))  # the air-gapped side
    try:
        await import_bundle(disk, tmp_path / "x.bundle")
        assert (await disk.get("index/crates-io/foo")).body == second
    finally:
        await disk.close()


async def test_a_call_that_fails_for_one_object_does_not_take_the_bucket_down(gateways):
    a = gateways()
    with pytest.raises(BucketDown):
        await a.bucket.get("index/../etc")  # an invalid path: obstore refuses it
    assert a.health()["state"] == "ok" and a.bucket.available()


async def test_a_condition_on_an_unknown_etag_writes_nothing(gateways):
    a = gateways()
    assert await a.bucket.put("meta/x", b"1", create=True) is not None
    assert await a.bucket.put("meta/x", b"2", if_match=None) is None
    assert (await a.bucket.get("meta/x"))[0] == b"1"


async def test_a_meta_with_wrong_field_types_is_a_miss(gateways, caplog):
    a = gateways()
    entry = await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    record = json.dumps({**asdict(entry.meta), "size": str(entry.meta.size)}).encode()
    await a.bucket.put("meta/crate/crates-io/foo/1.0.0", record)
    assert await gateways().get("crate/crates-io/foo/1.0.0") is None
    assert "has an unreadable meta (size is not an integer from 0 to 4294967296): ignored" in caplog.text


async def test_the_proxy_uploads_what_a_command_left_pending_in_its_folder(gateways, caplog):
    caplog.set_level(logging.INFO)
    proxy = gateways()
    command = open_storage(s3_cache(proxy.directory, proxy.bucket.settings))  # `make stage` on the proxy's folder
    dead(command)
    await command.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    with pytest.raises(StorageUnavailable):
        await command.flush()
    await command.close()
    proxy._rescan_at = 0.0  # its next upkeep looks for pending marks (every minute)
    await proxy.maintain()
    assert (await gateways().get("crate/crates-io/foo/1.0.0")).body == CRATE
    assert "caught up 1 entries" in caplog.text


@pytest.mark.parametrize(("message", "op", "outage"), [
    ("Error performing GET http://h/b/k in 2ms - Server returned non-2xx status code: 503 Service Unavailable", "get",
     True),
    ("Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 501 Not Implemented", "put", True),
    ("Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 400 Bad Request", "put", False),
    ("Error performing PUT http://h/b/k in 2ms - Server returned non-2xx status code: 413 Payload Too Large", "put",
     False),
    ("Error performing GET http://h/b/k in 2ms - HTTP error: error sending request", "get", True),
])
def test_only_outages_mark_the_bucket_down(message, op, outage):
    from obstore.exceptions import GenericError

    assert _is_outage(op, GenericError(message)) is outage


def test_a_denied_delete_alone_is_not_an_outage():
    from obstore.exceptions import PermissionDeniedError

    assert _is_outage("delete", PermissionDeniedError("403 AccessDenied")) is False
    assert _is_outage("get", PermissionDeniedError("403 SignatureDoesNotMatch")) is True


def test_error_text_never_carries_the_keys(seaweed):
    settings = seaweed.settings("p")
    error = RuntimeError(f"signing failed for {settings.access_key_id} with {settings.secret_access_key}\nmore")
    text = _describe(error, settings)
    assert settings.secret_access_key not in text and settings.access_key_id not in text
    assert text == "RuntimeError: signing failed for *** with ***"


async def test_an_https_endpoint_with_a_private_ca_needs_its_ca_bundle(tmp_path, upstream_ca, upstream_cert):
    from tests.fixtures.seaweed import SeaweedFS

    server = SeaweedFS(tmp_path / "tls", tls=upstream_cert)
    server.start()
    try:
        ca = tmp_path / "ca.pem"
        upstream_ca.cert_pem.write_to_path(str(ca))
        trusted = Bucket(replace(server.settings("tls"), endpoint_url=server.https_endpoint, ca_bundle=str(ca)))
        untrusted = Bucket(replace(server.settings("tls"), endpoint_url=server.https_endpoint))
        assert await trusted.put("meta/x", b"1") is not None
        assert (await trusted.get("meta/x"))[0] == b"1"
        with pytest.raises(BucketDown):
            await untrusted.get("meta/x")
    finally:
        server.stop()
    assert untrusted.health()["state"] == "degraded"
    assert "the endpoint's certificate is not trusted: UnknownIssuer; see cache.s3.ca_bundle" in untrusted.last_error


async def test_a_purge_reaches_the_local_tiers_of_the_other_gateways(gateways, caplog):
    caplog.set_level(logging.INFO)
    a, b, operator = gateways(), gateways(), gateways()
    await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    await a.put("crate/crates-io/bar/1.0.0", CRATE + b"bar", "up")
    assert (await b.get("crate/crates-io/foo/1.0.0")).body == CRATE  # now in b's local tier too

    assert await operator.delete("crate/crates-io/foo/1.0.0")  # `cache-purge --crate foo`
    assert (await b.get("crate/crates-io/foo/1.0.0")).body == CRATE  # b's tier serves it until its upkeep
    await a.maintain()
    await b.maintain()

    assert await a.get("crate/crates-io/foo/1.0.0") is None and await b.get("crate/crates-io/foo/1.0.0") is None
    assert (await a.get("crate/crates-io/bar/1.0.0")).body == CRATE + b"bar"
    assert "dropped 1 purged entries from the local tier" in caplog.text

    time.sleep(1.1)  # a later fetch of the same crate is a new entry, not undone by the old purge
    await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    b.purges._scan_at = 0.0
    await b.maintain()
    assert (await b.get("crate/crates-io/foo/1.0.0")).body == CRATE


async def test_purging_everything_empties_every_gateways_local_tier(gateways):
    a, operator = gateways(), gateways()
    await a.put("crate/crates-io/foo/1.0.0", CRATE, "up")
    await a.put("index/crates-io/foo", b'{"v":1}\n', "up")
    assert await operator.clear() == 2
    await a.maintain()
    assert await a.keys() == [] and await a.get("crate/crates-io/foo/1.0.0") is None


async def test_the_first_page_of_a_listing_comes_after_one_chunk_of_the_buckets_listing(gateways, monkeypatch):
    monkeypatch.setattr(bucket_module, "LIST_CHUNK", 10)  # the bucket's listing in chunks of 10, not 1000
    a = gateways()
    keys = [f"crate/crates-io/c{i:03d}/1.0.0" for i in range(45)]
    for key in keys:
        await a.put(key, key.encode(), "up")
    b = gateways()
    calls: list[str] = []
    b.on_call = lambda backend, op, seconds, ok: calls.append(op)

    pages = b.entry_pages(size=10)
    first = await anext(pages)
    assert [key for key, _ in first] == keys[:10]
    assert (calls.count("list"), calls.count("get")) == (1, 10)  # one chunk listed, only its page's metas read
    rest = [page async for page in pages]
    assert [len(page) for page in (first, *rest)] == [10, 10, 10, 10, 5]
    assert [key for page in (first, *rest) for key, _ in page] == keys  # in key order, each entry once
    assert (calls.count("list"), calls.count("get")) == (6, 45)  # five chunks, then the listing's end


async def test_a_bucket_that_goes_down_mid_listing_ends_the_listing_in_storage_unavailable(tmp_path):
    """Never a listing cut short: the bucket's next page of the listing is not answered, and the listing says so."""
    from tests.fixtures.seaweed import SeaweedFS

    server = SeaweedFS(tmp_path / "own")  # its own server, to stop it
    server.start()
    store = open_storage(s3_cache(tmp_path / "tier", server.settings("down")))
    try:
        entry = await store.put("crate/crates-io/c/1.0.0", CRATE, "up")
        record, limit = json.dumps(asdict(entry.meta)).encode(), asyncio.Semaphore(32)

        async def put(i: int) -> None:  # more entries than S3 lists in one answer (1000 keys)
            async with limit:
                await store.bucket.put(f"meta/crate/crates-io/c{i:04d}/1.0.0", record)

        await asyncio.gather(*(put(i) for i in range(LIST_CHUNK + 10)))
        pages = store.entry_pages(size=LIST_CHUNK)
        first = await anext(pages)
        server.stop()
        with pytest.raises(StorageUnavailable, match=r"(list|get): .*connection refused"):
            while True:  # the rest of the first chunk (its metas) or the next chunk: either read fails
                await anext(pages)
    finally:
        server.stop()
        await store.close()
    assert len(first) == s3_module.FIRST_PAGE and store.health()["state"] == "degraded"


async def test_the_first_page_of_a_long_listing_is_short(gateways):
    """A listing's first lines after FIRST_PAGE reads (a meta is a GET each), the rest in pages of `size`."""
    a = gateways()
    keys = [f"crate/crates-io/c{i:03d}/1.0.0" for i in range(s3_module.FIRST_PAGE + 30)]
    await asyncio.gather(*(a.put(key, key.encode(), "up") for key in keys))
    b = gateways()
    calls: list[str] = []
    b.on_call = lambda backend, op, seconds, ok: calls.append(op)
    pages = b.entry_pages(size=1000)
    first = await anext(pages)
    assert [key for key, _ in first] == keys[:s3_module.FIRST_PAGE]
    assert calls.count("get") == s3_module.FIRST_PAGE
    rest = [page async for page in pages]
    assert [key for page in (first, *rest) for key, _ in page] == keys and [len(p) for p in rest] == [30]
