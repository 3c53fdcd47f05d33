"""Profiles: py-spy on mitmdump under the scenario-3 hit load and during a cold `cargo fetch`,
each next to plain mitmdump doing the same work."""

from __future__ import annotations

from .. import cargo, loadgen
from ..context import Bench
from ..profile import RATE, Profile, Spy, ms_per_request, tables
from ..report import Section
from ..rss import cpu_seconds
from .cargo_fetch import PACKAGES

CLIENTS = 8
COLD_RUNS = 3


def _sum(a: tuple[Profile, int, float], b: tuple[Profile, int, float]) -> tuple[Profile, int, float]:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _profiled(bench: Bench, proxy, work) -> tuple[Profile, int, float]:
    """Run `work()` (returns the number of requests) under py-spy: (profile, requests, CPU seconds measured)."""
    spy = Spy(proxy.pid, bench.work / "logs" / f"{proxy.label}.pyspy.txt")
    before = cpu_seconds(proxy.pid)
    try:
        requests = work()
    finally:
        profile = spy.stop()
    return profile, requests, cpu_seconds(proxy.pid) - before


def _hit_load(bench: Bench, proxy, requests: int):
    def work() -> int:
        result = loadgen.run(proxy.url, proxy.ca_cert, bench.hit_urls, CLIENTS, requests, bench.work / "load.json")
        if result["errors"]:
            raise RuntimeError(f"errors under the profiler: {result['errors']}")
        return result["requests"] + CLIENTS * 2  # and the untimed warm-up requests
    return work


def _cold_fetch(bench: Bench, proxy):
    template = cargo.project_template(bench.scratch / "template")

    def work() -> int:
        cargo.fetch(template, bench.scratch / "cargo-run", PACKAGES, proxy_url=proxy.url, ca=proxy.ca_cert)
        return 2 * PACKAGES + 1  # config.json, an index file and a download per crate
    return work


def _note(label: str, profile: Profile, requests: int, cpu: float) -> str:
    return (f"{label}: {requests} requests; {profile.total} samples = {profile.total / RATE:.2f} s holding the GIL, "
            f"against {cpu:.2f} s of CPU measured for the process ({ms_per_request(profile.total, requests):.2f} vs "
            f"{cpu * 1000 / requests:.2f} ms per request).")


def run(bench: Bench) -> Section:
    requests = 4000 // (4 if bench.quick else 1)
    section = Section("profile", "Profile of the hit path (and of the cold path)", f"""
py-spy ({RATE} samples/s, `--gil`: only the thread holding the GIL; mitmdump is bound by the GIL, so the samples
add up to its CPU time, compared below) attached to mitmdump (a) while {CLIENTS} HTTP/2 clients make {requests}
requests over the registry's index files and crates: cache hits through cargo-cache, and for scale the same requests
through plain mitmdump to nginx; (b) during {1 if bench.quick else COLD_RUNS} cold `cargo generate-lockfile && cargo fetch`
runs of the {PACKAGES}-crate project (fresh proxies each time), through cargo-cache with an empty cache and through
plain mitmdump. Times are CPU milliseconds per request,
attributed to the frame nearest the leaf that belongs to each group, so the groups add up to the total; the
function tables are inclusive (a function and everything it calls). CPU used without the GIL (SQLite, hashing and
file I/O in the worker threads, and the kernel's side of thread hand-offs) is not in the tables: the notes give the
sampled time next to the CPU time measured for the process. The raw stacks are kept in
`BENCHMARKS.tmp/logs/*.pyspy.txt` (flamegraph.pl or speedscope read them).""")
    addon = bench.addon("profile-hits-addon", bench.fresh_dir("caches", "profile")).start()
    plain = bench.plain("profile-hits-plain").start()
    try:
        bench.prime(addon, bench.hit_urls)
        for proxy in (addon, plain):
            bench.load(proxy, bench.hit_urls, CLIENTS, 400)
        hits_addon = _profiled(bench, addon, _hit_load(bench, addon, requests))
        hits_plain = _profiled(bench, plain, _hit_load(bench, plain, requests))
    finally:
        bench.stop(addon)
        bench.stop(plain)
    cold_addon = cold_plain = (Profile(), 0, 0.0)
    for _ in range(1 if bench.quick else COLD_RUNS):  # more samples than one 2 s run gives
        addon = bench.addon("profile-cold-addon", bench.fresh_dir("caches", "profile-cold")).start()
        plain = bench.plain("profile-cold-plain").start()
        try:
            cold_addon = _sum(cold_addon, _profiled(bench, addon, _cold_fetch(bench, addon)))
            cold_plain = _sum(cold_plain, _profiled(bench, plain, _cold_fetch(bench, plain)))
        finally:
            bench.stop(addon)
            bench.stop(plain)
    section.extra = "\n".join([
        "### (a) Cache hits", "",
        tables([("cargo-cache", hits_addon[0], hits_addon[1]), ("plain mitmdump", hits_plain[0], hits_plain[1])],
               "request"),
        "", "### (b) Cold cache: `cargo generate-lockfile && cargo fetch`", "",
        tables([("cargo-cache", cold_addon[0], cold_addon[1]), ("plain mitmdump", cold_plain[0], cold_plain[1])],
               "request"),
    ])
    for label, (profile, n, cpu) in (("(a) cargo-cache", hits_addon), ("(a) plain mitmdump", hits_plain),
                                     ("(b) cargo-cache", cold_addon), ("(b) plain mitmdump", cold_plain)):
        section.notes.append(_note(label, profile, n, cpu))
    return section
