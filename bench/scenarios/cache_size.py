"""Scenario 6: hit latency with 100 000 index entries in the cache vs 1 000.

Both caches are filled directly through the addon's store (`Store.put`, stored now, so fresh under the
long `index_ttl`) with synthetic but well-formed index files, one per made-up crate name; then clients
request index files of names sampled from the whole cache.
"""

from __future__ import annotations

import json
import os
import random
import string
import time

from ..context import Bench, index_url
from ..report import Check, Section

CLIENTS = 8


def crate_names(count: int, seed: int) -> list[str]:
    rng, names = random.Random(seed), set()
    while len(names) < count:
        first = rng.choice(string.ascii_lowercase)
        rest = "".join(rng.choice(string.ascii_lowercase + string.digits + "-_") for _ in range(rng.randint(3, 18)))
        names.add((first + rest).rstrip("-_"))
    return sorted(names)


def index_body(name: str, rng: random.Random) -> bytes:
    lines = []
    for minor in range(rng.randint(1, 8)):
        lines.append(json.dumps({
            "name": name, "vers": f"0.{minor}.{rng.randint(0, 9)}",
            "deps": [{"name": "serde", "req": "^1", "features": [], "optional": False, "default_features": True,
                      "target": None, "kind": "normal", "registry": None}] * rng.randint(0, 3),
            "cksum": "%064x" % rng.getrandbits(256), "features": {}, "yanked": False, "links": None, "v": 1,
        }, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def fill(bench: Bench, label: str, count: int) -> tuple[object, list[str], float, list[int]]:
    """A cache folder with `count` fresh index entries: (path, names, seconds it took, body sizes)."""
    from cratecache.storage.local import LocalStore as Store

    path = bench.fresh_dir("caches", label)
    names, rng, sizes = crate_names(count, seed=count), random.Random(count), []
    began = time.perf_counter()
    store = Store(path, 50 * 2**30)
    for name in names:
        body = index_body(name, rng)
        sizes.append(len(body))
        store.put(f"index/crates-io/{name}", body, "nginx")
    store.close()
    os.sync()  # the fill's writes are flushed before any timed read, not during it
    return path, names, time.perf_counter() - began, sorted(sizes)


def read_through(path) -> None:
    """Read every file of a cache folder once, so that both caches start a timed run from the OS page cache.
    This VM's kernel pages out what has not been touched for about a minute (a DAMON `pageout` scheme), so without
    it a first read of the large cache waited for the virtual disk in some runs and not in others."""
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as f:
            while f.read(1 << 20):
                pass


def run(bench: Bench) -> Section:
    big_count = 10_000 if bench.quick else 100_000
    small_count = 1_000
    sample_size = 250 if bench.quick else 1000
    big_label, small_label = (f"{n:,} index entries".replace(",", " ") for n in (big_count, small_count))
    section = Section("cache-size", f"6. Hit latency with {big_label} in the cache vs {small_label}", f"""
Two caches filled directly through the addon's store (`Store.put`, as the addon stores an upstream's answer)
with {big_count} and {small_count} index files of made-up crate names (1–8 versions each), all fresh. In each
repetition, for each cache in turn, {sample_size} distinct names drawn from the whole cache (a new draw every
repetition; the 1 000-entry cache has only those) are requested once each, by one HTTP/2 client and then by
{CLIENTS} concurrent clients, each time from a freshly started proxy: so every timed request is a hit that the proxy
has not served before, read from the cache folder (SQLite) rather than from any in-memory copy. Then the one
client asks for the same names again ("repeat"), which the proxy may answer from memory. The check compares the
one-client first-read p50. Before each proxy starts, every file of its cache folder is read once, so that both
caches start from the OS page cache rather than from the virtual disk (this VM's kernel pages out what has not
been touched for a minute). {bench.reps}, the order of the caches alternating.""")
    big_dir, big_names, big_fill, sizes = fill(bench, "entries-big", big_count)
    small_dir, small_names, _, _ = fill(bench, "entries-small", small_count)
    section.notes.append(f"Filling {big_count} entries through `Store.put` took {big_fill:.1f} s; index files of "
                         f"{sizes[0]}–{sizes[-1]} bytes, median {sizes[len(sizes) // 2]}.")
    rng, x_cache = random.Random(6), {}
    caches = [(big_label, big_dir, big_names), (small_label, small_dir, small_names)]
    for rep in range(bench.repeat):
        for label, path, names in caches[:: 1 if rep % 2 == 0 else -1]:
            sample = rng.sample(names, min(sample_size, len(names)))
            urls = bench.urls_file("entries-sample", [(index_url(n), -1) for n in sample])
            for clients, repeat in ((1, True), (CLIENTS, False)):
                read_through(path)
                proxy = bench.addon(f"entries-{len(names)}", path).start()
                try:
                    runs = [("first read", clients)] + ([("repeat", 1)] if repeat else [])
                    for kind, n in runs:
                        result = bench.load(proxy, urls, n, len(sample))
                        config = f"{label}, {kind}, {n} client{'s' if n > 1 else ''}"
                        section.figure(config, "p50 latency", "ms").samples.append(result["p50_ms"])
                        section.figure(config, "p99 latency", "ms").samples.append(result["p99_ms"])
                        section.figure(config, "throughput", "req/s").samples.append(result["rps"])
                        section.figure(config, "mitmdump CPU per request", "ms").samples.append(
                            result["proxy_cpu_ms"])
                        for state, k in result["x_cache"].items():
                            x_cache[state] = x_cache.get(state, 0) + k
                finally:
                    bench.stop(proxy)
    section.figures.sort(key=lambda f: (f.config.split(",")[1], f.config.split(",")[2], f.config.split(",")[0]))
    section.notes.append("X-Cache of the timed answers: " + ", ".join(f"{k} {s}" for s, k in x_cache.items()) + ".")
    section.checks.append(Check(f"hit p50 (first read, 1 client) with {big_label} vs {small_label}",
                                section.figure(f"{big_label}, first read, 1 client", "p50 latency", "ms"),
                                section.figure(f"{small_label}, first read, 1 client", "p50 latency", "ms"), 1.10))
    return section
