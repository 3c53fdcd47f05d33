"""What is in the cache: listing, totals and purging (for the command line)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from ..airgap.bundle import key_fields
from ..protocols import dist, sparse
from ..storage import Meta, Storage
from ..storage.local import KINDS
from ..storage.recovery import set_aside

CRATE_KINDS = ("config", "index", "crate")
SPELLINGS = 10_000  # crate names whose spelling a listing remembers (then it forgets them all and reads again)

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Row:
    key: str
    kind: str
    registry: str | None
    name: str | None
    version: str | None
    size: int
    upstream: str
    age: float  # seconds since stored


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' -> seconds. Raises ValueError."""
    m = _AGE.match(text.strip().lower())
    if not m:
        raise ValueError(f"expected an age such as 30d, 12h or 90m, got {text!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


async def iter_rows(store: Storage, now: float, kinds: tuple[str, ...] = KINDS, real_names: bool = False
                    ) -> AsyncIterator[Row]:
    """Every cached entry of `kinds`, in key order, read a page at a time (`Storage.entry_pages`): the first rows come
    before the rest of the table is read, and memory holds a page, not the listing. Keys hold crate names in
    lowercase; with `real_names`, names are given as the crate's index file spells them (`Inflector`), which costs
    reading each crate's index file (remembered for the last `SPELLINGS` names)."""
    spelled: dict[tuple[str, str], str] = {}
    async for page in store.entry_pages():
        found = []
        for key, meta in page:
            fields = key_fields(key)
            if fields["kind"] in kinds:
                found.append(Row(key, fields["kind"], fields["registry"], fields["name"], fields["version"],
                                 meta.size, meta.upstream, max(0.0, now - meta.stored_at)))
        if real_names:
            for registry, name in dict.fromkeys((r.registry, r.name) for r in found if r.name and r.kind in CRATE_KINDS):
                if (registry, name) not in spelled:
                    if len(spelled) >= SPELLINGS:
                        spelled.clear()
                    index = await store.latest(f"index/{registry}/{name}")
                    spelled[(registry, name)] = spelling(index.body, name) if index is not None else name
            found = [replace(r, name=spelled.get((r.registry, r.name), r.name)) for r in found]
        for row in found:
            yield row


async def rows(store: Storage, now: float, kinds: tuple[str, ...] = KINDS, real_names: bool = False) -> list[Row]:
    """Every cached entry of `kinds` (`iter_rows`, as a list)."""
    return [row async for row in iter_rows(store, now, kinds, real_names)]


def spelling(index_body: bytes, name: str) -> str:
    """How an index file spells crate `name` (any case), or `name` itself: from the first line that names it (every
    line of a crate's index file does, alike); lines are read only until then (a listing asks for each crate)."""
    for line in index_body.splitlines():
        spelled = (sparse.line_object(line) or {}).get("name")
        if isinstance(spelled, str) and spelled.lower() == name.lower():
            return spelled
    return name


def same_crate(a: str, b: str) -> bool:
    """Cargo treats names that differ only in case or in '-' against '_' as one crate."""
    return a.lower().replace("_", "-") == b.lower().replace("_", "-")


async def totals(store: Storage, now: float) -> dict:
    summed = await store.totals()
    by_kind = {kind: dict(zip(("entries", "bytes"), summed.get(kind, (0, 0)), strict=True)) for kind in KINDS}
    counts = await store.counts()
    requests = {}
    for kind in KINDS:
        hits = counts.get(f"{kind}:hit", 0)
        served = sum(n for k, n in counts.items() if k.startswith(f"{kind}:"))
        requests[kind] = {"requests": served, "hits": hits, "hit_ratio": hits / served if served else None,
                          "by_state": {k.split(":", 1)[1]: n for k, n in counts.items() if k.startswith(f"{kind}:")}}
    figures = await store.figures()
    damaged = [{"folder": str(a.folder), "when": a.when, "reason": a.reason, "files": a.files, "bytes": a.bytes}
               for a in set_aside(store.directory)]
    return {"kinds": by_kind, "disk_bytes": figures["bytes"], "requests": requests, "damaged": damaged}


async def purge(store: Storage, now: float, crate: str | None = None, older_than: float | None = None,
          everything: bool = False, toolchain: str | None = None) -> list[str]:
    """Remove entries by crate name (its index file and every version), by toolchain, by age, or all. Returns
    the keys. A page of the listing is read and its matching entries deleted, then the next page (`Storage.
    remove_where`): memory holds a page, the keys removed and the digests kept, and requests' store calls run between
    the pages."""
    if everything:
        removed = [row.key async for row in iter_rows(store, now)]
        await store.clear()
        return removed
    if toolchain is not None:
        return await _purge_toolchain(store, toolchain)

    def chosen(key: str, meta: Meta) -> bool:
        fields = key_fields(key)
        name = fields["name"]
        by_name = crate is not None and fields["kind"] in CRATE_KINDS and name is not None and same_crate(name, crate)
        return by_name or (older_than is not None and fields["kind"] in KINDS and now - meta.stored_at > older_than)

    return await store.remove_where(chosen)


async def _purge_toolchain(store: Storage, toolchain: str) -> list[str]:
    """A toolchain's manifest, the other names it is held under (same bytes: staging's aliases), and each of its
    components that no other held manifest lists."""
    path = dist.manifest_path(toolchain)  # ValueError for a name rustup would not take
    target = await store.latest(f"manifest/{path}")
    if target is None:
        return []
    manifests = [(key, meta) for key, meta in await store.entries()
                 if key.startswith("manifest/") and not key.endswith(".asc")]
    gone = [key for key, meta in manifests if meta.sha256 == target.meta.sha256]
    kept: set[str] = set()
    for key, _meta in manifests:
        if key not in gone and (entry := await store.latest(key)) is not None:
            kept |= set(dist.file_hashes(dist.parse_manifest(entry.body)))
    listed = set(dist.file_hashes(dist.parse_manifest(target.body)))
    gone += [f"component/{file}" for file in sorted(listed - kept) if await store.meta(f"component/{file}")]
    internal = [key for key in await store.keys("dist-") for name in gone
                if name.startswith("manifest/") and key.endswith("/" + name.split("/", 1)[1])]
    for key in gone + internal:
        await store.delete(key)
    await store.collect_garbage()
    return gone
