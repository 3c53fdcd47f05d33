"""Scenario 12 (issue 33): a cache the size of crates.io beside a 1,000-entry one.

The large cache (`--scale N`, default 1,000,000 entries; 10,000 with `--quick`) and the 1,000-entry one are built by
`bench/scale.py` once and reused between runs (in `.cache/bench-scale/`, outside BENCHMARKS.tmp/). Measured, as
same-run ratios against the 1,000-entry cache or as bounds: proxy start to first answered hit and idle RSS (against
an empty cache), first-read hit latency with 1 and 8 clients, `stats`, `ls --json` (first line, peak RSS) and
`purge --older-than` of ~10 % of the entries while the proxy serves hits (the purged entries are written back
afterwards, untimed), and `verify` over each whole cache once (time, throughput, peak RSS). Eviction under a cold
fetch is section 13, `stage`/`export`/`import` of a 5,000-crate lockfile `--scenarios bundles-scale`.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

from .. import loadgen, scale
from ..context import Bench, index_url
from ..procs import Mitmdump
from ..report import Check, Section
from ..rss import disk_read_bytes, rss_mb

CLIENTS = 8
SMALL = 1_000
PURGE_SHARE = 0.10
SAMPLE = 5_000  # keys drawn from each cache for the hit runs (reservoir over its listing)


def run(bench: Bench) -> Section:
    big_n = bench.scale or (10_000 if bench.quick else 1_000_000)
    requests = 250 if bench.quick else 1_000
    big_label, small_label = f"{big_n:,} entries".replace(",", " "), f"{SMALL:,} entries".replace(",", " ")
    section = Section("scale", f"12. crates.io scale: {big_label} in the cache vs {small_label}", f"""
Two caches built by `bench/scale.py` through the store's own API (`LocalStore.put_entry`, 1,000 entries a
transaction) and reused between runs: {big_n} and {SMALL} entries, a fifth of them index files of made-up crates
(1–30 versions, lines sized like crates.io's), the rest small `.crate` files of their newest versions, stored over the
past year. In each of {bench.reps}, for each cache in turn (alternating), a freshly started proxy: the time from
starting mitmdump to its first answered hit, its RSS 2 s later (and that of a proxy over an empty cache), then
{requests} distinct cached URLs (index files and crates drawn from the whole cache) by one client, and on another
fresh proxy by {CLIENTS} concurrent clients: every timed request is a first read from the cache folder. Then, on the
large cache, `stats`, `ls --json` (time to its first line, peak RSS) and, once, `purge --older-than` of the oldest
~{PURGE_SHARE:.0%} while one client keeps asking for entries the purge leaves (p99 during it against before it).
"disk read per request" is what the proxy read from the disk rather than the page cache (/proc/PID/io
`read_bytes`) during the timed requests. Where the time of a first read at the large cache goes, once per
repetition, after the commands: one client again on a fresh proxy after its database file was read whole into the
page cache ("database in the page cache", for information; only where the machine's memory holds it twice), then
dropped from it again (posix_fadvise DONTNEED).""")
    big = scale.ensure(scale.DEFAULT_FOLDER / str(big_n), scale.Spec(big_n), _progress)
    small = scale.ensure(scale.DEFAULT_FOLDER / str(SMALL), scale.Spec(SMALL))
    section.notes.append(f"The {big_label} cache: {'built' if big.written else 'reused'}"
                         + (f", {big.written} entries written in {big.seconds:.0f} s "
                            f"({big.written / big.seconds:.0f} entries/s)" if big.written else "") + ".")
    now = time.time()
    keep_after = big.cutoff(PURGE_SHARE, now) - 86400  # a day younger than the purge's cut: never purged
    samples = {small_label: _sample(small.folder, now, None), big_label: _sample(big.folder, now, keep_after)}
    caches = [(big_label, big.folder), (small_label, small.folder)]
    rng = random.Random(12)
    empty = bench.fresh_dir("caches", "scale-empty")

    for rep in range(bench.repeat):
        proxy = bench.addon(f"scale-empty-{rep}", empty)
        _start_and_first(proxy, "https://index.crates.io/config.json", section, "empty cache")
        bench.stop(proxy)
        for label, folder in caches[:: 1 if rep % 2 == 0 else -1]:
            urls = rng.sample(samples[label], min(requests, len(samples[label])))
            for clients in (1, CLIENTS):
                proxy = bench.addon(f"scale-{label.split()[0]}-{rep}-{clients}", folder)
                try:
                    if clients == 1:
                        _start_and_first(proxy, urls[0][0], section, label)
                    else:
                        proxy.start()
                    _first_reads(bench, section, proxy, urls,
                                 f"{label}, first read, {clients} client{'s' if clients > 1 else ''}", clients)
                finally:
                    bench.stop(proxy)
        _commands(bench, section, big_label, big.folder)
        if _page_cache_holds(big.folder):
            _cat(big.folder / "cache.db")
            urls = rng.sample(samples[big_label], min(requests, len(samples[big_label])))
            proxy = bench.addon(f"scale-warm-{rep}", big.folder)
            try:
                proxy.start(timeout=120)
                _first_reads(bench, section, proxy, urls, f"{big_label}, first read, 1 client, database in the page "
                                                          "cache", 1)
            finally:
                bench.stop(proxy)
                _uncache(big.folder / "cache.db")  # the next repetition's first reads find it as before
    for label, folder in caches:
        _verify(bench, section, label, folder)
    _purge_while_serving(bench, section, big_label, big, samples[big_label])
    scale.ensure(big.folder, big.spec)  # what the purge took is written back, for the next run

    for clients in (1, CLIENTS):
        suffix = f"first read, {clients} client{'s' if clients > 1 else ''}"
        for what in ("p50 latency", "p99 latency"):
            section.checks.append(Check(f"hit {what.split()[0]} ({suffix}) with {big_label} vs {small_label}",
                                        section.figure(f"{big_label}, {suffix}", what, "ms"),
                                        section.figure(f"{small_label}, {suffix}", what, "ms"), 1.10))
    warm = f"{big_label}, first read, 1 client, database in the page cache"
    if section.figure(warm, "p50 latency", "ms").samples:
        section.checks.append(Check(f"hit p50 (first read, 1 client) with {big_label}, database in the page cache, "
                                    f"vs {small_label}", section.figure(warm, "p50 latency", "ms"),
                                    section.figure(f"{small_label}, first read, 1 client", "p50 latency", "ms"), None))
    section.checks += [
        Check(f"proxy start to first answered hit, {big_label}",
              section.figure(big_label, "start to first answer", "s"), None, 3.0),
        Check(f"idle RSS, {big_label} vs an empty cache", section.figure(big_label, "idle RSS", "MB"),
              section.figure("empty cache", "idle RSS", "MB"), 1.5),
        Check(f"`stats`, {big_label}", section.figure(big_label, "stats", "s"), None, 10.0),
        Check(f"`ls --json` first line, {big_label}", section.figure(big_label, "ls --json first line", "s"),
              None, 1.0),
        Check(f"`ls --json` peak RSS, {big_label}", section.figure(big_label, "ls --json peak RSS", "MB"), None, 150.0),
        Check(f"`purge --older-than` of ~{PURGE_SHARE:.0%}, {big_label}",
              section.figure(big_label, "purge --older-than", "s"), None, 60.0),
        Check("hit p99 during the purge vs before it", section.figure("during the purge", "hit p99", "ms"),
              section.figure("before the purge", "hit p99", "ms"), 2.0),
    ]
    # memory flat: the same bound as the listing's (a page and small caches, whatever the number of entries)
    section.checks.append(Check(f"`verify` peak RSS, {big_label}", section.figure(big_label, "verify peak RSS", "MB"),
                                None, 150.0))
    section.notes.append("Measured elsewhere: eviction while a cold fetch writes ten times a full cache's size_limit "
                         "(section 13), `stage`/`export`/`import` of a 5,000-crate lockfile beside a large cache "
                         "(`--scenarios bundles-scale`), the s3 backend with a 100,000-entry (200,000-object) bucket "
                         "(`--scenarios s3-scale`).")
    return section


def _first_reads(bench: Bench, section: Section, proxy: Mitmdump, urls: list[tuple[str, int]], config: str,
                 clients: int) -> None:
    """The timed first reads of `urls[1:]` (the first one was the proxy's first request): latency, CPU, disk."""
    listed = bench.urls_file("scale", urls[1:])
    read_before = disk_read_bytes(proxy.pid)
    result = bench.load(proxy, listed, clients, len(urls) - 1)
    section.figure(config, "p50 latency", "ms").samples.append(result["p50_ms"])
    section.figure(config, "p99 latency", "ms").samples.append(result["p99_ms"])
    section.figure(config, "mitmdump CPU per request", "ms").samples.append(result["proxy_cpu_ms"])
    section.figure(config, "disk read per request", "KB").samples.append(
        (disk_read_bytes(proxy.pid) - read_before) / 1024 / max(1, result["requests"]))


def _page_cache_holds(folder: Path) -> bool:
    """Whether the machine's memory holds the cache's database twice over (so reading it in evicts nothing)."""
    return (folder / "cache.db").stat().st_size * 2 < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cat(path: Path) -> None:
    """Read a file whole (into the page cache), 8 MiB at a time."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def _uncache(path: Path) -> None:
    """Drop a file's pages from the page cache (posix_fadvise DONTNEED)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _progress(done: int, seconds: float) -> None:
    if done % 100_000 == 0:
        print(f"bench: scale cache: {done} entries in {seconds:.0f} s", flush=True)


def _sample(folder: Path, now: float, keep_after: float | None) -> list[tuple[str, int]]:
    """Up to SAMPLE (url, size) of cached index files and crates, drawn evenly from the whole listing (a reservoir:
    the listing is never held); with `keep_after`, only entries younger than that (seconds)."""
    from cratecache.storage.local import LocalStore

    store = LocalStore(folder, 1 << 50, hot_bytes=0)
    try:
        return sample_urls(((key, meta.size) for key, meta in store.entries()
                            if keep_after is None or now - meta.stored_at <= keep_after), len(str(folder)))
    finally:
        store.close()


def sample_urls(entries: Iterable[tuple[str, int]], seed: int) -> list[tuple[str, int]]:
    """Up to SAMPLE (url, size) of `entries` (key, size), drawn evenly from all of them (a reservoir: they are never
    held)."""
    rng, chosen = random.Random(seed), []
    for seen, (key, size) in enumerate(entries, 1):
        if len(chosen) < SAMPLE:
            chosen.append((key, size))
        elif (slot := rng.randrange(seen)) < SAMPLE:
            chosen[slot] = (key, size)
    return [(_url(key), size) for key, size in chosen]


def _url(key: str) -> str:
    kind, _registry, name, *version = key.split("/")
    if kind == "index":
        return index_url(name)
    return f"https://static.crates.io/crates/{name}/{version[0]}/download"


def _start_and_first(proxy: Mitmdump, url: str, section: Section, label: str) -> None:
    """Start `proxy`, time it to its first answer for `url`, then take its RSS 2 s later."""
    began = time.monotonic()
    proxy.start(timeout=120)
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca_cert), timeout=60) as client:
        answer = client.get(url)
    if answer.status_code != 200:
        raise RuntimeError(f"{proxy.label}: first request {url}: {answer.status_code} {answer.text[:200]}")
    section.figure(label, "start to first answer", "s").samples.append(time.monotonic() - began)
    time.sleep(2)
    section.figure(label, "idle RSS", "MB").samples.append(rss_mb(proxy.pid))


def _cli(bench: Bench, folder: Path, *args: str) -> list[str]:
    config = bench.work / "config" / f"scale-cli-{folder.name}.yaml"
    if not config.exists():
        from tests.harness import write_proxies

        write_proxies(config, [bench.nginx_upstream()], folder, size_limit="50GB")
    return [sys.executable, "-m", "cratecache", "--proxies", str(config), *args]


# A child's peak RSS starts from its parent's at fork (Linux keeps the high-water mark across exec), and this process
# holds the bench's crates (hundreds of MB): the command is started from a small process that reports it.
_PEAK = ("import resource, subprocess, sys; status = subprocess.call(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(status)")


def _timed(cmd: list[str], keep: bool = False) -> dict:
    """Run a command: its wall time, when its first line of output came, its peak RSS (with `keep`, its last line)."""
    env = dict(os.environ, PYTHONPATH=str(Path(sys.path[0])))  # the addon snapshot (Bench.setup puts it first)
    began, first = time.monotonic(), None
    process = subprocess.Popen([sys.executable, "-c", _PEAK, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env)
    assert process.stdout is not None and process.stderr is not None
    last = b""
    for line in process.stdout:
        first = first if first is not None else time.monotonic() - began
        last = line if keep else last
    error = process.stderr.read().decode(errors="replace")
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} exited {process.returncode}: {error[-2000:]}")
    return {"seconds": time.monotonic() - began, "first": first if first is not None else float("nan"),
            "peak_mb": int(error.split()[-1]) / 1024, "last": last.decode(errors="replace").strip()}


def _commands(bench: Bench, section: Section, label: str, folder: Path) -> None:
    stats = _timed(_cli(bench, folder, "stats", "--json"))
    section.figure(label, "stats", "s").samples.append(stats["seconds"])
    listing = _timed(_cli(bench, folder, "ls", "--json"))
    section.figure(label, "ls --json first line", "s").samples.append(listing["first"])
    section.figure(label, "ls --json whole", "s").samples.append(listing["seconds"])
    section.figure(label, "ls --json peak RSS", "MB").samples.append(listing["peak_mb"])


def _verify(bench: Bench, section: Section, label: str, folder: Path) -> None:
    """`verify` over the whole cache, once: its time, throughput (its own summary line) and peak RSS."""
    done = _timed(_cli(bench, folder, "verify"), keep=True)
    section.figure(label, "verify", "s").samples.append(done["seconds"])
    section.figure(label, "verify peak RSS", "MB").samples.append(done["peak_mb"])
    section.notes.append(f"`verify`, {label}: {done['last']} (peak RSS {done['peak_mb']:.0f} MB).")


def _purge_while_serving(bench: Bench, section: Section, label: str, big: scale.Built,
                         urls: list[tuple[str, int]]) -> None:
    """`purge --older-than` of the oldest PURGE_SHARE while one client asks for entries it leaves (load runs of 200
    hits, back to back, until it ends)."""
    proxy = bench.addon("scale-purge", big.folder).start(timeout=120)
    try:
        listed = bench.urls_file("scale-purge", urls)
        before = bench.load(proxy, listed, 1, min(len(urls), 500))
        section.figure("before the purge", "hit p99", "ms").samples.append(before["p99_ms"])
        age = big.cutoff(PURGE_SHARE, time.time())
        env = dict(os.environ, PYTHONPATH=str(Path(sys.path[0])))
        began = time.monotonic()
        purge = subprocess.Popen(_cli(bench, big.folder, "purge", "--older-than", f"{int(age)}s"),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        during: list[float] = []
        while purge.poll() is None:
            result = loadgen.run(proxy.url, proxy.ca_cert, listed, 1, 200, bench.work / "load-purge.json")
            if purge.poll() is None or not during:
                during.append(result["p99_ms"])
        output = purge.communicate()[0].decode(errors="replace")
        seconds = time.monotonic() - began
        if purge.returncode != 0:
            raise RuntimeError(f"purge exited {purge.returncode}: {output[-2000:]}")
        section.figure(label, "purge --older-than", "s").samples.append(seconds)
        section.figure("during the purge", "hit p99", "ms").samples.append(max(during))
        section.notes.append(f"The purge: {output.strip()} in {seconds:.1f} s; {len(during)} load runs of 200 hits "
                             f"during it, p99 {', '.join(f'{p:.1f}' for p in during)} ms (the check takes the worst).")
    finally:
        bench.stop(proxy)

