"""Revalidating ahead: which index files to confirm with an upstream before Cargo asks for them (pure).

Cargo resolves a dependency graph level by level: it reads the index files of one level, then asks for those of
the dependencies they list. When every index file is past its TTL (the common case on a CI fleet: the last build
was longer ago than `index_ttl`), each level waits for its own revalidations, one upstream round trip per level.
So when a request finds an index file expired, the resolver also starts, at once and concurrently, the
revalidation of every expired index file the cache holds that the first one's cached copy lists as a dependency,
and theirs in turn. By the time Cargo asks for them they have been confirmed by an upstream after they expired,
so the freshness guarantee is unchanged; a request that arrives while one is in flight shares it.

Only files already in the cache are revalidated ahead (some client asked for them before), never fetched for
the first time, and only the dependencies Cargo itself would look up: normal and build dependencies (Cargo never
resolves a dependency's dev-dependencies) in this registry, of the newest versions of each file.

A new Cargo session starts with config.json. When the cached config.json has expired too, the index files
clients of this process asked for within the last IN_USE_SECONDS (`InUse`) are revalidated ahead as well, while
config.json is fetched: a CI build after a pause finds the files it used last time confirmed, instead of waiting
for the first level of its graph. Files revalidated ahead but never asked for again leave `InUse` with time, so
only what is in use is kept fresh this way.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from . import sparse

RECENT_VERSIONS = 32  # the newest lines of an index file whose dependencies count (bounds the parsing)
IN_USE_SECONDS = 3600.0  # an index file a client asked for within this long counts as in use
IN_USE_KEPT = 4096  # index files remembered per registry (the oldest asked are dropped first)


class InUse:
    """The index files clients asked for lately, by when they last asked (bounded, oldest dropped first)."""

    def __init__(self, kept: int = IN_USE_KEPT):
        self._asked: OrderedDict[str, float] = OrderedDict()
        self.kept = kept

    def asked(self, name: str, now: float) -> None:
        self._asked[name] = now
        self._asked.move_to_end(name)
        if len(self._asked) > self.kept:
            self._asked.popitem(last=False)

    def recent(self, now: float, window: float = IN_USE_SECONDS) -> list[str]:
        """Names asked for within `window` seconds of `now`, the most recently asked first."""
        names = []
        for name, when in reversed(self._asked.items()):
            if now - when >= window:
                break  # ordered by when they were asked: everything before is older still
            names.append(name)
        return names


def dependency_names(body: bytes, recent: int = RECENT_VERSIONS) -> set[str]:
    """The lower-case names of the crates the newest `recent` versions in an index file depend on (normal and
    build dependencies in the same registry; a renamed dependency by its `package` name). Lines that do not parse
    and names that are not crate names are skipped."""
    names: set[str] = set()
    lines = [line for line in body.splitlines() if line.strip()]
    for line in lines[-recent:] if recent else ():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        deps = obj.get("deps") if isinstance(obj, dict) else None
        for dep in deps if isinstance(deps, list) else ():
            if not isinstance(dep, dict) or dep.get("kind") == "dev" or dep.get("registry"):
                continue
            name = dep.get("package") or dep.get("name")
            if isinstance(name, str) and sparse.name_problem(name) is None:
                names.add(name.lower())
    return names
