"""Scenario 3: N = 1, 8, 64 concurrent HTTP/2 clients fetching cached index files and crates.

cargo-cache answers from its cache; plain mitmdump forwards the same requests to nginx (map_remote).
"""

from __future__ import annotations

from ..context import Bench
from ..report import Check, Section

ADDON, PLAIN = "cargo-cache (hits)", "plain mitmdump → nginx"
LRS = "cargo-cache, eviction_policy: least-recently-stored"


def requests_for(bench: Bench, clients: int) -> int:
    full = {1: 500, 8: 2000, 64: 2560}
    return full[clients] // (4 if bench.quick else 1)


def run(bench: Bench) -> Section:
    counts = {n: requests_for(bench, n) for n in (1, 8, 64)}
    section = Section("hits", "3. Cache hits: concurrent HTTP/2 clients", f"""
The {len(bench.real_crates)} index files and {len(bench.real_crates)} `.crate` files of the registry (9.7 MB,
median file 6 KB, largest 1.2 MB), requested in a shuffled cycle by N clients, each with its own HTTP/2
connections through the proxy (httpx in a separate process; each client first makes one untimed request per host,
then all start together; closed loop, one request in flight per client). Requests per run:
{", ".join(f"{counts[n]} for N = {n}" for n in counts)}. Every answer is checked (200 and the exact size).
cargo-cache's cache is filled first, so every timed request is a hit; plain mitmdump forwards each request to nginx
over HTTP/1.1. {bench.reps}, the proxies taking turns in a rotating order. The third configuration
is cargo-cache with `eviction_policy: least-recently-stored` instead of the default `least-recently-used`
(diskcache then needs no SQLite write to record each hit); it is shown for comparison, without a target. "CPU per request" is the user + system time
the mitmdump process used during the run, divided by the requests: it does not depend on how busy the load
generator keeps the second core.""")
    addon = bench.addon("hits-addon", bench.fresh_dir("caches", "hits")).start()
    plain = bench.plain("hits-plain").start()
    lrs = bench.addon("hits-addon-lrs", bench.fresh_dir("caches", "hits-lrs"),
                      eviction_policy="least-recently-stored").start()
    proxies = [(ADDON, addon), (PLAIN, plain), (LRS, lrs)]
    try:
        bench.prime(addon, bench.hit_urls)
        bench.prime(lrs, bench.hit_urls)
        for _, proxy in proxies:  # warm all (connections to nginx, code paths)
            bench.load(proxy, bench.hit_urls, 8, 400)
        x_cache: dict[str, int] = {}
        for clients, count in counts.items():
            for rep in range(bench.repeat):
                for name, proxy in proxies[rep % 3:] + proxies[:rep % 3]:
                    result = bench.load(proxy, bench.hit_urls, clients, count)
                    config = f"N={clients}: {name}"
                    section.figure(config, "throughput", "req/s").samples.append(result["rps"])
                    section.figure(config, "p50 latency", "ms").samples.append(result["p50_ms"])
                    section.figure(config, "p99 latency", "ms").samples.append(result["p99_ms"])
                    section.figure(config, "mitmdump CPU per request", "ms").samples.append(result["proxy_cpu_ms"])
                    if proxy is not plain:
                        for state, n in result["x_cache"].items():
                            x_cache[state] = x_cache.get(state, 0) + n
        section.notes.append("X-Cache of cargo-cache's timed answers: "
                             + ", ".join(f"{n} {s}" for s, n in x_cache.items()) + ".")
    finally:
        for _, proxy in proxies:
            bench.stop(proxy)
    for clients in counts:
        section.checks.append(Check(f"N={clients}: throughput vs plain mitmdump",
                                    section.figure(f"N={clients}: {ADDON}", "throughput", "req/s"),
                                    section.figure(f"N={clients}: {PLAIN}", "throughput", "req/s"), 1.0,
                                    higher_is_better=True))
    return section
