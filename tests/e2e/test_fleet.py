"""A fleet of gateways sharing one cache in a bucket (the s3 backend), with a real SeaweedFS server,
real mitmdump gateways (each with its own local tier) and the real cargo."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.registry import Registry
from tests.fixtures.seaweed import SECRET_KEY, SeaweedFS
from tests.fixtures.upstream import UpstreamServer
from tests.harness import FULL_DEPENDENCIES, free_port, make_project

JSON_DEPENDENCIES = 'serde_json = "1"\n'


@pytest.fixture
def own_seaweed(tmp_path: Path):
    """A SeaweedFS of this test's own, which the test may stop and start again."""
    server = SeaweedFS(tmp_path / "seaweedfs")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway(start_proxy, entry, tmp_path):
    """start(bucket, upstreams, name) -> a mitmdump on the s3 backend, its local tier in its own folder."""
    prefix = f"fleet-{tmp_path.name}"

    def start(bucket: SeaweedFS, upstreams: list, name: str, status: bool = False, **cache):
        port = free_port()
        proxy = start_proxy([entry(u) for u in upstreams], cache_dir=tmp_path / f"tier-{name}", backend="s3",
                            s3=bucket.yaml(prefix), args=("--set", f"cargo_status_port={port if status else 0}"),
                            **cache)
        proxy.status_url = f"http://127.0.0.1:{port}"
        return proxy

    return start


def storage_status(proxy) -> tuple[dict, str]:
    """The storage part of the status page's data, and the metrics text."""
    return (httpx.get(proxy.status_url + "/status.json").json()["storage"],
            httpx.get(proxy.status_url + "/metrics").text)


def status_page_dom(proxy, tmp_path) -> str:
    """The status page as headless Chromium renders it (its script fills the tables)."""
    import shutil
    import subprocess

    from tests.e2e.test_operations import CHROMIUM_FLAGS

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by `make test` (scripts/install-test-deps)"
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                           "--virtual-time-budget=5000", "--dump-dom", proxy.status_url + "/"],
                          capture_output=True, text=True, timeout=60).stdout


def fetched(result) -> bool:
    return result.returncode == 0 and not re.search(r"^(error|warning: spurious)", result.stderr, re.M)


def test_a_crate_fetched_through_one_gateway_is_served_by_another_with_every_upstream_stopped(
        registry: Registry, seaweed, gateway, new_cargo, small_project):
    with UpstreamServer(registry, name="origin") as origin:
        a = gateway(seaweed, [origin], "a")
        b = gateway(seaweed, [origin], "b")
        first = new_cargo(a).fetch(small_project)
        assert fetched(first), first.stderr
    second = new_cargo(b).fetch(small_project)  # the upstream is gone; b's local tier is empty

    assert fetched(second), second.stderr
    answers = re.findall(r"GET (?:index|static)\.crates\.io/\S+ (\d+) (\S+) (\w+)", b.log())
    assert len(answers) >= 5 and set(answers) == {("200", "cache", "hit")}  # config.json, index files, crates
    assert "failed" not in b.log() and "unreachable" not in b.log()
    assert "cache s3 http://127.0.0.1:" in b.log()  # the start-up line names the backend and bucket


def test_eight_cold_fetches_across_three_gateways_ask_the_upstream_once_per_object(
        registry: Registry, seaweed, gateway, new_cargo, tmp_path):
    with UpstreamServer(registry, name="origin") as origin:
        origin.delay = 0.05  # misses overlap across gateways
        gateways = [gateway(seaweed, [origin], name) for name in "abc"]
        runs = [(new_cargo(gateways[i % 3]), make_project(tmp_path / f"p{i}", FULL_DEPENDENCIES)) for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda run: run[0].fetch(run[1]), runs))

    assert all(fetched(r) for r in results), [r.stderr for r in results if not fetched(r)]
    per_object = collections.Counter(origin.paths())
    assert len(per_object) > 40  # config.json, the index files and the crates of 40-odd packages
    assert {path: n for path, n in per_object.items() if n > 1} == {}
    assert all(re.search(r"GET \S+ 200 ", g.log()) for g in gateways)  # each gateway served its runners


def test_a_gateway_killed_holding_a_lease_delays_the_others_at_most_the_lease_time(
        registry: Registry, seaweed, gateway, new_cargo, small_project):
    lease = 6
    with UpstreamServer(registry, name="origin") as origin:
        a, b, c = (gateway(seaweed, [origin], name, lease_seconds=lease) for name in "abc")
        origin.faults["anyhow"] = "trickle"  # a's fetch of anyhow's index never completes
        origin.trickle_pause = 5
        holder = new_cargo(a)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            doomed = pool.submit(holder.run, small_project, "generate-lockfile", timeout=60)
            deadline = time.monotonic() + 30
            while not any("anyhow" in p for p in origin.paths()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert any("anyhow" in p for p in origin.paths()), origin.paths()
            a.process.kill()  # dies holding the lease on anyhow's index
            killed_at = time.monotonic()
            del origin.faults["anyhow"]
            others = [pool.submit(new_cargo(g).fetch, small_project) for g in (b, c)]
            results = [o.result(timeout=120) for o in others]
            took = time.monotonic() - killed_at
            doomed.result(timeout=60)

    assert all(fetched(r) for r in results), [r.stderr for r in results]
    assert lease - 2 < took < lease + 10, f"{took:.1f} s"  # they waited for the dead lease, and no longer
    anyhow_index = [r for r in origin.requests if r.path.endswith("/an/yh/anyhow")]
    evidence = "\n".join([f"{r.at:.3f} {r.peer} {r.method} {r.path} {r.headers}" for r in anyhow_index]
                         + [f"--- {g.log_path}\n{g.log()}" for g in (a, b, c)])
    assert len(anyhow_index) == 2, evidence  # the dead gateway's attempt, then one for both survivors


def test_the_bucket_stopped_mid_run_builds_go_on_and_the_cache_fills_again(
        registry: Registry, own_seaweed, gateway, new_cargo, small_project, tmp_path):
    json_project = make_project(tmp_path / "json", JSON_DEPENDENCIES)
    with UpstreamServer(registry, name="origin") as origin:
        a = gateway(own_seaweed, [origin], "a")
        b = gateway(own_seaweed, [origin], "b", status=True)
        assert fetched(new_cargo(a).fetch(small_project))
        assert storage_status(b)[0]["state"] == "ok"

        own_seaweed.stop()
        during = [new_cargo(a).fetch(small_project), new_cargo(b).fetch(json_project)]
        assert all(fetched(r) for r in during), [r.stderr for r in during]
        assert "unreachable" in b.log() and "serving from the local tier and the upstreams" in b.log()
        storage, metrics = storage_status(b)
        assert storage["state"] == "degraded" and storage["pending"] > 0 and storage["errors"] > 0
        assert "(connection refused)" in storage["last_error"] and SECRET_KEY not in repr(storage) + metrics
        assert 'cargo_cache_storage_up{backend="s3"} 0.0' in metrics
        page = status_page_dom(b, tmp_path)
        assert "<td>s3</td>" in page and "degraded since last error" in page  # what the operator sees
        # whichever call met the outage first: a request's get, or the upkeep's purge scan (list)
        assert re.search(r'cargo_cache_storage_requests_total\{backend="s3",operation="(get|list)",outcome="error"\} '
                         r'[1-9]', metrics)

        own_seaweed.start()
        deadline = time.monotonic() + 30
        while "caught up" not in b.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert re.search(r"bucket \S+ reachable again", b.log())
        assert re.search(r"caught up \d+ entries into bucket", b.log())
        storage, metrics = storage_status(b)
        assert (storage["state"], storage["pending"]) == ("ok", 0) and storage["p95_ms"] is not None
        assert 'cargo_cache_storage_up{backend="s3"} 1.0' in metrics
        c = gateway(own_seaweed, [origin], "c")
    after = new_cargo(c).fetch(json_project)  # the upstream is gone: only the bucket can answer

    assert fetched(after), after.stderr
    assert "failed" not in c.log()


def test_staging_inspection_export_import_and_offline_serving_on_the_bucket(
        registry: Registry, seaweed, entry, start_proxy, new_cargo, small_project, tmp_path):
    from tests.harness import cli, locked_packages, write_proxies

    with UpstreamServer(registry, name="origin") as origin:
        lock_proxy = start_proxy([entry(origin)], cache_dir=tmp_path / "lock-cache")
        assert new_cargo(lock_proxy).run(small_project, "generate-lockfile").returncode == 0
        packages = locked_packages(small_project)
        connected = write_proxies(tmp_path / "connected.yaml", [entry(origin)], tmp_path / "tier-stage",
                                  backend="s3", s3=seaweed.yaml(f"staged-{tmp_path.name}"))
        origin.clear()
        staged = cli(connected, "stage", str(small_project / "Cargo.lock"))
        listed = cli(connected, "ls", "--kind", "crate")
        stats = cli(connected, "stats", "--json")
        bundle = tmp_path / "crates.bundle"
        exported = cli(connected, "export", str(bundle), "--lockfile", str(small_project / "Cargo.lock"))
        upstream = entry(origin)

    assert staged.returncode == 0 and f"fetched {len(packages)}, already cached 0, failed 0" in staged.stdout
    assert "into http://127.0.0.1:" in staged.stdout  # staged into the bucket
    assert listed.returncode == 0 and all(f" {name} " in listed.stdout for name, _ in packages)
    assert stats.returncode == 0 and json.loads(stats.stdout)["kinds"]["crate"]["entries"] == len(packages)
    assert exported.returncode == 0 and f"({len(packages)} crates, {len(packages)} index files" in exported.stdout

    isolated = write_proxies(tmp_path / "isolated.yaml", [upstream], tmp_path / "tier-import", backend="s3",
                             s3=seaweed.yaml(f"isolated-{tmp_path.name}"), offline=True)
    imported = cli(isolated, "import", str(bundle))
    assert imported.returncode == 0, imported.stderr
    proxy = start_proxy([upstream], cache_dir=tmp_path / "tier-offline", backend="s3",  # a cold local tier
                        s3=seaweed.yaml(f"isolated-{tmp_path.name}"), offline=True)
    offline = new_cargo(proxy).run(small_project, "fetch")

    assert offline.returncode == 0, offline.stderr
    assert "upstream" not in proxy.log().split("proxy listening")[1]
    purged = cli(isolated, "purge", "--crate", "anyhow")
    after = cli(isolated, "ls", "--json")
    assert purged.returncode == 0 and "removed 2 entries" in purged.stdout  # its index file and its version
    assert '"anyhow"' not in after.stdout and '"log"' in after.stdout


def test_commands_say_when_the_bucket_is_unreachable(entry, registry, tmp_path):
    from tests.fixtures.upstream import dead_url
    from tests.harness import cli, write_proxies

    config = write_proxies(tmp_path / "p.yaml", [{"name": "x", "url": dead_url()}], tmp_path / "tier",
                           backend="s3", s3={"endpoint_url": dead_url(""), "bucket": "cargo-cache",
                                             "access_key_id": "k", "secret_access_key": "never-printed-secret"})
    listed = cli(config, "ls")
    assert listed.returncode == 1
    assert "cargo-cache: the cache's storage is unavailable: bucket " in listed.stderr
    assert "never-printed-secret" not in listed.stderr + listed.stdout


def test_a_bad_bucket_setting_stops_the_gateway_at_start_with_one_line(entry, confdir, tmp_path):
    from tests.fixtures.upstream import dead_url
    from tests.harness import Proxy, write_proxies

    config = write_proxies(tmp_path / "p.yaml", [{"name": "x", "url": dead_url()}], tmp_path / "tier", backend="s3",
                           s3={"bucket": "Team_Cache", "access_key_id": "k", "secret_access_key": "not-for-logs"})
    proxy = Proxy(config, confdir, tmp_path / "mitmdump.log")
    try:
        proxy.start(timeout=30)
    except RuntimeError:
        pass  # exited before it said it listens
    assert proxy.process.wait(timeout=30) != 0
    assert "Error logged during startup, exiting" in proxy.log()
    errors = [line for line in proxy.log().splitlines() if "invalid configuration" in line]
    assert len(errors) == 1
    assert errors[0].endswith(f"cargo-cache: invalid configuration: {config}: cache.s3.bucket: 'Team_Cache' is not a "
                              "bucket name (3-63 of a-z, 0-9, '.', '-')")
    assert "not-for-logs" not in proxy.log()


def test_commands_on_the_bucket_exit_with_their_own_status_under_cpu_load(entry, tmp_path):
    """obstore's Rust runtime used to abort commands at interpreter exit (SIGABRT, -6), in up to 3 of 5 runs with
    a core kept busy; every run must now end with the command's own status and its full output."""
    from tests.fixtures.upstream import dead_url
    from tests.harness import cli, write_proxies

    config = write_proxies(tmp_path / "p.yaml", [{"name": "x", "url": dead_url()}], tmp_path / "tier",
                           backend="s3", s3={"endpoint_url": dead_url(""), "bucket": "cargo-cache",
                                             "access_key_id": "k", "secret_access_key": "s", "timeout_ms": 200})
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        runs = [cli(config, *command, timeout=60) for command in [("ls",), ("stats",), ("purge", "--all")] * 6]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert [r.returncode for r in runs] == [1] * len(runs), [r.stderr[-300:] for r in runs if r.returncode != 1]
    assert all("cargo-cache: the cache's storage is unavailable: bucket " in r.stderr for r in runs)
