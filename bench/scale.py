"""The crates.io-scale cache (issue 33): N entries built once, through the store's own API, and reused between runs.

    .venv/bin/python -m bench.scale [--entries 1000000] [--folder DIR]

What it holds (deterministic for a given `entries` and `seed`): `entries // 5` index files of made-up crate names,
each with 1–30 versions and lines sized like crates.io's (a few hundred bytes for a crate without dependencies, a few
KB for one with many; the file a few hundred bytes to a few KB, a long tail to ~100 KB), and the remaining 4/5 as
small `.crate` files of versions those index files list (most a few KB; a tail above diskcache's 32 KB, which it keeps
as files). Every entry is stored `now - age` ago, the ages spread evenly over the past `AGE_SPAN` (so `purge
--older-than` can take a known share), and confirmed (`checked_at`) at build time.

Written with `LocalStore.put_entry` in transactions of `BATCH` entries (`LocalStore.transaction`, what the store
thread's batches use): the same rows and files the proxy writes, no private layout. A stamp (`scale.json`) records the
parameters and when the build finished; a later run with the same parameters reuses the folder after counting its
entries (`ensure`), and refills only what a destructive scenario (a purge, an eviction) took away.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.harness import ROOT

logger = logging.getLogger(__name__)

LAYOUT = 2  # bump when what the builder writes changes: older folders are rebuilt
SEED = 33
REGISTRY = "crates-io"
UPSTREAM = "nginx"
AGE_SPAN = 365 * 86400.0  # entries were stored over the past year
BATCH = 1000  # entries per transaction
MAX_VERSIONS = 30
DEFAULT_FOLDER = ROOT / ".cache" / "bench-scale"  # git-ignored; outside BENCHMARKS.tmp/, which each run empties
_POOL = random.Random(SEED).randbytes(1 << 20)  # filler of the crates' bytes (each starts with its own key: unique)


@dataclass(frozen=True)
class Spec:
    entries: int
    seed: int = SEED
    layout: int = LAYOUT

    @property
    def index_files(self) -> int:
        return self.entries // 5

    @property
    def crates(self) -> int:
        return self.entries - self.index_files


@dataclass(frozen=True)
class Item:
    key: str
    body: bytes
    age: float  # seconds before the build's time


@dataclass
class Built:
    folder: Path
    spec: Spec
    built_at: float  # the build's clock: entries were stored at `built_at - age`
    seconds: float  # this run's time to make the folder ready (0.0 when reused as it was)
    written: int  # entries this run wrote (0 when reused)
    names: list[str]

    def cutoff(self, share: float, now: float) -> float:
        """The age (seconds, as `purge --older-than` takes it at `now`) beyond which about `share` of the entries
        lie."""
        return (now - self.built_at) + AGE_SPAN * (1.0 - share)


# -- what the cache holds ---------------------------------------------------------------------------------------


def crate_names(count: int, seed: int) -> list[str]:
    rng, names = random.Random(seed), set()
    alphabet = string.ascii_lowercase + string.digits + "-_"
    while len(names) < count:
        first = rng.choice(string.ascii_lowercase)
        rest = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 18)))
        names.add((first + rest).rstrip("-_"))
    return sorted(names)


def version_count(rng: random.Random) -> int:
    """1–30, most crates few (crates.io: median ~4), a tail to the cap."""
    return min(MAX_VERSIONS, 1 + int(rng.expovariate(1 / 5.0)))


def dependency_count(rng: random.Random) -> int:
    """0–25 per version, most crates a handful (each adds ~130 bytes to a line)."""
    return min(25, int(rng.paretovariate(1.3)) - 1 + rng.randint(0, 2))


def index_body(name: str, versions: int, rng: random.Random, cksums: dict[str, str] | None = None) -> bytes:
    """`cksums`: the SHA-256 of the versions whose `.crate` is cached (the others get a random one)."""
    deps = dependency_count(rng)
    features = rng.randint(0, 6)
    lines = []
    for i in range(versions):
        lines.append(json.dumps({
            "name": name, "vers": version_name(i),
            "deps": [{"name": f"dep{j}", "req": f"^{rng.randint(0, 3)}.{rng.randint(0, 20)}", "features": [],
                      "optional": j % 4 == 3, "default_features": True, "target": None, "kind": "normal",
                      "registry": None} for j in range(deps)],
            "cksum": (cksums or {}).get(version_name(i)) or "%064x" % rng.getrandbits(256),
            "features": {f"feature{j}": [f"dep{j}"] for j in range(features)},
            "yanked": rng.random() < 0.03, "links": None, "v": 2, "rust_version": "1.70",
        }, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def version_name(i: int) -> str:
    return f"0.{i // 10}.{i % 10}"


def crate_size(rng: random.Random) -> int:
    """Most a few KB (log-normal, median ~4 KB), about 3 % above 32 KB (kept as files), none above 256 KB."""
    return max(300, min(256 * 1024, int(rng.lognormvariate(8.3, 1.0))))


def crate_body(key: str, size: int, rng: random.Random) -> bytes:
    head = key.encode() + b"\0"
    start = rng.randrange(0, len(_POOL) - size)
    return head + _POOL[start:start + max(0, size - len(head))]


def items(spec: Spec) -> Iterator[Item]:
    """Every entry of the cache, in a fixed order: each index file followed by its crates."""
    names = crate_names(spec.index_files, spec.seed)
    rng = random.Random(spec.seed)
    versions = [version_count(rng) for _ in names]
    crates = _crates_per_name(versions, spec.crates)
    for name, count, with_crate in zip(names, versions, crates, strict=True):
        cached = {}  # the newest versions' .crate files; the index file lists their real checksums
        for i in range(with_crate):
            version = version_name(count - 1 - i)
            key = f"crate/{REGISTRY}/{name}/{version}"
            cached[version] = Item(key, crate_body(key, crate_size(rng), rng), rng.random() * AGE_SPAN)
        cksums = {version: hashlib.sha256(item.body).hexdigest() for version, item in cached.items()}
        yield Item(f"index/{REGISTRY}/{name}", index_body(name, count, rng, cksums), rng.random() * AGE_SPAN)
        yield from cached.values()


def _crates_per_name(versions: list[int], total: int) -> list[int]:
    """How many of each name's versions have their `.crate` cached: `total` in all, proportional to the versions
    (never more than a name has); what the versions cannot hold is spread over names that still have room."""
    listed = sum(versions)
    share = [min(v, v * total // listed) for v in versions] if listed else []
    left = total - sum(share)
    while left > 0 and any(s < v for s, v in zip(share, versions, strict=True)):
        for i, v in enumerate(versions):
            if left and share[i] < v:
                share[i] += 1
                left -= 1
    if left > 0:
        raise ValueError(f"{total} crates do not fit in {listed} versions")
    return share


# -- building ---------------------------------------------------------------------------------------------------


def stamp_path(folder: Path) -> Path:
    return folder / "scale.json"


def read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads(stamp_path(folder).read_text())
    except (OSError, ValueError):
        return None


def ensure(folder: Path, spec: Spec, progress: Callable[[int, float], None] | None = None) -> Built:
    """The folder holding `spec`'s cache: reused if its stamp matches and no entry is missing; otherwise the
    missing entries are written (all of them in a new folder). A folder of other parameters is emptied first."""
    from cratecache.storage.local import LocalStore

    began = time.monotonic()
    stamp = read_stamp(folder)
    if stamp is not None and stamp.get("spec") != asdict(spec):
        logger.warning("bench.scale: %s holds %s, not %s: rebuilding it", folder, stamp.get("spec"), asdict(spec))
        _empty(folder)
        stamp = None
    names = crate_names(spec.index_files, spec.seed)
    store = LocalStore(folder, 1 << 50, hot_bytes=0)
    try:
        if stamp is not None and store.count("index/") + store.count("crate/") == spec.entries:
            return Built(folder, spec, stamp["built_at"], 0.0, 0, names)
        stamp_path(folder).unlink(missing_ok=True)  # not whole until this run ends
        built_at = stamp["built_at"] if stamp is not None else time.time()
        written = _fill(store, spec, built_at, skip_present=stamp is not None or store.count("") > 0,
                        progress=progress)
    finally:
        store.close()
    stamp_path(folder).write_text(json.dumps({"spec": asdict(spec), "built_at": built_at, "written": written,
                                              "seconds": time.monotonic() - began}))
    return Built(folder, spec, built_at, time.monotonic() - began, written, names)


def _fill(store, spec: Spec, built_at: float, skip_present: bool,
          progress: Callable[[int, float], None] | None) -> int:
    from cratecache.storage.entries import Meta

    began, written, batch = time.monotonic(), 0, []
    present = set(store.keys()) if skip_present else set()  # a refill: what is there stays

    def flush() -> None:
        with store.transaction():
            for key, meta, body in batch:
                store.put_entry(key, meta, body)
        batch.clear()

    for item in items(spec):
        if item.key in present:
            continue
        at = built_at - item.age
        meta = Meta(hashlib.sha256(item.body).hexdigest(), len(item.body), UPSTREAM, at, built_at)
        batch.append((item.key, meta, item.body))
        written += 1
        if len(batch) >= BATCH:
            flush()
            if progress is not None:
                progress(written, time.monotonic() - began)
    if batch:
        flush()
    return written


def _empty(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=None, help=f"default: {DEFAULT_FOLDER}/<entries>")
    parser.add_argument("--addon", type=Path, default=ROOT / "addon", help="whose cratecache.storage writes it")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.addon.resolve()))
    folder = args.folder or DEFAULT_FOLDER / str(args.entries)
    last = [0.0]

    def progress(done: int, seconds: float) -> None:
        if seconds - last[0] >= 10:
            last[0] = seconds
            print(f"bench.scale: {done} entries in {seconds:.0f} s ({done / seconds:.0f}/s)", flush=True)

    built = ensure(folder, Spec(args.entries), progress)
    rate = f" ({built.written / built.seconds:.0f} entries/s)" if built.written else ""
    print(f"bench.scale: {folder}: {args.entries} entries, {built.written} written in {built.seconds:.1f} s{rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
