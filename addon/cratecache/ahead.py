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
"""

from __future__ import annotations

import json

from . import sparse

RECENT_VERSIONS = 32  # the newest lines of an index file whose dependencies count (bounds the parsing)


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
