"""Scenario 4: cache hits while another client's download waits on a 5 s upstream.

The only upstream is the test suite's `UpstreamServer` with `delay = 5`. The cache is filled directly
through the addon's store: every index file and every crate except a few held back, plus the upstream's
config.json, so a held-back crate costs exactly one 5 s upstream request. One client keeps a download of
a held-back crate waiting on that upstream all through the timed hit load; the baseline is the same hit
load with no slow download, on the same proxy.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx

from tests.fixtures.registry import CrateFile
from tests.fixtures.upstream import UpstreamServer

from ..context import Bench, crate_url
from ..loadgen import client_context
from ..report import Check, Section

DELAY = 5.0
CLIENTS = 8
HELD_BACK = 8
QUIET, SLOW = "hits, no slow download", "hits while a download waits 5 s on the upstream"


class SlowClient:
    """Downloads held-back crates one after the other (each waits on the slow upstream) until stopped."""

    def __init__(self, proxy_url: str, ca, crates: list[CrateFile]):
        self.proxy_url, self.ca, self.crates = proxy_url, ca, crates
        self.done: list[tuple[int, float, bool]] = []  # status, seconds, size right
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(http2=True, proxy=self.proxy_url, verify=client_context(self.ca), timeout=60,
                          trust_env=False) as client:
            for crate in self.crates:
                if self._stop.is_set():
                    return
                began = time.perf_counter()
                try:
                    r = client.get(crate_url(crate))
                except httpx.HTTPError as e:
                    if not self._stop.is_set():
                        self.errors.append(f"{type(e).__name__}: {e}")
                    return
                self.done.append((r.status_code, time.perf_counter() - began, r.content == crate.data))

    def start(self) -> SlowClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No new download; wait for the pending one (so the proxy is never stopped with it in flight)."""
        self._stop.set()
        self._thread.join(DELAY * 3)


def _template(bench: Bench, upstream: UpstreamServer, held_back: set) -> object:
    from cratecache.storage.local import LocalStore as Store

    path = bench.fresh_dir("caches", "slow-template")
    store = Store(path, 50 * 2**30)
    for name, body in bench.registry.index_files.items():
        if name != bench.big.name:
            store.put(f"index/crates-io/{name}", body, "slow")
    for crate in bench.real_crates:
        if (crate.name, crate.version) not in held_back:
            store.put(f"crate/crates-io/{crate.name.lower()}/{crate.version}", crate.data, "slow")
    store.put("upstream-config/crates-io/slow", json.dumps({"dl": upstream.dl}).encode(), "slow")
    store.close()
    return path


def run(bench: Bench) -> Section:
    count = 3000 // (4 if bench.quick else 1)
    section = Section("slow", "4. Hits while another download waits on a slow upstream", f"""
{CLIENTS} HTTP/2 clients make {count} cache hits (index files and crates, as in scenario 3) through cargo-cache,
once with no other traffic and once while one more client's download of an uncached crate waits on an upstream
that answers after {DELAY:.0f} s (the test suite's `UpstreamServer` with `delay = {DELAY:.0f}`; it is the only
upstream, `timeout_ms: 30000`). The slow client starts first and keeps one such download pending until the hit
load has finished. Fresh copy of the same cache and a fresh proxy in each of {bench.reps}; the
order of the two runs alternates.""")
    held = sorted(bench.real_crates, key=lambda c: len(c.data))[40:40 + HELD_BACK]
    held_keys = {(c.name, c.version) for c in held}
    hits = [c for c in bench.real_crates if (c.name, c.version) not in held_keys]
    urls = bench.urls_file("slow-hits", bench.hit_url_list(hits))
    slow_durations: list[float] = []
    upstream = UpstreamServer(bench.registry, name="slow")
    upstream.delay = DELAY
    upstream.start()
    try:
        template = _template(bench, upstream, held_keys)
        for rep in range(bench.repeat):
            cache = bench.work / "caches" / "slow"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(template, cache)
            addon = bench.addon("slow-addon", cache, [{"name": "slow", "url": upstream.url, "timeout_ms": 30000}])
            addon.start()
            try:
                bench.load(addon, urls, CLIENTS, 400)  # warm-up
                for which in ((QUIET, SLOW) if rep % 2 == 0 else (SLOW, QUIET)):
                    slow = None
                    if which == SLOW:
                        seen = len(upstream.requests)
                        slow = SlowClient(addon.url, addon.ca_cert, held).start()
                        deadline = time.monotonic() + 5
                        while len(upstream.requests) == seen and time.monotonic() < deadline:
                            time.sleep(0.01)  # until the download really waits on the upstream
                        if len(upstream.requests) == seen:
                            raise RuntimeError("the slow download never reached the upstream")
                    result = bench.load(addon, urls, CLIENTS, count)
                    if slow is not None:
                        pending = len(upstream.requests) - seen > len(slow.done)
                        slow.stop()
                        if not pending or slow.errors or len(slow.done) >= len(held):
                            raise RuntimeError(f"slow download not pending through the load: {slow.errors}")
                        for status, seconds, right in slow.done:
                            if status != 200 or not right:
                                raise RuntimeError(f"slow download answered {status}, bytes right: {right}")
                            slow_durations.append(seconds)
                    section.figure(which, "p50 latency", "ms").samples.append(result["p50_ms"])
                    section.figure(which, "p99 latency", "ms").samples.append(result["p99_ms"])
                    section.figure(which, "throughput", "req/s").samples.append(result["rps"])
                    section.figure(which, "seconds", "s").samples.append(result["seconds"])
            finally:
                bench.stop(addon)
    finally:
        upstream.stop()
    section.checks.append(Check("p99 of hits with a slow download pending vs without",
                                section.figure(SLOW, "p99 latency", "ms"), section.figure(QUIET, "p99 latency", "ms"),
                                1.2))
    if slow_durations:
        section.notes.append(f"{len(slow_durations)} slow downloads, each correct, took "
                             f"{min(slow_durations):.2f}–{max(slow_durations):.2f} s; one was pending when each "
                             "timed hit load ended (checked), and the proxy was stopped only after it completed.")
    return section
