"""Index freshness, conditional requests, serving through upstream failures, and many clients at once."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import ssl
import subprocess
import time

import httpx

from tests.fixtures.registry import Registry
from tests.fixtures.upstream import SilentServer, UpstreamServer
from tests.harness import FULL_DEPENDENCIES, cargo_binary, locked_packages, make_project


def client(proxy, http2: bool = False) -> httpx.AsyncClient:
    return httpx.AsyncClient(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
                             trust_env=False, timeout=20, http2=http2)


def index_paths(server) -> list[str]:
    return [p for p in server.paths() if p.startswith("/index/") and not p.endswith("config.json")]


def test_conditional_requests_both_ways(secondary, entry, start_proxy, new_cargo, small_project):
    proxy = start_proxy([entry(secondary)], index_ttl=0)
    cargo = new_cargo(proxy)
    assert cargo.run(small_project, "generate-lockfile").returncode == 0
    first_round = len(secondary.requests)

    again = cargo.run(small_project, "update")  # same CARGO_HOME: cargo now holds our ETags

    assert again.returncode == 0, again.stderr
    revalidations = [r for r in secondary.requests[first_round:] if r.path.startswith("/index/3/l/log")]
    assert revalidations and all("if-none-match" in r.headers for r in revalidations)
    log = proxy.log()
    assert "GET index.crates.io/3/l/log 304 secondary revalidated" in log


async def test_a_yank_is_visible_after_the_ttl_and_not_before(registry, entry, start_proxy):
    own = Registry(index_files=dict(registry.index_files), crates=dict(registry.crates))
    with UpstreamServer(own, name="origin") as origin:
        proxy = start_proxy([entry(origin)], index_ttl=2)
        async with client(proxy) as c:
            before = await c.get("https://index.crates.io/an/yh/anyhow")
            own.index_files["anyhow"] = own.index_files["anyhow"].replace(b'"yanked":false', b'"yanked":true')
            within_ttl = await c.get("https://index.crates.io/an/yh/anyhow")
            await asyncio.sleep(2.5)
            after_ttl = await c.get("https://index.crates.io/an/yh/anyhow")

        assert json.loads(before.content)["yanked"] is False
        assert within_ttl.content == before.content and within_ttl.headers["x-cache"] == "HIT"
        assert json.loads(after_ttl.content)["yanked"] is True
        assert after_ttl.headers["x-cache"] == "UPDATED" and after_ttl.headers["etag"] != before.headers["etag"]
        requests = [r for r in origin.requests if r.path == "/index/an/yh/anyhow"]
        assert len(requests) == 2 and "if-none-match" in requests[1].headers


async def test_stale_is_served_while_every_upstream_is_down(
    secondary, entry, start_proxy, new_cargo, small_project
):
    proxy = start_proxy([entry(secondary)], index_ttl=0)
    assert new_cargo(proxy).fetch(small_project).returncode == 0
    secondary.stop()

    (small_project / "Cargo.lock").unlink()
    result = new_cargo(proxy).fetch(small_project)
    async with client(proxy) as c:
        stale = await c.get("https://index.crates.io/an/yh/anyhow")

    assert result.returncode == 0, result.stderr
    assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
    assert stale.headers["warning"].startswith("110 ")
    assert "serving stale index/crates-io/anyhow: every upstream failed (secondary: connection failed" in proxy.log()


async def test_misses_are_remembered(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)], negative_ttl=60)
    async with client(proxy) as c:
        answers = [await c.get(f"https://index.crates.io/{path}")
                   for path in ("no/-s/no-such-crate", "no/_s/no_such_crate") * 3]

    assert [a.status_code for a in answers] == [404] * 6
    assert collections.Counter(secondary.paths()) == {"/index/no/-s/no-such-crate": 1, "/index/no/_s/no_such_crate": 1}


def test_cargo_multiplexes_over_http2_through_the_proxy(secondary, entry, start_proxy, new_cargo, small_project):
    proxy = start_proxy([entry(secondary)])
    assert new_cargo(proxy).fetch(small_project).returncode == 0
    lines = [line for line in proxy.log().splitlines() if " GET index.crates.io/" in line or " GET static." in line]
    assert lines and all(line.endswith(" HTTP/2.0") for line in lines)


async def test_a_stuck_download_does_not_delay_other_clients_hits(secondary, entry, start_proxy):
    proxy = start_proxy([entry(secondary)])
    async with client(proxy) as warm:
        assert (await warm.get("https://static.crates.io/crates/anyhow/1.0.69/download")).status_code == 200
        assert (await warm.get("https://index.crates.io/3/l/log")).status_code == 200
    secondary.delay = 3.0

    async with client(proxy) as stuck_client, client(proxy) as hit_client:
        stuck = asyncio.create_task(stuck_client.get("https://static.crates.io/crates/log/0.4.17/download"))
        await asyncio.sleep(0.3)
        hit = await hit_client.get("https://static.crates.io/crates/anyhow/1.0.69/download")
        stuck_was_pending = not stuck.done()
        slow = await stuck

    assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
    assert stuck_was_pending
    assert slow.status_code == 200 and slow.headers["x-cache"] == "MISS"


def test_eight_cold_cargo_runs_on_two_workers_cause_one_upstream_request_per_object(
    registry, secondary, entry, start_proxy, new_cargo, tmp_path
):
    cache = tmp_path / "shared-cache"
    workers = [start_proxy([entry(secondary)], cache_dir=cache) for _ in range(2)]
    runs = []
    for i in range(8):
        project = make_project(tmp_path / f"project-{i}", FULL_DEPENDENCIES)
        cargo = new_cargo(workers[i % 2])
        runs.append((project, cargo))

    lock = [subprocess.Popen([cargo_binary(), "generate-lockfile"], cwd=p, env=c.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for p, c in runs]
    assert [p.wait(180) for p in lock] == [0] * 8, [p.stderr.read() for p in lock]
    fetch = [subprocess.Popen([cargo_binary(), "fetch"], cwd=p, env=c.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for p, c in runs]
    assert [p.wait(180) for p in fetch] == [0] * 8, [p.stderr.read() for p in fetch]

    counts = collections.Counter(secondary.paths())
    assert set(counts.values()) == {1}, {p: n for p, n in counts.items() if n > 1}
    locked = locked_packages(runs[0][0])
    assert len([p for p in counts if p.startswith("/crates/")]) == len(locked) >= 40


def test_an_unreachable_upstream_is_skipped_after_repeated_timeouts(
    secondary, entry, start_proxy, new_cargo, full_project
):
    with SilentServer() as silent:
        proxy = start_proxy(
            [{"name": "silent", "url": silent.url, "priority": 1, "timeout_ms": 500}, entry(secondary, priority=2)],
            upstream_backoff=30, backoff_after=2,
        )
        result = new_cargo(proxy).fetch(full_project)

    assert result.returncode == 0, result.stderr
    log = proxy.log()
    objects = len(index_paths(secondary)) + len(locked_packages(full_project))
    paid_timeout = log.count("upstream silent failed: timed out")
    assert "upstream silent: 2 consecutive failures" in log and "skipping it for 30 s" in log
    assert paid_timeout < objects / 2, (paid_timeout, objects)


def test_expired_dependencies_are_revalidated_ahead_of_cargo(secondary, entry, start_proxy, new_cargo, full_project):
    proxy = start_proxy([entry(secondary)], index_ttl=5)
    assert new_cargo(proxy).fetch(full_project).returncode == 0
    time.sleep(5.5)  # every index file is past its TTL now
    first_round = len(secondary.requests)
    (full_project / "Cargo.lock").unlink()

    again = new_cargo(proxy).fetch(full_project)

    assert again.returncode == 0, again.stderr
    log = proxy.log()
    # Cargo's first request, for the expired config.json, started the revalidation of every index file in use.
    ahead = re.findall(r"revalidated (\d+) index files ahead of Cargo \(in use, with crates-io's config.json\): "
                       r"(\d+) unchanged", log)
    assert len(ahead) == 1 and int(ahead[0][0]) >= 10 and ahead[0][0] == ahead[0][1], log
    revalidated = {r.path.removeprefix("/index/") for r in secondary.requests[first_round:]
                   if r.path.startswith("/index/") and "if-none-match" in r.headers}
    # Cargo asked for them only after they had been confirmed upstream: its requests are hits, not revalidations.
    hits = set(re.findall(r"GET index\.crates\.io/(\S+) 200 cache hit", log.split("GET index.crates.io/config.json")[-1]))
    assert len(revalidated & hits) >= 10, (revalidated, hits)
