"""The policy as the status page shows it (pure): what each registry's policy is, the advisory databases (their
age and size), the decisions counted, and the last ones logged."""

from __future__ import annotations

from ..config import Settings
from .databases import Databases
from .journal import Journal


def snapshot(settings: Settings, databases: Databases, journal: Journal) -> dict:
    registries = []
    for reg in settings.registries:
        policy = reg.policy
        if policy.active:
            registries.append({"name": reg.name, "dry_run": policy.dry_run, "min_age": policy.quarantine.min_age,
                               "pinned": policy.quarantine.pinned, "database": policy.advisories.database,
                               "rules": len(policy.rules)})
    loaded = databases.loaded
    paths = dict.fromkeys([*(r["database"] for r in registries if r["database"]), *loaded, *databases.errors])
    shown = []
    for path in paths:
        database = loaded.get(path)
        shown.append({"path": path, "advisories": database.count if database else None,
                      "newest": database.newest if database else None,
                      "loaded_at": databases.loaded_at.get(path),
                      "skipped": [list(s) for s in database.skipped] if database else [],
                      "error": databases.errors.get(path)})
    return {
        "registries": registries,
        "databases": shown,
        "counts": [{"action": a, "reason": r, "n": n} for (a, r), n in sorted(journal.counts.items())],
        "last": [{"time": d.at, "registry": d.registry, "crate": d.crate, "version": d.version, "decision": d.label,
                  "message": d.message} for d in journal.last],
    }
