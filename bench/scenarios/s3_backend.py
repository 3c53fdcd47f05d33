"""Scenario 7: warm `cargo generate-lockfile && cargo fetch` through a gateway on the s3 backend, beside the disk backend.

The bucket is SeaweedFS (`weed mini` on loopback, tests/fixtures/seaweed.py), its data on disk like the disk
backend's cache. One untimed run through a filler gateway (s3 backend, nginx upstream) fills the bucket; one
through a disk-backend proxy fills a disk cache. Every proxy timed afterwards lists the same single upstream,
under the same name, at a closed port on 127.0.0.1, so nothing it serves can come from nginx. Four cases, timed
in turn within each repetition (the order rotates), the same workload as scenario 1:
- disk backend, warm cache: one long-running proxy that had one untimed run (scenario 1's cargo-cache);
- disk backend, warm cache, new proxy: a process started before each timed run on that cache (memory empty),
  the control for what a new process costs;
- s3 backend, bucket warm, local tier cold: a gateway started before each timed run on an empty local-tier
  folder, so every object comes from the bucket;
- s3 backend, bucket and local tier warm: one long-running gateway that had one untimed run.
Each timed run also reads the proxy's /metrics before and after it: calls to the bucket, upstream attempts.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.harness import free_port

from .. import cargo
from ..context import UPSTREAM_NAME, Bench
from ..procs import Mitmdump, track_stopper, untrack_stopper
from ..report import Check, Section
from .cargo_fetch import PACKAGES, _describe, _rotate, _states, _timed

TITLE = "7. Warm cache through a gateway on the s3 backend, local tier cold and warm, beside the disk backend"
DISK_WARM = "disk backend, warm cache"
DISK_NEW = "disk backend, warm cache, new proxy each run"
TIER_COLD = "s3 backend, bucket warm, local tier cold (new gateway each run)"
TIER_WARM = "s3 backend, bucket warm, local tier warm"
PREFIX = "bench"
BUCKET_CALLS, UPSTREAM_CALLS = "bucket requests", "upstream attempts"


@dataclass
class _Case:
    name: str
    make: Callable[[], Mitmdump]  # the proxy, not started
    new_each_run: bool  # else one proxy for all runs, warmed by an untimed run
    proxy: Mitmdump | None = None
    states: Counter = field(default_factory=Counter)  # cargo-cache's answers during the timed runs
    request_ms: list[int] = field(default_factory=list)  # per request, as logged


def run(bench: Bench) -> Section:
    section = Section("s3", TITLE, _method(bench))
    template = cargo.project_template(bench.scratch / "template")
    work = bench.scratch / "cargo-run"

    def fetch(proxy: Mitmdump) -> float:
        return cargo.fetch(template, work, PACKAGES, proxy_url=proxy.url, ca=proxy.ca_cert)

    with _seaweed(bench) as seaweed:
        s3 = {"backend": "s3", "s3": seaweed.yaml(PREFIX)}
        disk = bench.fresh_dir("caches", "s3-disk")
        _fill(bench, fetch, bench.addon("s3-fill-disk", disk))
        filled = _fill(bench, fetch, bench.addon("s3-fill-bucket", bench.fresh_dir("caches", "s3-fill"), **s3))
        section.notes.append(f"Filling the bucket took the filler gateway {filled[BUCKET_CALLS]:.0f} bucket requests "
                             f"and {filled[UPSTREAM_CALLS]:.0f} upstream requests; none was left to upload.")
        closed = [{"name": UPSTREAM_NAME, "url": f"http://127.0.0.1:{free_port()}/index/"}]
        cases = [
            _Case(DISK_WARM, lambda: bench.addon("s3-disk-warm", disk, closed), False),
            _Case(DISK_NEW, lambda: bench.addon("s3-disk-new", disk, closed), True),
            _Case(TIER_COLD, lambda: bench.addon("s3-tier-cold", bench.fresh_dir("caches", "s3-tier-cold"), closed,
                                                 **s3), True),
            _Case(TIER_WARM, lambda: bench.addon("s3-tier-warm", bench.fresh_dir("caches", "s3-tier-warm"), closed,
                                                 **s3), False),
        ]
        try:
            for case in cases:
                if not case.new_each_run:
                    case.proxy = case.make().start()
                    fetch(case.proxy)  # untimed: memory, connections; the s3 gateway's local tier from the bucket
            for rep in range(bench.repeat):
                for case in _rotate(cases, rep):
                    _measure(bench, section, case, fetch)
        finally:
            for case in cases:
                if case.proxy is not None:
                    bench.stop(case.proxy)
    _report(section, cases)
    return section


@contextmanager
def _seaweed(bench: Bench) -> Iterator:
    """A SeaweedFS server with an empty bucket, stopped on every path (also by `stop_all`)."""
    from tests.fixtures.seaweed import SeaweedFS  # imports cratecache: only once setup put the snapshot on sys.path

    server = SeaweedFS(bench.fresh_dir("caches", "seaweedfs"))
    server.log_path = bench.log_path("seaweedfs")
    track_stopper(server.stop)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        untrack_stopper(server.stop)


def _fill(bench: Bench, fetch: Callable[[Mitmdump], float], proxy: Mitmdump) -> dict[str, float]:
    """One run through `proxy` (nginx upstream), checked to have stored everything; its /metrics counts."""
    proxy.start()
    try:
        fetch(proxy)
        counts = _counts(proxy)
    finally:
        bench.stop(proxy)
    if counts["pending"] or counts["bucket errors"]:
        raise RuntimeError(f"filling through {proxy.label} left the bucket incomplete: {counts}")
    return counts


def _measure(bench: Bench, section: Section, case: _Case, fetch: Callable[[Mitmdump], float]) -> None:
    proxy = case.proxy or case.make().start()
    try:
        before, log_start = _counts(proxy), len(proxy.log())
        _timed(section, case.name, lambda: fetch(proxy), proxy)
        after, log = _counts(proxy), proxy.log()[log_start:]
    finally:
        if case.new_each_run:
            bench.stop(proxy)
    for what in (BUCKET_CALLS, UPSTREAM_CALLS):
        section.figure(case.name, what, "count").samples.append(after[what] - before[what])
    if calls := after[BUCKET_CALLS] - before[BUCKET_CALLS]:
        seconds = after["bucket seconds"] - before["bucket seconds"]
        section.figure(case.name, "mean bucket request", "ms").samples.append(seconds * 1000 / calls)
    if after["bucket errors"] > before["bucket errors"]:
        bench.problems[f"{proxy.label}: failed bucket requests during a timed run"] += 1
    case.states.update(_states(log))
    case.request_ms += [int(ms) for ms in _REQUEST_MS.findall(log)]


_SAMPLE = re.compile(r"^(cargo_cache_\w+)(?:\{([^}]*)\})? (\S+)$", re.M)
_REQUEST_MS = re.compile(r" (?:GET|HEAD) \S+ \d{3} \S+ \w+ \d+B (\d+)ms ")


def _counts(proxy: Mitmdump) -> dict[str, float]:
    """From the proxy's /metrics: bucket requests (failed ones, their total time), upstream attempts, entries
    waiting for upload."""
    counts = dict.fromkeys((BUCKET_CALLS, "bucket errors", "bucket seconds", UPSTREAM_CALLS, "pending"), 0.0)
    for name, labels, value in _SAMPLE.findall(_scrape(proxy)):
        if name == "cargo_cache_storage_requests_total":
            counts[BUCKET_CALLS] += float(value)
            counts["bucket errors"] += float(value) if 'outcome="error"' in labels else 0.0
        elif name == "cargo_cache_storage_duration_seconds_sum":
            counts["bucket seconds"] += float(value)
        elif name == "cargo_cache_upstream_requests_total":
            counts[UPSTREAM_CALLS] += float(value)
        elif name == "cargo_cache_storage_pending":
            counts["pending"] = float(value)
    return counts


def _scrape(proxy: Mitmdump, timeout: float = 15) -> str:
    """The proxy's /metrics; its status page starts listening shortly after the proxy does."""
    port = next(a.split("=", 1)[1] for a in proxy.args if a.startswith("cargo_status_port="))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                return response.read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _method(bench: Bench) -> str:
    return (f"The workload of scenario 1 (all {PACKAGES} crates, `cargo generate-lockfile && cargo fetch` in a fresh "
            "project copy with a fresh `CARGO_HOME` on tmpfs, only `HTTPS_PROXY` and `CARGO_HTTP_CAINFO` set), "
            "through cargo-cache on its two storage backends. The bucket is SeaweedFS (`weed mini`, one process on "
            "loopback, its data on the VM's disk like the disk cache and the local tiers), filled by one untimed run "
            "through another gateway with nginx as its upstream; a disk cache is filled the same way. Every proxy "
            "timed afterwards lists its one upstream at a closed port, so what it serves comes from its cache, its "
            "local tier or the bucket, never from nginx. Each proxy's `/metrics`, read before and after each timed "
            "run, counts its upstream attempts (none: nginx was not asked) and its bucket requests; the mean bucket "
            "request is their total time over their number, with Cargo keeping many requests in flight. Cases: "
            "*disk backend, warm cache* is scenario 1's long-running proxy after one untimed run; *disk backend, "
            "new proxy* starts a process on that cache before each timed run (its memory tier empty), the control "
            "for what a new process costs; *local tier cold* starts a gateway on an empty local-tier folder before "
            "each timed run, so every object comes from the bucket (a request for the meta, one for the blob) and is "
            "copied into the tier; *local tier warm* is one long-running gateway after one untimed run, as a repeat "
            f"run on the same gateway. Starting a proxy is never timed. {bench.reps}; the order of the four cases "
            "rotates between repetitions.")


def _report(section: Section, cases: list[_Case]) -> None:
    wall = {case.name: section.figure(case.name, "wall time", "s") for case in cases}
    section.checks += [Check(f"{name} vs disk backend, warm cache", wall[name], wall[DISK_WARM], None)
                       for name in (TIER_COLD, TIER_WARM)]
    section.notes.append(f"Against the disk backend with a new proxy each run: local tier cold "
                         f"{wall[TIER_COLD].median / wall[DISK_NEW].median:.2f}×, and that new disk proxy against the "
                         f"long-running one {wall[DISK_NEW].median / wall[DISK_WARM].median:.2f}×.")
    for case in cases:
        ms = sorted(case.request_ms)
        latency = (f"; per request as logged (request in to answer out, Cargo keeping many in flight): p50 "
                   f"{ms[len(ms) // 2]} ms, p90 {ms[int(len(ms) * 0.9)]} ms, max {ms[-1]} ms" if ms else "")
        section.notes.append(f"{case.name}: answers during the timed runs: {_describe(dict(case.states))}{latency}.")
