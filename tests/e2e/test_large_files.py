"""Large files: written to the cache as they arrive, streamed to clients from the stored file, Range requests.

A real crate (Debian's `anyhow` sources) with 40 MB of incompressible data added, served by local upstreams;
the real cargo and a real mitmdump.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.registry import CrateFile, Registry, encode_index, index_entry, load_manifest, pack_crate
from tests.fixtures.upstream import UpstreamServer
from tests.harness import cli, make_project, write_proxies

BIG = "anyhow"  # its real sources, plus the payload
BIG_VERSION = "1.0.69"
PAYLOAD_BYTES = 40 * 1000 * 1000
URL = f"https://static.crates.io/crates/{BIG}/{BIG_VERSION}/download"


@pytest.fixture(scope="module")
def big_registry(registry: Registry, tmp_path_factory) -> Registry:
    """The test registry with anyhow 1.0.69 replaced by a ~40 MB .crate of the same sources plus a blob."""
    source = tmp_path_factory.mktemp("big") / f"{BIG}-{BIG_VERSION}"
    shutil.copytree(f"/usr/share/cargo/registry/{BIG}-{BIG_VERSION}", source,
                    ignore=shutil.ignore_patterns("debian", ".cargo-checksum.json"))
    (source / "payload.bin").write_bytes(os.urandom(PAYLOAD_BYTES))
    data = pack_crate(source, BIG, BIG_VERSION)
    cksum = hashlib.sha256(data).hexdigest()
    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    own.crates[(BIG, BIG_VERSION)] = CrateFile(BIG, BIG_VERSION, data, cksum)
    own.index_files[BIG] = encode_index([index_entry(load_manifest(source), cksum)])
    return own


@pytest.fixture
def big_data(big_registry) -> bytes:
    return big_registry.crate(BIG, BIG_VERSION).data


def verify(proxy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(proxy.ca_cert))


def partial_files(cache: Path) -> list[Path]:
    return sorted((cache / "partial").glob("*")) if (cache / "partial").exists() else []


def test_real_cargo_fetches_a_large_crate_cold_rejecting_a_corrupt_copy_then_warm_with_every_upstream_stopped(
    big_registry, big_data, entry, start_proxy, new_cargo, tmp_path
):
    project = make_project(tmp_path / "app", f'{BIG} = "={BIG_VERSION}"\n')
    with UpstreamServer(big_registry, name="first") as first, UpstreamServer(big_registry, name="second") as second:
        first.corrupt.add(BIG)
        proxy = start_proxy([entry(first, priority=1), entry(second, priority=2)], cache_dir=tmp_path / "cache")
        cold = new_cargo(proxy).fetch(project)
        first_asked = [p for p in first.paths() if p.startswith("/crates/")]
        second_asked = [p for p in second.paths() if p.startswith("/crates/")]
    warm = new_cargo(proxy).run(project, "fetch")  # both upstreams are stopped now
    log = proxy.log()

    assert cold.returncode == 0, cold.stderr
    assert first_asked == [f"/crates/{BIG}/{BIG_VERSION}/download"]  # its copy was refused...
    assert "upstream first failed: checksum mismatch for anyhow 1.0.69" in log
    assert second_asked == [f"/crates/{BIG}/{BIG_VERSION}/download"]  # ...and the second's served
    assert f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 second miss {len(big_data)}B" in log
    assert warm.returncode == 0, warm.stderr
    assert f"GET static.crates.io/crates/{BIG}/{BIG_VERSION}/download 200 cache hit {len(big_data)}B" in log
    unpacked = next(tmp_path.glob("cargo-home-1/registry/src/*/anyhow-1.0.69"))
    assert (unpacked / "payload.bin").stat().st_size == PAYLOAD_BYTES  # cargo verified and unpacked it
    assert partial_files(tmp_path / "cache") == []  # the refused copy left nothing behind


async def test_sixteen_concurrent_clients_over_http2_and_http11_get_the_exact_file_from_one_upstream_request(
    big_registry, big_data, entry, start_proxy, tmp_path
):
    want = hashlib.sha256(big_data).hexdigest()
    with UpstreamServer(big_registry, name="origin") as origin:
        proxy = start_proxy([entry(origin)], cache_dir=tmp_path / "cache")

        async def download(n: int) -> tuple[int, str, str]:
            """curl (Cargo's HTTP library) over HTTP/2 or HTTP/1.1, through the proxy."""
            out = tmp_path / f"download-{n}"
            curl = await asyncio.create_subprocess_exec(
                "curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca_cert), "--http2" if n % 2 else "--http1.1",
                "-o", str(out), "-w", "%{http_code} %{http_version}", URL, stdout=asyncio.subprocess.PIPE)
            written, _ = await asyncio.wait_for(curl.communicate(), 120)
            status, version = written.decode().split()
            digest = await asyncio.to_thread(lambda: hashlib.sha256(out.read_bytes()).hexdigest())
            out.unlink()
            return int(status), digest, version

        cold = await asyncio.gather(*(download(n) for n in range(16)))
        warm = await asyncio.gather(*(download(n) for n in range(16)))

    for results in (cold, warm):
        assert all(status == 200 and digest == want for status, digest, _ in results)
        assert sorted({version for *_, version in results}) == ["1.1", "2"]
    assert origin.paths().count(f"/crates/{BIG}/{BIG_VERSION}/download") == 1


async def test_range_requests_on_a_cached_file_and_a_cut_download_resumed(
    big_registry, big_data, entry, start_proxy, tmp_path
):
    size = len(big_data)
    with UpstreamServer(big_registry, name="origin") as origin:
        proxy = start_proxy([entry(origin)], cache_dir=tmp_path / "cache")
        async with httpx.AsyncClient(proxy=proxy.url, verify=verify(proxy), http2=True, trust_env=False,
                                     timeout=120) as c:
            # Asked for a range before it is cached: answered once the whole file is stored and verified.
            first = await c.get(URL, headers={"Range": "bytes=0-99"})
            middle = await c.get(URL, headers={"Range": "bytes=1000000-1999999"})
            tail = await c.get(URL, headers={"Range": "bytes=-4096"})
            open_ended = await c.get(URL, headers={"Range": f"bytes={size - 10}-"})
            beyond = await c.get(URL, headers={"Range": f"bytes={size}-"})
            etag = first.headers["etag"]
            current = await c.get(URL, headers={"Range": "bytes=0-9", "If-Range": etag})
            stale = await c.get(URL, headers={"Range": "bytes=0-9", "If-Range": '"sha256-0000"'})
            small = await c.get("https://static.crates.io/crates/log/0.4.17/download", headers={"Range": "bytes=5-14"})

            # A download cut mid-way, then resumed with Range, ends with the exact file.
            got = bytearray()
            async with c.stream("GET", URL) as response:
                async for chunk in response.aiter_raw():
                    got += chunk
                    if len(got) > size // 3:
                        break
            resumed = await c.get(URL, headers={"Range": f"bytes={len(got)}-", "If-Range": etag})

    assert (first.status_code, first.content, first.headers["content-range"]) == (206, big_data[:100], f"bytes 0-99/{size}")
    assert (middle.status_code, middle.content) == (206, big_data[1000000:2000000])
    assert (tail.status_code, tail.content) == (206, big_data[-4096:])
    assert (open_ended.status_code, open_ended.content) == (206, big_data[-10:])
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert (current.status_code, current.content) == (206, big_data[:10])
    assert stale.status_code == 200 and hashlib.sha256(stale.content).digest() == hashlib.sha256(big_data).digest()
    assert small.status_code == 206 and small.headers["content-range"].startswith("bytes 5-14/")
    assert resumed.status_code == 206 and bytes(got) + resumed.content == big_data
    assert origin.paths().count(f"/crates/{BIG}/{BIG_VERSION}/download") == 1


def test_a_proxy_killed_in_the_middle_of_a_large_fill_leaves_nothing_partial(
    big_registry, entry, confdir, tmp_path
):
    from tests.harness import Proxy

    cache = tmp_path / "cache"
    with UpstreamServer(big_registry, name="origin") as origin:
        origin.faults[f"{BIG}/crate"] = "trickle"
        origin.trickle_chunk, origin.trickle_pause = 256 * 1024, 0.05  # about 5 MB/s: 8 s for the whole file
        config = write_proxies(tmp_path / "proxies.yaml", [entry(origin)], cache)
        proxy = Proxy(config, confdir, tmp_path / "first.log").start()
        with ThreadPoolExecutor(1) as pool:  # the answer comes only once the file is complete: ask in the background
            answer = pool.submit(lambda: httpx.Client(proxy=proxy.url, verify=verify(proxy), trust_env=False,
                                                      timeout=60).get(URL))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(p.stat().st_size > 4 << 20 for p in partial_files(cache)):
                time.sleep(0.05)
            assert partial_files(cache), "the fill never reached the partial file"
            os.kill(proxy.process.pid, signal.SIGKILL)
            proxy.process.wait(10)
            with pytest.raises(httpx.HTTPError):
                answer.result(30)
        proxy.stop()
        assert len(partial_files(cache)) == 1  # what the killed process was writing

    # Restarted with no upstream at all: nothing partial is served, and the partial file is gone.
    with Proxy(config, confdir, tmp_path / "second.log") as again:
        with httpx.Client(proxy=again.url, verify=verify(again), trust_env=False, timeout=60) as c:
            after = c.get(URL)
        log = again.log()
    assert after.status_code == 502
    assert partial_files(cache) == []
    assert "removed 1 partial download(s) left by stopped processes" in log
    listing = cli(config, "ls", "--kind", "crate")
    assert BIG not in listing.stdout


@pytest.mark.parametrize("backend", ["disk", "s3"])
def test_a_large_crate_is_staged_exported_imported_and_served_offline(
    big_registry, big_data, entry, start_proxy, tmp_path, backend, request
):
    from tests.e2e.test_airgap import lockfile_of

    extra = {}
    if backend == "s3":  # the connected gateway's cache is a bucket: blobs go up in parts and come down streamed
        seaweed = request.getfixturevalue("seaweed")
        extra = {"backend": "s3", "s3": seaweed.yaml(seaweed.new_prefix("large"))}
    with UpstreamServer(big_registry, name="origin") as origin:
        upstream = entry(origin)
        connected = write_proxies(tmp_path / "connected.yaml", [upstream], tmp_path / "connected", **extra)
        staged = cli(connected, "stage", str(lockfile_of(tmp_path, [(BIG, BIG_VERSION)])))
    bundle = tmp_path / "site.bundle"
    exported = cli(connected, "export", str(bundle))
    isolated = write_proxies(tmp_path / "isolated.yaml", [upstream], tmp_path / "isolated", offline=True)
    imported = cli(isolated, "import", str(bundle))

    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert exported.returncode == 0 and imported.returncode == 0, exported.stderr + imported.stderr
    assert partial_files(tmp_path / "connected") == [] and not list((tmp_path / "isolated").glob("import-*"))
    proxy = start_proxy([upstream], cache_dir=tmp_path / "isolated", offline=True)
    with httpx.Client(proxy=proxy.url, verify=verify(proxy), trust_env=False, timeout=60) as c:
        served = c.get(URL)
    assert served.status_code == 200 and served.content == big_data


@pytest.mark.parametrize("fault", ["truncate", "reset"])
def test_a_large_download_cut_short_by_the_upstream_leaves_nothing_behind_and_the_next_upstream_serves_it(
    big_registry, big_data, entry, start_proxy, tmp_path, fault
):
    with UpstreamServer(big_registry, name="first") as first, UpstreamServer(big_registry, name="second") as second:
        first.faults[f"{BIG}/crate"] = fault  # half the body, then a clean close or a reset
        proxy = start_proxy([entry(first, priority=1), entry(second, priority=2)], cache_dir=tmp_path / "cache")
        with httpx.Client(proxy=proxy.url, verify=verify(proxy), trust_env=False, timeout=60) as c:
            served = c.get(URL)
        log = proxy.log()

    assert served.status_code == 200 and served.content == big_data
    assert f"/crates/{BIG}/{BIG_VERSION}/download" in first.paths() and "upstream first failed" in log
    assert partial_files(tmp_path / "cache") == []  # the half-written partial file was deleted
