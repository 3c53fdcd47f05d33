"""HTTP/2 load generator: N concurrent clients, each its own connections through the proxy.

Runs in its own process (never inside mitmdump's), so the proxy gets a core to itself:

    python -m bench.loadgen --proxy http://127.0.0.1:PORT --ca CA.pem --clients 8 --requests 2000 \
        --urls urls.json --out result.json

`urls.json` is a list of [url, expected_size]. Each client first sends one untimed request to
every host (TLS handshakes, CONNECT, HTTP/2 settings), then all clients start together and take
requests from one shared counter until `--requests` have been sent (closed loop: one request in
flight per client). Every answer is checked: status 200 and the expected size, else it counts
as an error. `run()` is the in-bench wrapper that starts the process and reads its result.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.harness import ROOT


class H2FirstContext(ssl.SSLContext):
    """Offers h2 before http/1.1 in ALPN, as Cargo's libcurl does.

    httpcore offers ["http/1.1", "h2"] inside a proxy tunnel, and mitmproxy picks the client's first
    choice, so without this the clients would speak HTTP/1.1 to the proxy.
    """

    def set_alpn_protocols(self, protocols) -> None:
        super().set_alpn_protocols(sorted(protocols, key=lambda p: p != "h2"))


def client_context(ca: str | Path) -> ssl.SSLContext:
    ctx = H2FirstContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    return ctx


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def _client(proxy: str, ctx: ssl.SSLContext, urls: list[tuple[str, int]], warmup: list[str], counter,
                  total: int, start: asyncio.Event, ready: list, out: dict, timeout: float, http1: bool = False,
                  discard: bool = False) -> None:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with httpx.AsyncClient(http2=not http1, proxy=proxy, verify=ctx, timeout=timeout, limits=limits,
                                 trust_env=False) as client:
        for url in warmup:
            (await client.get(url)).raise_for_status()
        ready.append(1)
        await start.wait()
        while (n := next(counter)) < total:
            url, size = urls[n % len(urls)]
            began = time.perf_counter()
            try:
                if discard:  # large bodies: counted as they arrive, never held (the client's memory is not measured)
                    length = 0
                    async with client.stream("GET", url) as response:
                        async for chunk in response.aiter_raw():
                            length += len(chunk)
                else:
                    response = await client.get(url)
                    length = len(response.content)
            except httpx.HTTPError as e:
                out["errors"][type(e).__name__] += 1
                continue
            out["latencies"].append(time.perf_counter() - began)
            out["versions"][response.http_version] += 1
            out["cache"][response.headers.get("x-cache", "-")] += 1
            if response.status_code != 200 or (size >= 0 and length != size):
                out["errors"][f"HTTP {response.status_code}, {length} B"] += 1
            out["bytes"] += length


async def _run(args: argparse.Namespace) -> dict:
    urls = [tuple(u) for u in json.loads(Path(args.urls).read_text())]
    random.Random(args.seed).shuffle(urls)
    ctx = client_context(args.ca)
    if args.http1:
        ctx.set_alpn_protocols(["http/1.1"])
    counter, start, ready = itertools.count(), asyncio.Event(), []
    out = {"latencies": [], "errors": Counter(), "versions": Counter(), "cache": Counter(), "bytes": 0}
    # One untimed request per host by default (the first URL of each); --warmup chooses others.
    warmup = args.warmup or list({urlsplit(u).netloc: u for u, _ in urls}.values())
    tasks = [asyncio.create_task(_client(args.proxy, ctx, urls, warmup, counter, args.requests, start, ready, out,
                                         args.timeout, args.http1, args.discard))
             for _ in range(args.clients)]
    while len(ready) < args.clients:
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()
        await asyncio.sleep(0.01)
    began, wall_began, cpu_began = time.perf_counter(), time.time(), time.process_time()
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    wall_ended, cpu_used = time.time(), time.process_time() - cpu_began
    lat = sorted(out["latencies"])
    return {
        "clients": args.clients, "requests": len(lat), "seconds": elapsed, "rps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * 1000, "p90_ms": percentile(lat, 90) * 1000,
        "p99_ms": percentile(lat, 99) * 1000, "max_ms": (lat[-1] if lat else float("nan")) * 1000,
        "mb_per_s": out["bytes"] / elapsed / 1e6, "errors": dict(out["errors"]),
        "http_versions": dict(out["versions"]), "x_cache": dict(out["cache"]),
        # The timed phase on the wall clock (another process can line its own readings up with it), and this
        # process's CPU seconds during it.
        "wall_began": wall_began, "wall_ended": wall_ended, "cpu_s": cpu_used,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--urls", required=True, help="JSON list of [url, expected size or -1]")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000, help="timed requests, over all clients")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--warmup", action="append", help="untimed URL each client gets first (repeatable)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--http1", action="store_true", help="HTTP/1.1 to the proxy (default: HTTP/2)")
    parser.add_argument("--discard", action="store_true", help="count large bodies as they arrive, keep none")
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(asyncio.run(_run(args))))


def start(proxy_url: str, ca: Path, urls_file: Path, clients: int, requests: int, out: Path,
          timeout: float = 60, warmup: list[str] = (), http1: bool = False, discard: bool = False) -> subprocess.Popen:
    """Start a load run in its own process; `finish()` waits for it and reads the result."""
    cmd = [sys.executable, "-m", "bench.loadgen", "--proxy", proxy_url, "--ca", str(ca), "--urls", str(urls_file),
           "--clients", str(clients), "--requests", str(requests), "--out", str(out), "--timeout", str(timeout)]
    cmd += ["--http1"] if http1 else []
    cmd += ["--discard"] if discard else []
    for url in warmup:
        cmd += ["--warmup", url]
    out.unlink(missing_ok=True)
    from bench.procs import clean_env, track  # here, not at the top: the load process need not import mitmproxy

    return track(subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT))


def finish(process: subprocess.Popen, out: Path, timeout: float = 600) -> dict:
    from bench.procs import stop  # see start()

    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        stop(process)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"load generator failed ({process.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    return json.loads(out.read_text())


def run(proxy_url: str, ca: Path, urls_file: Path, clients: int, requests: int, out: Path, **kw) -> dict:
    return finish(start(proxy_url, ca, urls_file, clients, requests, out, **kw), out)


if __name__ == "__main__":
    main()
