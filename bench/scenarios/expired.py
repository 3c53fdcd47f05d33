"""Scenario 9: warm cache with every index file past its TTL, `cargo generate-lockfile && cargo fetch`.

Three configurations against the same nginx, timed in turn within each repetition (the order rotates):
- plain mitmdump, map_remote to nginx (no addon);
- cargo-cache on a filled cache with `index_ttl: 300` (every index file fresh: no upstream request);
- cargo-cache on a filled cache with `index_ttl: 5`, each run starting more than 5 s after its previous one
  ended (every index file and config.json expired: each is revalidated with a conditional request before it
  is served, or ahead of Cargo's request for it; the .crate files are immutable hits).
nginx logs the conditional requests it answers (bench.upstream), so the figures prove the revalidations
happened. After the timed runs, py-spy profiles a few more runs of each cargo-cache configuration.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .. import cargo
from ..context import Bench
from ..profile import FUNCTIONS, RATE, Profile, Spy, ms_per_request, tables
from ..report import Check, Section
from ..rss import CLK_TCK, cpu_seconds
from .cargo_fetch import PACKAGES, _describe, _rotate, _states, _timed

PLAIN = "plain mitmdump (map_remote)"
FRESH = "cargo-cache, warm, index files fresh (index_ttl 300)"
EXPIRED = "cargo-cache, warm, every index file expired (index_ttl 5, 5 s after the last run)"
FRESH_TTL = 300
EXPIRED_TTL = 5  # longer than a run takes, so that what a run revalidated stays fresh until it ends
PROFILE_RUNS = 3
REVALIDATIONS = "304s from nginx"
OFF_LOOP = "mitmdump CPU outside the event-loop thread"
EXTRA_FUNCTIONS = [
    ("Cargo._fetch_index (the revalidation: conditional request, 304, recording it)",
     "Cargo._fetch_index (cratecache/protocols/cargo.py)"),
    ("Engine.touch (recording the 304; the store write is handed to a worker thread)",
     "Engine.touch (cratecache/engine/core.py)"),
    ("LocalStore.mark_checked (in the worker thread: one SQLite write)",
     "LocalStore.mark_checked (cratecache/storage/local.py)"),
    ("Cargo._fetch_config (config.json: its upstream's fetched whole, unconditionally)",
     "Cargo._fetch_config (cratecache/protocols/cargo.py)"),
]
THREAD_ROWS = [
    ("asyncio's worker threads (anything run with asyncio.to_thread)", "_worker (concurrent/futures/thread.py)"),
    ("LocalStore.mark_checked (recording a 304)", "LocalStore.mark_checked (cratecache/storage/local.py)"),
    ("diskcache (any call)", "(diskcache/"),
    ("the event loop's own thread (mitmproxy, the addon, httpx)", "run_forever (asyncio/base_events.py)"),
]
_LOGGED = re.compile(r"^\[(\d\d):(\d\d):(\d\d\.\d+)\] \S+ (?:GET|HEAD) \S+ \d{3} \S+ (\w+) \d+B (\d+)ms ", re.M)


def aged(run, ttl: int = EXPIRED_TTL):
    """`run`, each call starting only once `ttl` (and half a second) has passed since the previous call ended:
    every index file the previous run confirmed is past its TTL again, as after a CI fleet's idle spell. The first
    call waits as long after this one (make it right after filling the cache)."""
    ended = [time.monotonic()]

    def call():
        time.sleep(max(0.0, ended[0] + ttl + 0.5 - time.monotonic()))
        try:
            return run()
        finally:
            ended[0] = time.monotonic()
    return call


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (mitmdump's event loop) alone."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def logged(log: str) -> list[tuple[float, str, int]]:
    """(seconds of the day the answer went out, state, ms from request to answer) of each request the addon logged."""
    return [(int(h) * 3600 + int(m) * 60 + float(sec), state, int(ms))
            for h, m, sec, state, ms in _LOGGED.findall(log)]


def percentiles(values: list[int]) -> str:
    values = sorted(values)
    if not values:
        return "none"
    return f"p50 {values[len(values) // 2]} ms, p90 {values[int(len(values) * 0.9)]} ms, max {values[-1]} ms"


def repetitions(bench: Bench) -> int:
    """A 5 % target needs more samples than the other scenarios: twice the usual repetitions."""
    return 2 * bench.repeat


def _method(bench: Bench, reps: int, addon_note: str) -> str:
    runs = 1 if bench.quick else PROFILE_RUNS
    return f"""
The project of scenarios 1 and 2 (`Cargo.lock` holding all {PACKAGES} crates); each timed run is `cargo
generate-lockfile && cargo fetch` in a fresh copy of the project with a fresh `CARGO_HOME` on tmpfs, configured only
with `HTTPS_PROXY` and `CARGO_HTTP_CAINFO`. Three configurations against the same nginx: plain mitmdump
(map_remote); cargo-cache with `index_ttl: {FRESH_TTL}` on a cache filled by one untimed run (every index file
fresh, so no request goes upstream: scenario 1's case); and cargo-cache with `index_ttl: {EXPIRED_TTL}` on a cache
filled the same way, each of its runs starting more than {EXPIRED_TTL} s after its previous run ended (so every index
file is past its TTL when the run starts, and each is revalidated upstream with a conditional request,
If-None-Match and If-Modified-Since, before it is served, or ahead of Cargo's request for it
(`cache.revalidate_ahead`: all of the files in use while the expired config.json, Cargo's first request, is fetched
again from the upstream, or the dependencies of an expired file Cargo asks for); the `.crate` files are immutable
and stay hits; a run takes less than the TTL, so nothing is revalidated twice). The two cargo-cache proxies have their own
cache folders; both stay running through the runs, as plain mitmdump does, and every configuration gets one untimed
run first. nginx logs every conditional request it
answers, which gives the 304 count per run (the proof that the proxy really revalidated). {reps} repetitions
(twice the usual: the target is a 5 % difference); the order rotates between repetitions. Afterwards, py-spy
({RATE} samples/s) records {runs} more run{'s' if runs != 1 else ''} of each cargo-cache proxy with `--gil`, and {runs} more
expired run{'s' if runs != 1 else ''} without it (every running thread).{addon_note}"""


def _profiled(bench: Bench, proxy, run, runs: int, gil: bool = True) -> tuple[Profile, float]:
    spy = Spy(proxy.pid, bench.work / "logs" / f"{proxy.label}{'' if gil else '-all-threads'}.pyspy.txt", gil)
    before = cpu_seconds(proxy.pid)
    try:
        for _ in range(runs):
            run()
    finally:
        profile = spy.stop()
    return profile, cpu_seconds(proxy.pid) - before


def run(bench: Bench) -> Section:
    reps = repetitions(bench)
    addon_note = f" The addon measured is the copy of `{bench.addon_source}`." if bench.addon_source else ""
    section = Section("expired", "9. Warm cache, every index file past its TTL: cargo generate-lockfile && cargo fetch",
                      _method(bench, reps, addon_note))
    template = cargo.project_template(bench.scratch / "template")
    work = bench.scratch / "cargo-run"
    fresh = bench.addon("expired-fresh", bench.fresh_dir("caches", "expired-fresh"), index_ttl=FRESH_TTL).start()
    expired = bench.addon("expired-expired", bench.fresh_dir("caches", "expired-expired"),
                            index_ttl=EXPIRED_TTL).start()
    plain = bench.plain("expired-plain").start()
    proxies = {PLAIN: plain, FRESH: fresh, EXPIRED: expired}
    runs = {name: (lambda p=proxy: cargo.fetch(template, work, PACKAGES, proxy_url=p.url, ca=p.ca_cert))
            for name, proxy in proxies.items()}
    states: dict[str, dict[str, int]] = {FRESH: {}, EXPIRED: {}}
    try:
        for run_ in runs.values():  # fills both caches; warms nginx, the proxies and the page cache
            run_()
        runs[EXPIRED] = aged(runs[EXPIRED])
        starts = {name: len(p.log()) for name, p in proxies.items()}
        for rep in range(reps):
            for name in _rotate(list(runs), rep):
                asked = bench.nginx.conditional()
                loop_cpu = main_thread_cpu(proxies[name].pid)
                total_cpu = cpu_seconds(proxies[name].pid)
                _timed(section, name, runs[name], proxies[name])
                section.figure(name, OFF_LOOP, "s").samples.append(max(
                    0.0, cpu_seconds(proxies[name].pid) - total_cpu - (main_thread_cpu(proxies[name].pid) - loop_cpu)))
                after = bench.nginx.conditional()
                section.figure(name, REVALIDATIONS, "count").samples.append(after.get("304", 0) - asked.get("304", 0))
                section.figure(name, "other conditional answers from nginx", "count").samples.append(
                    sum(after.values()) - after.get("304", 0) - (sum(asked.values()) - asked.get("304", 0)))
        for name in (FRESH, EXPIRED):
            states[name] = _states(proxies[name].log()[starts[name]:])
        timing = {name: logged(proxies[name].log()[starts[name]:]) for name in (FRESH, EXPIRED)}
        n = 1 if bench.quick else PROFILE_RUNS
        profiles = {name: _profiled(bench, proxies[name], runs[name], n) for name in (EXPIRED, FRESH)}
        profiles["all threads"] = _profiled(bench, expired, runs[EXPIRED], n, gil=False)
    finally:
        for proxy in proxies.values():
            bench.stop(proxy)
    _report(section, states, timing, profiles, reps, 1 if bench.quick else PROFILE_RUNS)
    return section


def _report(section: Section, states: dict, timing: dict, profiles: dict, reps: int, profile_runs: int) -> None:
    def fig(config: str, what: str = "wall time", unit: str = "s"):
        return section.figure(config, what, unit)

    wall = {c: fig(c) for c in (PLAIN, FRESH, EXPIRED)}
    cpu = {c: fig(c, "mitmdump CPU").median for c in (PLAIN, FRESH, EXPIRED)}
    asked = sum(states[EXPIRED].values()) / reps  # Cargo's requests per run
    # Every request but the .crate downloads and config.json (whose upstream copy is fetched whole): the index files.
    expected = asked - PACKAGES - 1
    revalidated = states[EXPIRED].get("revalidated", 0) / reps
    section.checks += [
        Check("every index file expired vs fresh", wall[EXPIRED], wall[FRESH], 1.05),
        Check("every index file expired vs plain mitmdump", wall[EXPIRED], wall[PLAIN], 1.0),
        Check("index files expired: 304s from nginx per run (one per index file Cargo asked for)",
              fig(EXPIRED, REVALIDATIONS, "count"), None, expected, higher_is_better=True),
        Check("index files fresh: conditional requests to nginx per run", fig(FRESH, REVALIDATIONS, "count"), None, 0),
    ]
    extra_ms = (cpu[EXPIRED] - cpu[FRESH]) * 1000 / max(1.0, revalidated)
    off_loop = {c: fig(c, OFF_LOOP).median for c in (FRESH, EXPIRED)}
    waits = {c: fig(c, "event-loop thread waits", "count").median for c in (FRESH, EXPIRED)}
    section.notes += [
        f"Answers of cargo-cache during the timed runs: index files fresh: {_describe(states[FRESH])}; every index "
        f"file expired: {_describe(states[EXPIRED])} (per run: {asked:.0f} requests from Cargo, {revalidated:.0f} "
        "revalidated upstream).",
        f"Expired costs {wall[EXPIRED].median - wall[FRESH].median:+.2f} s of wall time per run against fresh and "
        f"{cpu[EXPIRED] - cpu[FRESH]:+.2f} s of mitmdump's CPU ({extra_ms:.2f} ms per revalidation); plain mitmdump "
        f"uses {cpu[PLAIN]:.2f} s of CPU per run (cargo-cache: {cpu[FRESH]:.2f} s fresh, {cpu[EXPIRED]:.2f} s "
        f"expired). Of cargo-cache's CPU, {off_loop[FRESH]:.2f} s (fresh) and {off_loop[EXPIRED]:.2f} s (expired) ran "
        "outside the event-loop thread (asyncio's worker threads: the store's SQLite writes recording each 304), and "
        f"the event-loop thread blocked {waits[FRESH]:.0f} and {waits[EXPIRED]:.0f} times per run (voluntary context "
        "switches: waiting for the GIL, mostly, while a worker thread holds it).",
        "Time cargo-cache logged per request (request in to answer out, while Cargo keeps many requests in flight): "
        + "; ".join(f"{label} {percentiles([ms for _, state, ms in timing[c] if state == want])}"
                    for label, c, want in (("revalidated index files:", EXPIRED, "revalidated"),
                                           ("hits, index files expired:", EXPIRED, "hit"),
                                           ("hits, index files fresh:", FRESH, "hit"))) + ".",
    ]
    expired_p, expired_cpu = profiles[EXPIRED]
    fresh_p, fresh_cpu = profiles[FRESH]
    all_p, all_cpu = profiles["all threads"]
    per_run = round(asked) or 1
    requests = per_run * profile_runs
    section.extra = "\n".join([
        f"### Profile: {profile_runs} run{'s' if profile_runs != 1 else ''} of each cargo-cache configuration under py-spy", "",
        f"\"expired\" and \"fresh\": samples of the thread holding the GIL (`--gil`), per request of Cargo ({per_run} "
        f"per run). Expired: {expired_p.total} samples = {expired_p.total / RATE:.2f} s against {expired_cpu:.2f} s "
        f"of CPU measured; fresh: {fresh_p.total} samples = {fresh_p.total / RATE:.2f} s against {fresh_cpu:.2f} s. "
        f"\"expired, all threads\": {profile_runs} more expired runs sampled without `--gil`, i.e. every thread that is "
        "running, also the worker threads inside SQLite (which releases the GIL), so its samples add up to more than "
        f"the CPU where threads overlap: {all_p.total} samples = {all_p.total / RATE:.2f} s against {all_cpu:.2f} s "
        "of CPU. The function table and the leaves are those of the first column. The raw stacks are in "
        "`BENCHMARKS.tmp/logs/expired-*.pyspy.txt`.", "",
        tables([("expired", expired_p, requests), ("fresh", fresh_p, requests),
                ("expired, all threads", all_p, requests)], "request", FUNCTIONS + EXTRA_FUNCTIONS),
        "", "| expired, all threads: samples passing through (inclusive) | per request |", "| --- | --- |",
        *(f"| {name} | {ms_per_request(n, requests):.3f} ms ({n / max(1, all_p.total):.0%}) |"
          for name, n in ((label, all_p.inclusive(needle)) for label, needle in THREAD_ROWS)),
    ])
