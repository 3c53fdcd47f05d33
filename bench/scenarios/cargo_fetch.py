"""Scenarios 1 and 2: `cargo generate-lockfile && cargo fetch` with a fresh CARGO_HOME, warm and cold cache.

Three ways to reach the same nginx upstream, timed in turn within each repetition (the order rotates
so that drift on the machine spreads over all of them):
- Cargo straight to nginx by source replacement (no proxy);
- plain mitmdump, map_remote from crates.io's hosts to nginx (no addon);
- mitmdump with the addon.
"""

from __future__ import annotations

import re

from .. import cargo
from ..context import Bench
from ..procs import Mitmdump
from ..report import Check, Section
from ..rss import context_switches, cpu_times

DIRECT, PLAIN, ADDON = "Cargo straight to nginx (source replacement)", "plain mitmdump (map_remote)", "cargo-cache"
PACKAGES = 114


def _timed(section: Section, name: str, run, proxy: Mitmdump | None) -> None:
    before = cpu_times(proxy.pid) if proxy else (0.0, 0.0)
    switches = context_switches(proxy.pid) if proxy else 0
    section.figure(name, "wall time", "s").samples.append(run())
    if proxy is not None:
        section.figure(name, "event-loop thread waits", "count").samples.append(context_switches(proxy.pid) - switches)
        user, system = (after - b for after, b in zip(cpu_times(proxy.pid), before))
        section.figure(name, "mitmdump CPU", "s").samples.append(user + system)
        section.figure(name, "of which system", "s").samples.append(system)


def _rotate(items: list, n: int) -> list:
    n %= len(items)
    return items[n:] + items[:n]


def _method(cold: bool, bench: Bench) -> str:
    cache = ("an empty cache folder and a freshly started proxy in every repetition (both mitmdumps are "
             "restarted, so neither has warm connections or certificates)" if cold else
             "the cache filled by one untimed run first; every configuration also gets one untimed run")
    return (f"A project whose `Cargo.lock` holds all {PACKAGES} crates of the registry; each timed run is "
            "`cargo generate-lockfile && cargo fetch` in a fresh copy of the project with a fresh `CARGO_HOME` "
            "(on tmpfs: unpacking the crates on this VM's disk costs 0.3–4 s of noise), configured only with "
            "`HTTPS_PROXY` and `CARGO_HTTP_CAINFO` for the proxies. Cargo speaks HTTP/2 to the proxies and "
            f"HTTP/1.1 to nginx. Cache: {cache}. {bench.reps}; the order of the three "
            "configurations rotates between repetitions.")


def _configurations(bench: Bench, template, work, plain, addon) -> tuple[dict, dict]:
    """The three ways of running the same `cargo generate-lockfile && cargo fetch`, and their proxies."""
    runs = {
        DIRECT: lambda: cargo.fetch(template, work, PACKAGES, direct_index_url=bench.nginx.index_url),
        PLAIN: lambda: cargo.fetch(template, work, PACKAGES, proxy_url=plain.url, ca=plain.ca_cert),
        ADDON: lambda: cargo.fetch(template, work, PACKAGES, proxy_url=addon.url, ca=addon.ca_cert),
    }
    return runs, {DIRECT: None, PLAIN: plain, ADDON: addon}


def warm(bench: Bench) -> Section:
    section = Section("warm", "1. Warm cache: cargo generate-lockfile && cargo fetch", _method(False, bench))
    template = cargo.project_template(bench.scratch / "template")
    work = bench.scratch / "cargo-run"
    addon = bench.addon("warm-addon", bench.fresh_dir("caches", "warm")).start()
    plain = bench.plain("warm-plain").start()
    try:
        runs, proxies = _configurations(bench, template, work, plain, addon)
        for run in runs.values():  # fills the cache; warms nginx, the proxies and the page cache
            run()
        addon_log_start = len(addon.log())
        for rep in range(bench.repeat):
            for name in _rotate(list(runs), rep):
                _timed(section, name, runs[name], proxies[name])
        states = _states(addon.log()[addon_log_start:])
        section.notes.append(f"Answers of cargo-cache during the timed runs: {_describe(states)}.")
    finally:
        bench.stop(addon)
        bench.stop(plain)
    _checks(section, 1.10)
    return section


def cold(bench: Bench) -> Section:
    section = Section("cold", "2. Cold cache: cargo generate-lockfile && cargo fetch", _method(True, bench))
    template = cargo.project_template(bench.scratch / "template")
    work = bench.scratch / "cargo-run"
    cargo.fetch(template, work, PACKAGES, direct_index_url=bench.nginx.index_url)  # page cache, nginx
    states, miss_ms = {}, []
    for rep in range(bench.repeat):
        addon = bench.addon("cold-addon", bench.fresh_dir("caches", "cold")).start()
        plain = bench.plain("cold-plain").start()
        try:
            runs, proxies = _configurations(bench, template, work, plain, addon)
            for name in _rotate(list(runs), rep):
                _timed(section, name, runs[name], proxies[name])
            for state, n in _states(addon.log()).items():
                states[state] = states.get(state, 0) + n
            miss_ms += [int(ms) for ms in _MISS_MS.findall(addon.log())]
        finally:
            bench.stop(addon)
            bench.stop(plain)
    section.notes.append(f"Answers of cargo-cache over all repetitions: {_describe(states)}.")
    if miss_ms:
        miss_ms.sort()
        section.notes.append(
            "Time cargo-cache logged per miss (request in to answer out, while Cargo keeps up to 100 requests in "
            f"flight): p50 {miss_ms[len(miss_ms) // 2]} ms, p90 {miss_ms[int(len(miss_ms) * 0.9)]} ms, "
            f"max {miss_ms[-1]} ms.")
    _checks(section, 1.15)  # issue 14 tightened it from 1.30
    return section


def _checks(section: Section, limit: float) -> None:
    addon, plain, direct = (section.figure(n, "wall time", "s") for n in (ADDON, PLAIN, DIRECT))
    section.checks.append(Check("cargo-cache vs plain mitmdump", addon, plain, limit))
    section.notes.append(f"For reference, cargo-cache vs Cargo straight to nginx: {addon.median / direct.median:.2f}×; "
                         f"plain mitmdump vs Cargo straight to nginx: {plain.median / direct.median:.2f}×.")
    addon_cpu, plain_cpu = (section.figure(n, "mitmdump CPU", "s") for n in (ADDON, PLAIN))
    section.notes.append(
        f"mitmdump is one Python process on one core: cargo-cache used {addon_cpu.median:.2f} s of CPU per run "
        f"against {plain_cpu.median:.2f} s for plain mitmdump ({addon_cpu.median / plain_cpu.median:.2f}×), "
        f"i.e. {addon_cpu.median / addon.median:.0%} and {plain_cpu.median / plain.median:.0%} of the wall time. "
        "\"Event-loop thread waits\" are the voluntary context switches of mitmdump's main thread during the run "
        "(it blocks only to wait, e.g. for the GIL while another thread holds it): cargo-cache runs each cache "
        "operation in asyncio's thread pool, while plain mitmdump runs everything on its event loop.")


_MISS_MS = re.compile(r" (?:GET|HEAD) \S+ 200 \S+ miss \d+B (\d+)ms ")
_STATE = re.compile(r" (?:GET|HEAD) \S+ \d{3} \S+ (\w+) \d+B ")


def _states(log: str) -> dict[str, int]:
    states: dict[str, int] = {}
    for match in _STATE.finditer(log):
        states[match.group(1)] = states.get(match.group(1), 0) + 1
    return states


def _describe(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(states.items(), key=lambda x: -x[1])) or "none logged"
