"""Scenario: `stage` of a 5,000-crate lockfile, `export --lockfile` of it and `import` of its bundle, in a cache that
also holds many unrelated entries (issue 33).

A synthetic registry (`synthetic_registry`: made-up crates, 1–30 versions each with a few dependencies per line, as
crates.io's index files look; small random .crate files) is served on loopback by the test suite's
`UpstreamServer`. The source cache is first filled with unrelated index entries through the store (`fill`), then
each command runs as the user runs it (`python -m cratecache ...`) under `/usr/bin/time -v`, for its wall time and
peak RSS. Each figure is taken with a lockfile of `SMALL` crates too (the memory any run of the command takes), and
with two sizes of unrelated content: what the commands take must follow the lockfile, not the cache.

    .venv/bin/python -m bench.scenarios.bundles_scale --crates 1000 --unrelated 10000,100000   (on its own)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fixtures.registry import CrateFile, Registry, encode_index
from tests.fixtures.upstream import UpstreamServer
from tests.harness import ROOT, write_proxies

from ..report import Check, Section
from .cache_size import crate_names, index_body

SMALL = 10
CRATES = 5_000
_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")


def synthetic_registry(count: int, seed: int = 33) -> tuple[Registry, list[tuple[str, str, str]]]:
    """`count` made-up crates: (the registry, [(name, version, cksum)] of the version a lockfile picks)."""
    rng, reg, picked = random.Random(seed), Registry(), []
    for name in crate_names(count, seed):
        name = f"b{name}"
        versions = [f"{major}.{minor}.0" for major in range(3) for minor in range(10)][:rng.randint(1, 30)]
        lines = []
        for version in versions:
            data = rng.randbytes(rng.randint(1_000, 6_000))
            cksum = hashlib.sha256(data).hexdigest()
            if version == versions[-1]:
                reg.crates[(name, version)] = CrateFile(name, version, data, cksum)
                picked.append((name, version, cksum))
            deps = [{"name": f"dep{rng.randint(0, 999)}", "req": "^1", "features": [], "optional": False,
                     "default_features": True, "target": None, "kind": "normal", "registry": None}
                    for _ in range(rng.randint(0, 6))]
            lines.append({"name": name, "vers": version, "deps": deps, "cksum": cksum, "features": {},
                          "yanked": False, "links": None, "v": 1})
        reg.index_files[name] = encode_index(lines)
    return reg, picked


def write_lockfile(path: Path, picked: list[tuple[str, str, str]]) -> Path:
    out = ["version = 3", ""]
    for name, version, cksum in picked:
        out += ["[[package]]", f'name = "{name}"', f'version = "{version}"',
                'source = "registry+https://github.com/rust-lang/crates.io-index"', f'checksum = "{cksum}"', ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return path


def fill(folder: Path, count: int) -> float:
    """`count` unrelated index entries in the cache at `folder`, through the store; seconds it took."""
    sys.path.insert(0, str(ROOT / "addon"))
    from cratecache.storage.local import LocalStore

    began, rng = time.perf_counter(), random.Random(count)
    store = LocalStore(folder, 50 * 2**30, hot_bytes=0)
    names = crate_names(count, seed=count + 1)
    try:
        for start in range(0, count, 1000):
            with store.transaction():  # one commit per thousand
                for name in names[start:start + 1000]:
                    store.put(f"index/crates-io/u{name}", index_body(name, rng), "nginx")
    finally:
        store.close()
    return time.perf_counter() - began


def measured(config: Path, *args: str, addon: Path = ROOT / "addon") -> tuple[float, float, str]:
    """`python -m cratecache --config CONFIG ARGS` under /usr/bin/time -v: (wall seconds, peak RSS MB, output)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"PYTHONPATH": str(addon)}
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "cratecache", "--config", str(config), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"cratecache {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-3000:]}")
    hours, minutes, seconds = _WALL.search(done.stderr).groups()
    wall = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    return wall, int(_MAX_RSS.search(done.stderr).group(1)) / 1024, done.stdout


def measure(work: Path, crates: int, unrelated: list[int], repeat: int = 1, addon: Path = ROOT / "addon") -> dict:
    """{(unrelated, crates, command): [(seconds, MB)...]} for each size of unrelated content and of lockfile."""
    reg, picked = synthetic_registry(crates)
    results: dict[tuple[int, int, str], list[tuple[float, float]]] = {}
    with UpstreamServer(reg, name="synthetic") as server:
        upstreams = [{"name": "synthetic", "url": server.url}]
        for count in unrelated:
            base = work / f"unrelated-{count}"
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            filled = base / "filled"
            fill(filled, count)
            for size in (SMALL, crates):
                lockfile = write_lockfile(base / f"lock-{size}" / "Cargo.lock", picked[:size])
                for _ in range(repeat):
                    source, target = base / "source", base / "target"
                    for folder in (source, target):
                        shutil.rmtree(folder, ignore_errors=True)
                    shutil.copytree(filled, source)
                    config = write_proxies(base / "source.yaml", upstreams, source, size_limit="50GB")
                    config_target = write_proxies(base / "target.yaml", upstreams, target, size_limit="50GB")
                    bundle = base / "lock.bundle"
                    runs = [("stage", config, ("stage", str(lockfile))),
                            ("export", config, ("export", str(bundle), "--lockfile", str(lockfile))),
                            ("import", config_target, ("import", str(bundle)))]
                    for command, cfg, args in runs:
                        seconds, mb, _ = measured(cfg, *args, addon=addon)
                        results.setdefault((count, size, command), []).append((seconds, mb))
                    bundle.unlink(missing_ok=True)
            shutil.rmtree(base, ignore_errors=True)
    return results


def run(bench) -> Section:
    crates = 1_000 if bench.quick else CRATES
    unrelated = [10_000, 100_000] if not bench.quick else [1_000, 10_000]
    section = Section("bundles-scale", f"14. stage, export and import of a {crates}-crate lockfile in a large cache", f"""
A synthetic registry of {crates} made-up crates (1–30 versions each, a few dependencies per index line; .crate
files of 1–6 KB) on loopback; a lockfile naming one version of each. The source cache first holds
{' or '.join(f'{n:,}'.replace(',', ' ') for n in unrelated)} unrelated index entries. Then, each as its own
`python -m cratecache` process under `/usr/bin/time -v`: `stage` of the lockfile into it, `export --lockfile` of
it to a bundle, `import` of the bundle into an empty cache. The same with a {SMALL}-crate lockfile gives what the
commands take anyway: the difference is what the {crates} crates add. {bench.reps}.""")
    addon = Path(bench.addon_script).parent  # the snapshot measured (or --addon's)
    results = measure(bench.work / "bundles-scale", crates, unrelated, bench.repeat, addon)
    for (count, size, command), samples in sorted(results.items()):
        config = f"{command}, {size} crates, {count} unrelated"
        for seconds, mb in samples:
            section.figure(config, "wall time", "s").samples.append(seconds)
            section.figure(config, "peak RSS", "MB").samples.append(mb)
    big, small = unrelated[-1], unrelated[0]
    for command in ("stage", "export", "import"):
        rss = section.figure(f"{command}, {crates} crates, {big} unrelated", "peak RSS", "MB")
        base = section.figure(f"{command}, {SMALL} crates, {big} unrelated", "peak RSS", "MB")
        added = section.figure(f"{command}, {crates} vs {SMALL} crates, {big} unrelated", "added peak RSS", "MB")
        added.samples.extend(r - b for r, b in zip(rss.samples, base.samples, strict=True))
        section.checks.append(Check(f"{command}: peak RSS the {crates} crates add", added, None, 100))
        section.checks.append(Check(f"{command} time with {big} vs {small} unrelated entries",
                                    section.figure(f"{command}, {crates} crates, {big} unrelated", "wall time", "s"),
                                    section.figure(f"{command}, {crates} crates, {small} unrelated", "wall time", "s"),
                                    1.10 if command == "export" else None))
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crates", type=int, default=CRATES)
    parser.add_argument("--unrelated", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--addon", type=Path, default=ROOT / "addon", help="the addon folder measured")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bundles-scale-"))
    try:
        results = measure(work, args.crates, [int(n) for n in args.unrelated.split(",")], args.repeat,
                          args.addon.resolve())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for (count, size, command), samples in sorted(results.items()):
        shown = ", ".join(f"{s:.2f} s {mb:.0f} MB" for s, mb in samples)
        print(f"{command:6} {size:6} crates {count:7} unrelated: {shown}")
    print(json.dumps({f"{c}/{s}/{m}": v for (c, s, m), v in results.items()}))


if __name__ == "__main__":
    main()
