"""Where the streamed path should start: crates of several sizes served from memory vs streamed from their file.

    .venv/bin/python -m bench.threshold [--http1] [SIZE_KIB ...]

For each size, one proxy serves the crate from memory (`Response.make`, the threshold set above it) and another
streams it through the blob server (the threshold set to 0), both warm; an HTTP/2 client downloads it 30 times
one after the other (median latency), then 16 clients download it at once, 5 times (median wall time, mitmdump's RSS growth).
Prints a Markdown table; BENCHMARKS.md section 5 quotes it. A hand measurement, not part of `make bench`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.bigcrate import add_big_crate
from bench.loadgen import client_context
from bench.procs import make_confdir
from bench.rss import peak_mb, reset_peak, rss_mb
from tests.fixtures.registry import Registry
from tests.fixtures.upstream import UpstreamServer
from tests.harness import Proxy, write_proxies

SIZES_KIB = (256, 512, 1024, 2048, 4096, 8192)
SEQUENTIAL, CONCURRENT, BURSTS = 30, 16, 5


async def _downloads(proxy: Proxy, url: str, http2: bool) -> tuple[float, float, float]:
    ctx = client_context(proxy.ca_cert)
    async with httpx.AsyncClient(http2=http2, proxy=proxy.url, verify=ctx, trust_env=False, timeout=60) as c:
        (await c.get(url)).raise_for_status()  # warm: cached, and the connection open
        times = []
        for _ in range(SEQUENTIAL):
            began = time.perf_counter()
            (await c.get(url)).raise_for_status()
            times.append(time.perf_counter() - began)
    clients = [httpx.AsyncClient(http2=http2, proxy=proxy.url, verify=ctx, trust_env=False, timeout=60)
               for _ in range(CONCURRENT)]
    try:
        for c in clients:
            (await c.get(url)).raise_for_status()  # each its own connection, open
        walls, growths = [], []
        for _ in range(BURSTS):
            time.sleep(0.3)
            idle = rss_mb(proxy.process.pid)
            reset_peak(proxy.process.pid)
            began = time.perf_counter()
            await asyncio.gather(*(c.get(url) for c in clients))
            walls.append(time.perf_counter() - began)
            growths.append(peak_mb(proxy.process.pid) - idle)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return statistics.median(times) * 1000, statistics.median(walls), statistics.median(growths)


def main() -> None:
    args = sys.argv[1:]
    http2 = "--http1" not in args
    sizes = tuple(int(a) for a in args if a != "--http1") or SIZES_KIB
    work = Path(tempfile.mkdtemp(prefix="threshold-"))
    registry = Registry()
    crates = {kib: add_big_crate(registry, kib * 1024, f"bench-size-{kib}") for kib in sizes}
    confdir = make_confdir(work / "confdir")
    rows = []
    with UpstreamServer(registry, name="origin") as origin:
        for label, threshold in (("memory", 1 << 40), ("streamed", 0)):
            os.environ["CARGO_CACHE_FILE_THRESHOLD"] = str(threshold)
            config = write_proxies(work / f"{label}.yaml", [{"name": "origin", "url": origin.url}], work / label,
                                   size_limit="10GB")
            with Proxy(config, confdir, work / f"{label}.log") as proxy:
                for kib, crate in crates.items():
                    url = f"https://static.crates.io/crates/{crate.name}/1.0.0/download"
                    rows.append((kib, label, *asyncio.run(_downloads(proxy, url, http2))))
    print(f"over {'HTTP/2' if http2 else 'HTTP/1.1'}")
    print("| crate | served | latency, 1 client (ms) | 16 at once: wall (s) | 16 at once: RSS growth (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for kib, label, ms, wall, growth in rows:
        print(f"| {kib} KiB | {label} | {ms:.1f} | {wall:.2f} | {growth:.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
