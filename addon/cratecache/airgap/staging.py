"""Fill the cache with exactly what lockfiles and toolchains need, through the proxy's own resolution path.

Every object goes through `Resolver` (priority order, auth, timeouts, checksum verification,
leases shared with running proxies); a crate whose bytes differ from its lockfile checksum fails, and a
toolchain component is verified against its manifest. A staged toolchain's manifest is also kept under the
other names a pinned client asks for (`channel-rust-1.95.0.toml`, `-1.95.toml`, the dated one), so that
`rustup toolchain install 1.95` works offline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from ..config import Registry
from ..protocols import dist
from ..protocols.lockfile import Plan
from ..resolver import ResolveError, Resolver
from ..storage import Entry

logger = logging.getLogger(__name__)


@dataclass
class StageResult:
    fetched: int = 0
    cached: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, progress: Progress, what: str, reason: str) -> None:
        self.failed.append((what, reason))
        progress.step(what, f"FAILED: {reason}")

    def served(self, progress: Progress, what: str, served) -> None:
        """One object staged: already cached, or fetched (and from where)."""
        if served.state == "hit":
            self.cached += 1
            progress.step(what, "already cached")
        else:
            self.fetched += 1
            self.bytes += served.entry.meta.size
            progress.step(what, f"fetched from {served.source} ({_human(served.entry.meta.size)})",
                          served.entry.meta.size)


class Progress:
    """A progress bar on a terminal; one plain line per object otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total, self.done, self.bytes = total, 0, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def step(self, what: str, outcome: str, size: int = 0) -> None:
        self.done += 1
        self.bytes += size
        if self.tty:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files "
                              f"{_human(self.bytes)} fetched  {what[:40]:<40}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.done}/{self.total} {what}: {outcome}\n")
        self.stream.flush()


async def stage(resolver: Resolver, wanted: Plan, progress: Progress, concurrency: int = 8) -> StageResult:
    result = StageResult()
    registries = {r.name: r for r in resolver.settings.registries}

    async def one(reg: Registry, name: str, version: str, checksum: str | None) -> None:
        what = f"{name} {version}"
        if name in unindexed:  # one failure per crate: its versions fail for the index's reason
            return result.fail(progress, what, unindexed[name])
        try:
            served = await resolver.crate(reg, name, version)
        except ResolveError as e:
            return result.fail(progress, what, str(e))
        if checksum and served.entry.meta.sha256 != checksum:
            result.fail(progress, what, f"lockfile checksum {checksum[:16]}… differs from the registry's "
                                        f"{served.entry.meta.sha256[:16]}…")
        else:
            result.served(progress, what, served)

    for reg_name, crates in wanted.crates.items():
        reg = registries[reg_name]
        try:
            await resolver.config(reg)
        except ResolveError as e:
            result.failed.append((f"{reg_name} config.json", str(e)))
        unindexed: dict[str, str] = {}
        await _each(((name,) for name in crates), functools.partial(_index, resolver, reg, unindexed=unindexed),
                    concurrency)
        await _each(((name, version, checksum) for name, versions in crates.items()
                     for version, checksum in versions.items()), functools.partial(one, reg), concurrency)
    return result


async def _each(items: Iterable[tuple], work: Callable[..., Awaitable], concurrency: int) -> None:
    """`work(*item)` for every item, `concurrency` at a time, by as many tasks (not one per item: a lockfile may name
    thousands of crates)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # shared: each item goes to the first worker free
            await work(*item)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def _index(resolver: Resolver, reg: Registry, name: str, unindexed: dict[str, str]):
    try:
        await resolver.index(reg, name.lower())
    except ResolveError as e:
        unindexed[name] = str(e)


@dataclass(frozen=True)
class ToolchainPlan:
    """What to stage: toolchains (rustup's names) with a profile, extra components and targets, for the listed
    target triples (hosts among them get the whole toolchain; the others a rust-std for each host)."""
    requests: tuple[dist.ToolchainRequest, ...]
    triples: tuple[str, ...]
    default_host: str  # when no listed triple is a host


async def stage_toolchains(resolver: Resolver, wanted: ToolchainPlan, progress: Progress,
                           concurrency: int = 4) -> StageResult:
    """Each toolchain's manifest, then every file rustup downloads for it on each host, then the aliases. The
    manifests are read first, so that the progress counts every step against one total from the first line."""
    result, src = StageResult(), resolver.settings.toolchains
    limit = asyncio.Semaphore(concurrency)
    steps: list[Callable[[], None]] = []  # what to report, in order, once the total is known
    files: list[str] = []
    staged: dict[str, Entry] = {}  # manifest path -> what was staged under it
    aliases: dict[str, tuple[tuple[int, ...], Entry]] = {}

    async def file(path: str) -> None:
        async with limit:
            try:
                result.served(progress, path, await resolver.dist_file(src, dist.classify(path)))
            except ResolveError as e:
                result.fail(progress, path, str(e))

    for request in wanted.requests:
        path = dist.manifest_path(request.channel)
        try:
            served = await resolver.dist_file(src, dist.classify(path))
            manifest = await asyncio.to_thread(dist.parse_manifest, served.entry.body)
        except (ResolveError, ValueError) as e:
            steps.append(functools.partial(result.fail, progress, f"toolchain {request.channel}", str(e)))
            continue
        steps.append(functools.partial(result.served, progress, path, served))
        staged[path] = served.entry
        # Listed triples the toolchain runs on are hosts; the others (wasm32, embedded) are extra targets.
        hosts = [t for t in wanted.triples if _is_host(manifest, t)] or [wanted.default_host]
        cross = tuple(dict.fromkeys([t for t in wanted.triples if t not in hosts] + list(request.targets)))
        wanted_files: dict[str, None] = {}
        for host in hosts:
            try:
                wanted_files |= dict.fromkeys(dist.component_files(manifest, host, cross, request.profile,
                                                                   request.components))
            except ValueError as e:
                steps.append(functools.partial(result.fail, progress, f"toolchain {request.channel} for {host}", str(e)))
        files += wanted_files
        for alias in dist.alias_paths(manifest):
            if alias not in aliases or aliases[alias][0] < dist.release_key(manifest):
                aliases[alias] = (dist.release_key(manifest), served.entry)
    progress.total = len(steps) + len(files)
    for step in steps:
        step()
    await asyncio.gather(*(file(p) for p in files))
    for alias, (_, entry) in aliases.items():
        if alias not in staged:  # a name staged itself keeps what its upstream gave
            await resolver.store_manifest(alias, entry)
    return result


def _is_host(manifest: dist.Manifest, triple: str) -> bool:
    entry = (manifest.pkg["rust"].get("target") or {}).get(triple)
    return isinstance(entry, dict) and bool(entry.get("available"))


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
