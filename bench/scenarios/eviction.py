"""Scenario: eviction keeps up with a cold fetch ten times the size of a full cache (issue 33, scaled down).

A disk-backend proxy with a small `size_limit` is first filled to it through the proxy, from an upstream that
generates made-up crates (bench/generated.py); then, while one client keeps asking for a few small cached entries
(one request every `HIT_PACE` s, in its own process: `python -m bench.scenarios.eviction hits ...`), four clients
fetch ten times the limit of new entries, crate-sized (a log-normal spread around 60 KB, up to 8 MB) and every
25th component-sized. The cache folder's size on disk (as `du`: every file, the database, its WAL and partial
downloads) is sampled every 100 ms. Reported: its peak over the limit, and the hits' p50/p99 during the fill
against those of the same client before it (idle).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.harness import DOWNLOAD_HOST, ROOT, write_proxies

from ..context import LONG_TTL
from ..generated import GeneratedUpstream, crate_name
from ..loadgen import client_context, percentile
from ..report import Check, Section
from ..rss import cpu_times

MB = 1024 * 1024
HIT_PACE = 0.02
SAMPLE_SECONDS = 0.1
FILL_CLIENTS = 4


def folder_bytes(path: Path) -> int:
    """What `du` counts: the allocated blocks of every file and folder below `path`."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as found:
                for item in found:
                    try:
                        if item.is_dir(follow_symlinks=False):
                            stack.append(item.path)
                        total += item.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:
                        pass  # evicted meanwhile
        except FileNotFoundError:
            pass
    return total


class FolderSampler:
    """The folder's size every `SAMPLE_SECONDS`, in a thread, until stopped: (seconds since start, bytes)."""

    def __init__(self, path: Path):
        self.path, self.samples = path, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - began, folder_bytes(self.path)))
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> FolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((b for _, b in self.samples), default=0)


def entry_sizes(total: int, component: int, seed: int) -> list[int]:
    """Crate-sized entries (log-normal around 60 KB, 1 KB to 8 MB), every 25th one `component` bytes, adding up to
    about `total`."""
    rng, sizes = random.Random(seed), []
    while sum(sizes) < total:
        if len(sizes) % 25 == 24:
            sizes.append(component)
        else:
            sizes.append(int(min(8 * MB, max(1024, rng.lognormvariate(11.0, 1.4)))))
    return sizes


def crate_urls(label: str, sizes: list[int]) -> list[tuple[str, int]]:
    return [(f"https://{DOWNLOAD_HOST}/crates/{crate_name(f'{label}{i}', size)}/1.0.0/download", size)
            for i, size in enumerate(sizes)]


def hits_main(argv: list[str]) -> None:
    """One client asking for `urls` in turn, one request every `--pace` s, until `--stop` exists: each request's
    (start, seconds, ok) to `--out`."""
    import httpx

    parser = argparse.ArgumentParser()
    for name in ("--proxy", "--ca", "--urls", "--stop", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--pace", type=float, default=HIT_PACE)
    args = parser.parse_args(argv)
    urls = [u for u, _ in json.loads(Path(args.urls).read_text())]
    stop, samples = Path(args.stop), []
    with httpx.Client(http2=True, proxy=args.proxy, verify=client_context(args.ca), timeout=30,
                      trust_env=False) as client:
        client.get(urls[0])
        n = 0
        while not stop.exists():
            began = time.time()
            t0 = time.perf_counter()
            try:
                ok = client.get(urls[n % len(urls)]).status_code == 200
            except httpx.HTTPError:
                ok = False
            samples.append((began, time.perf_counter() - t0, ok))
            n += 1
            time.sleep(max(0.0, args.pace - (time.perf_counter() - t0)))
    Path(args.out).write_text(json.dumps(samples))


def _start_hits(bench, proxy, urls: Path, stop: Path, out: Path) -> subprocess.Popen:
    from ..procs import clean_env, track

    stop.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.scenarios.eviction", "hits", "--proxy", proxy.url, "--ca", str(proxy.ca_cert),
           "--urls", str(urls), "--stop", str(stop), "--out", str(out)]
    return track(subprocess.Popen(cmd, cwd=ROOT, env=clean_env()))


def _finish_hits(process: subprocess.Popen, stop: Path, out: Path) -> list[tuple[float, float, bool]]:
    from ..procs import stop as stop_process

    stop.touch()
    try:
        process.wait(60)
    finally:
        stop_process(process)
    return [tuple(s) for s in json.loads(out.read_text())]


def _busy() -> float:
    """The whole machine's busy CPU time so far (core-seconds: all but idle and iowait), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def worker_counts() -> tuple[int, ...]:
    """One mitmdump, and `make run`'s default (one worker per core) where that is more."""
    default = os.cpu_count() or 1
    return (1, default) if default > 1 else (1,)


def _config(count: int) -> str:
    return "1 worker" if count == 1 else f"{count} workers (make run's default)"


class _Proxy:
    """The proxy measured: one mitmdump (`bench.addon`) or `count` workers as `make run` starts them."""

    def __init__(self, bench, label: str, count: int, cache: Path, upstream_url: str, limit: int):
        from .workers import Workers

        self.bench, self.label = bench, label
        if count == 1:
            self.one, self.many = bench.addon(label, cache, [{"name": "generated", "url": upstream_url}],
                                              size_limit=str(limit)), None
        else:
            config = write_proxies(bench.work / "config" / f"{label}.yaml", [{"name": "generated", "url": upstream_url}],
                                   cache, size_limit=str(limit), index_ttl=LONG_TTL)
            self.one, self.many = None, Workers(bench, label, count, config)

    def start(self) -> _Proxy:
        (self.one or self.many).start()
        return self

    def stop(self) -> None:
        if self.one is not None:
            self.bench.stop(self.one)
        else:
            self.many.stop()

    @property
    def url(self) -> str:
        return (self.one or self.many).url

    @property
    def ca_cert(self) -> Path:
        return (self.one or self.many).ca_cert

    @property
    def pid(self) -> int:  # what bench.load reads the CPU of: the first worker's (the per-proxy figure sums all)
        return self.one.pid if self.one is not None else next(iter(self.many.pids.values()))

    def cpu(self) -> float:
        pids = [self.one.pid] if self.one is not None else list(self.many.pids.values())
        return sum(sum(cpu_times(pid)) for pid in pids)


def run(bench) -> Section:
    limit = (50 if bench.quick else 200) * MB
    written = 10 * limit
    component = (10 if bench.quick else 20) * MB
    counts = worker_counts()
    section = Section("eviction", f"13. Eviction during a cold fetch of {written // MB} MB into a full "
                                  f"{limit // MB} MB cache", f"""
A disk-backend proxy with `size_limit` {limit // MB} MB, first filled to it through the proxy; then {FILL_CLIENTS}
clients fetch {written // MB} MB of new entries (ten times the limit: the issue's 2 GB cold fetch scaled to the
limit) from an upstream that generates them: crate-sized (log-normal around 60 KB, up to 8 MB), every 25th one
{component // MB} MB (a toolchain component, scaled down). Meanwhile one more client asks for one of 50 small
cached crates every {HIT_PACE * 1000:.0f} ms; its latencies before the fill are "idle". The cache folder's size on
disk (every file: database, WAL, blobs, partial downloads) is sampled every {SAMPLE_SECONDS * 1000:.0f} ms.
The proxy is measured as {' and as '.join(_config(c) for c in counts)} (`python -m cratecache.operations.workers`,
as `make run` starts it: the workers share the port and the cache folder, the kernel spreads the clients'
connections over them); "CPU, the proxy" sums its workers. {bench.reps}.""")
    urls_dir = bench.work / "urls"
    for rep in range(bench.repeat):
        for count in counts:
            _fill(bench, section, rep, count, limit, written, component, urls_dir)
    for count in counts:
        config = _config(count)
        section.checks.append(Check(f"cache folder peak / size_limit during the fill, {config}",
                                    section.figure(config, "cache folder peak / size_limit", "ratio"), None, 1.05))
        for what in ("p50", "p99"):
            section.checks.append(Check(f"hit {what} during the fill vs idle, {config}",
                                        section.figure(f"hits during the fill, {config}", f"{what} latency", "ms"),
                                        section.figure(f"hits idle, {config}", f"{what} latency", "ms"), 1.5))
    return section


def _fill(bench, section: Section, rep: int, count: int, limit: int, written: int, component: int,
          urls_dir: Path) -> None:
    """One repetition with `count` workers: prefill to the limit, idle hits, then the cold fetch beside them."""
    config = _config(count)
    cache = bench.fresh_dir("caches", "eviction")
    with GeneratedUpstream() as upstream:
        proxy = _Proxy(bench, f"eviction-{count}w-{rep}", count, cache, upstream.index_url, limit).start()
        try:
            fill = bench.urls_file("eviction-fill", crate_urls(f"prefill{rep}w{count}x",
                                                               entry_sizes(limit, component, rep)))
            bench.load(proxy, fill, FILL_CLIENTS, len(json.loads(fill.read_text())), discard=True, timeout=120)
            small = bench.urls_file("eviction-hits", crate_urls(f"hot{rep}w{count}x", [4096] * 50))
            bench.prime(proxy, small)
            time.sleep(6)  # the upkeep's eviction of the prefill's overshoot (every 5 s)
            stop, out = urls_dir / "hits.stop", urls_dir / "hits.json"
            hits = _start_hits(bench, proxy, small, stop, out)
            time.sleep(10)
            idle_end = time.time()
            cold = bench.urls_file("eviction-cold", crate_urls(f"cold{rep}w{count}x",
                                                               entry_sizes(written, component, 100 + rep)))
            machine, own, began = _busy(), proxy.cpu(), time.monotonic()
            with FolderSampler(cache) as sampler:
                result = bench.load(proxy, cold, FILL_CLIENTS, len(json.loads(cold.read_text())), discard=True,
                                    timeout=300)
            seconds = time.monotonic() - began
            section.figure(config, "CPU busy during the fill, whole machine", "cores").samples.append(
                (_busy() - machine) / seconds)
            section.figure(config, "CPU during the fill, the proxy", "cores").samples.append(
                (proxy.cpu() - own) / seconds)
            fill_began, fill_ended = result["wall_began"], result["wall_ended"]
            samples = _finish_hits(hits, stop, out)
        finally:
            proxy.stop()
    idle = sorted(s for t, s, ok in samples if t < idle_end)
    during = sorted(s for t, s, ok in samples if fill_began <= t <= fill_ended)
    failed = sum(1 for t, s, ok in samples if not ok)
    section.figure(config, "cache folder peak / size_limit", "ratio").samples.append(sampler.peak / limit)
    section.figure(config, "cache folder peak size", "MB").samples.append(sampler.peak / MB)
    section.figure(config, "cold fetch throughput", "MB/s").samples.append(result["mb_per_s"])
    for label, values in (("idle", idle), ("during the fill", during)):
        section.figure(f"hits {label}, {config}", "p50 latency", "ms").samples.append(percentile(values, 50) * 1000)
        section.figure(f"hits {label}, {config}", "p99 latency", "ms").samples.append(percentile(values, 99) * 1000)
    if failed or result["errors"]:
        bench.problems[f"eviction ({config}): {failed} failed hits, fill errors {result['errors']}"] += 1
    section.notes.append(f"Repetition {rep + 1}, {config}: {len(idle)} idle hits, {len(during)} during the fill; "
                         f"folder samples {len(sampler.samples)}, peak {sampler.peak / MB:.0f} MB; the upstream "
                         f"served {upstream.served / MB:.0f} MB.")


if __name__ == "__main__":
    if sys.argv[1:2] == ["hits"]:
        hits_main(sys.argv[2:])
