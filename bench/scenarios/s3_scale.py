"""Scenario 12b (issue 33, the s3 parts): a bucket of crates.io-scale on SeaweedFS beside a 1,000-entry one.

The bucket holds `--scale`'s entries / 10 (default 100,000 entries: 200,000 objects, a meta and a blob each; 2,000 with
`--quick`) of `bench/scale.py`'s made-up cache, written once straight into SeaweedFS with the layout the s3 backend
publishes (`blob/<sha256>`, then `meta/<key>` naming it) and reused between runs: the server's data folder lives in
`.cache/bench-scale/` and a stamp object marks a finished build. Measured against the 1,000-entry prefix of the same
server: a gateway's start to its first answered hit and first-read hit latency with its local tier empty (every
answer from the bucket), and the commands over the bucket: `stats`, `ls --json` (first line, peak RSS).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import time
from dataclasses import asdict

from .. import scale
from ..context import Bench
from ..procs import track_stopper, untrack_stopper
from ..report import Check, Section
from .scale import _first_reads, _start_and_first, _timed, sample_urls

SMALL = 1_000
PUTS_AT_ONCE = 64
STAMP = "scale-stamp.json"


def run(bench: Bench) -> Section:
    from tests.fixtures.seaweed import SeaweedFS  # imports cratecache: only once setup put the snapshot on sys.path
    from tests.harness import write_proxies

    big_n = max(SMALL * 2, (bench.scale or (20_000 if bench.quick else 1_000_000)) // 10)
    requests = 250 if bench.quick else 1_000
    big_label = f"{big_n:,} entries ({2 * big_n:,} objects)".replace(",", " ")
    small_label = f"{SMALL:,} entries ({2 * SMALL:,} objects)".replace(",", " ")
    section = Section("s3-scale", f"12b. crates.io scale on the s3 backend: a bucket of {big_label} vs {small_label}",
                      f"""
Two prefixes of one SeaweedFS server (`weed mini` on loopback, its data on this disk) hold `bench/scale.py`'s made-up
cache of {big_n} and {SMALL} entries, written straight into the bucket with the s3 backend's layout (a `blob/<sha256>`
object, then the `meta/<key>` record naming it: two objects an entry) {PUTS_AT_ONCE} at a time, once, and reused
between runs. In each of {bench.reps}, for each prefix in turn, a gateway (s3 backend) with an empty local tier: the
time from starting mitmdump to its first answered hit, then {requests} distinct cached URLs by one client: every timed
request is a first read from the bucket (meta, then blob, copied into the local tier). Then, over the large prefix,
`stats` and `ls --json` (time to its first line, peak RSS) from a command with an empty local tier.""")
    folder = scale.DEFAULT_FOLDER / f"s3-{big_n}"
    server = SeaweedFS(folder)
    server.log_path = bench.log_path("seaweedfs-scale")
    track_stopper(server.stop)
    try:
        server.start()
        prefixes = {}
        for label, n in ((big_label, big_n), (small_label, SMALL)):
            prefix = f"scale-{n}"
            built = asyncio.run(_ensure_bucket(server.settings(prefix), scale.Spec(n)))
            section.notes.append(f"The {label} bucket: " + (f"{built[0]} entries written in {built[1]:.0f} s "
                                                            f"({built[0] / built[1]:.0f} entries/s)." if built[0]
                                                            else "reused."))
            prefixes[label] = (prefix, sample_urls(((i.key, len(i.body)) for i in scale.items(scale.Spec(n))), n))
        rng = random.Random(121)
        for rep in range(bench.repeat):
            for label in list(prefixes)[:: 1 if rep % 2 == 0 else -1]:
                prefix, sample = prefixes[label]
                urls = rng.sample(sample, min(requests, len(sample)))
                proxy = bench.addon(f"s3-scale-{prefix}-{rep}", bench.fresh_dir("caches", "s3-scale-tier"),
                                    backend="s3", s3=server.yaml(prefix))
                try:
                    _start_and_first(proxy, urls[0][0], section, label)
                    _first_reads(bench, section, proxy, urls, f"{label}, first read, 1 client", 1)
                finally:
                    bench.stop(proxy)
            config = write_proxies(bench.work / "config" / "s3-scale-cli.yaml", [bench.nginx_upstream()],
                                   bench.fresh_dir("caches", "s3-scale-cli"), size_limit="50GB", backend="s3",
                                   s3=server.yaml(prefixes[big_label][0]))
            command = [sys.executable, "-m", "cratecache", "--proxies", str(config)]
            stats = _timed([*command, "stats", "--json"])
            section.figure(big_label, "stats", "s").samples.append(stats["seconds"])
            listing = _timed([*command, "ls", "--json"])
            section.figure(big_label, "ls --json first line", "s").samples.append(listing["first"])
            section.figure(big_label, "ls --json whole", "s").samples.append(listing["seconds"])
            section.figure(big_label, "ls --json peak RSS", "MB").samples.append(listing["peak_mb"])
    finally:
        server.stop()
        untrack_stopper(server.stop)

    suffix = "first read, 1 client"
    for what in ("p50 latency", "p99 latency"):
        section.checks.append(Check(f"hit {what.split()[0]} ({suffix}, local tier empty) with {big_label} vs "
                                    f"{small_label}", section.figure(f"{big_label}, {suffix}", what, "ms"),
                                    section.figure(f"{small_label}, {suffix}", what, "ms"), 1.10))
    section.checks += [
        Check(f"gateway start to first answered hit, {big_label}",
              section.figure(big_label, "start to first answer", "s"), None, 3.0),
        Check(f"`stats`, {big_label}", section.figure(big_label, "stats", "s"), None, 10.0),
        Check(f"`ls --json` first line, {big_label}", section.figure(big_label, "ls --json first line", "s"),
              None, 1.0),
        Check(f"`ls --json` peak RSS, {big_label}", section.figure(big_label, "ls --json peak RSS", "MB"), None, 150.0),
    ]
    return section


async def _ensure_bucket(settings, spec: scale.Spec) -> tuple[int, float]:
    """The prefix holding `spec`'s entries: (entries written, seconds); (0, 0.0) when its stamp says it is whole.
    Written as the s3 backend publishes an entry: its blob, then its meta record; a rerun after an interrupted build (no
    stamp yet) writes every entry again (the puts overwrite)."""
    import obstore
    from cratecache.storage.bucket import _s3_store
    from cratecache.storage.entries import Meta

    store = _s3_store(settings, 8 << 20)
    try:
        stamp = json.loads(bytes(await (await obstore.get_async(store, STAMP)).bytes_async()))
        if stamp.get("spec") == asdict(spec):
            return 0, 0.0
    except FileNotFoundError:
        pass
    began, built_at, written = time.monotonic(), time.time(), 0
    gate = asyncio.Semaphore(PUTS_AT_ONCE)

    async def put(item: scale.Item) -> None:
        sha = hashlib.sha256(item.body).hexdigest()
        meta = Meta(sha, len(item.body), scale.UPSTREAM, built_at - item.age, built_at)
        async with gate:
            await obstore.put_async(store, f"blob/{sha}", item.body)
            await obstore.put_async(store, f"meta/{item.key}", json.dumps(asdict(meta)).encode())

    pending: set[asyncio.Task] = set()
    for item in scale.items(spec):
        pending.add(asyncio.ensure_future(put(item)))
        written += 1
        if len(pending) >= 4 * PUTS_AT_ONCE:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        if written % 20_000 == 0:
            print(f"bench: s3 scale bucket: {written} entries in {time.monotonic() - began:.0f} s", flush=True)
    for task in asyncio.as_completed(pending):
        await task
    await obstore.put_async(store, STAMP, json.dumps({"spec": asdict(spec), "built_at": built_at}).encode())
    return written, time.monotonic() - began
