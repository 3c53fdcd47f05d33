"""Scenario 5: 16 clients downloading a 30 MB crate at once, cold and warm; peak RSS of mitmdump.

Idle RSS is read after start-up and one small request per client host; the peak is VmHWM after the
downloads (reset to the current RSS just before them), cross-checked by polling VmRSS every 10 ms.
"""

from __future__ import annotations

import time

from ..context import Bench, crate_url, index_url
from ..procs import Mitmdump
from ..report import Check, Section
from ..rss import RssPoller, peak_mb, reset_peak, rss_mb

CLIENTS = 16
COLD, WARM, PLAIN = "cargo-cache, cold cache", "cargo-cache, warm cache", "plain mitmdump → nginx (reference)"
WARM_ONE = "cargo-cache, warm cache, 1 client (reference)"


def _measure(bench: Bench, proxy: Mitmdump, urls, warmup: list[str], clients: int = CLIENTS) -> tuple[float, float, float]:
    """(idle MB, peak MB, seconds) for `clients` simultaneous downloads of the big crate."""
    bench.load(proxy, urls, 1, 0, warmup=warmup)  # code paths and one TLS connection per host, no big bytes
    time.sleep(0.5)
    idle = rss_mb(proxy.pid)
    reset_peak(proxy.pid)
    with RssPoller(proxy.pid) as poller:
        result = bench.load(proxy, urls, clients, clients, warmup=warmup)
    if result["requests"] != clients or result["errors"]:
        raise RuntimeError(f"big downloads failed: {result}")
    return idle, max(peak_mb(proxy.pid), poller.peak), result["seconds"]


def run(bench: Bench) -> Section:
    size_mb = len(bench.big.data) / 2**20
    limit = 2 * size_mb + 50
    section = Section("memory", "5. Memory: 16 clients downloading a 30 MB crate at once", f"""
`{bench.big.name}` {bench.big.version} is a real `.crate` ({size_mb:.1f} MiB; a 30 MiB incompressible data file),
listed in the registry's index with its checksum. {CLIENTS} HTTP/2 clients (each its own connection) request its
download at the same moment; every answer is checked (200, exact size). Cold: empty cache, so the addon fetches
it from nginx once (concurrent misses share one upstream request), checks the SHA-256 and stores it while all 16
wait. Warm: a fresh proxy on the same cache. The figure is mitmdump's peak RSS (VmHWM, reset just before the
downloads) minus its idle RSS (after start-up and one small request per host). Plain mitmdump forwarding the same
downloads to nginx is shown for reference. Fresh processes for each measurement; {bench.reps}.
MB here are MiB.""")
    urls = bench.urls_file("big", [(crate_url(bench.big), len(bench.big.data))])
    small = min(bench.real_crates, key=lambda c: len(c.data))
    warmup = [index_url(small.name), crate_url(small)]
    for rep in range(bench.repeat):
        cache = bench.fresh_dir("caches", "memory")
        for config, proxy, clients in ((COLD, bench.addon("memory-addon", cache), CLIENTS),
                                       (WARM, bench.addon("memory-addon", cache), CLIENTS),
                                       (WARM_ONE, bench.addon("memory-addon", cache), 1),
                                       (PLAIN, bench.plain("memory-plain"), CLIENTS)):
            proxy.start()
            try:
                idle, peak, seconds = _measure(bench, proxy, urls, warmup, clients)
            finally:
                bench.stop(proxy)
            section.figure(config, "idle RSS", "MB").samples.append(idle)
            section.figure(config, "peak RSS", "MB").samples.append(peak)
            section.figure(config, "growth", "MB").samples.append(peak - idle)
            section.figure(config, "time for all downloads", "s").samples.append(seconds)
    for config in (COLD, WARM):
        section.checks.append(Check(f"{config}: RSS growth (limit 2 × {size_mb:.1f} + 50 MB)",
                                    section.figure(config, "growth", "MB"), None, limit))
    growth = {c: section.figure(c, "growth", "MB").median for c in (COLD, WARM, WARM_ONE, PLAIN)}
    per_download = (growth[WARM] - growth[WARM_ONE]) / (CLIENTS - 1)
    section.notes += [
        f"Each additional concurrent download adds about {per_download:.0f} MB ({per_download / size_mb:.1f} × the "
        f"crate) to cargo-cache's peak (warm: {growth[WARM_ONE]:.0f} MB for one download, {growth[WARM]:.0f} MB for "
        f"{CLIENTS}); plain mitmdump needs {growth[PLAIN] / CLIENTS:.0f} MB per download "
        f"({growth[PLAIN] / CLIENTS / size_mb:.1f} × the crate) for the same {CLIENTS}.",
        "mitmproxy 12.2.3 sends a body set with `Response.make` in one piece: its HTTP/2 layer "
        "(`BufferedH2Connection.send_data`) slices it into 16 KiB frames at once and buffers the copies until the "
        "client's flow-control window admits them. As long as the addon answers with `Response.make`, memory grows "
        "with the number of concurrent large downloads, whatever the addon does with its own copy.",
    ]
    return section
