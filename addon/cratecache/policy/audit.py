"""`audit`: which locked crates the policy would hide or deny, before a build tries them.

Each registry package of the lockfiles is decided on as the proxy would serve it now: its index file through the
resolver (from the cache, or fetched as the proxy would), the same kept publish times, advisories and rules. A
version the policy would deny fails the audit (exit 1): Cargo could not download it through the proxy. A hidden
one is listed: a fresh resolve would not pick it, but the lockfile that pins it still downloads it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..engine import ResolveError
from ..protocols.lockfile import Plan
from .gate import PolicyGate


@dataclass
class Audit:
    lines: list[str] = field(default_factory=list)
    denied: int = 0
    hidden: int = 0
    warned: int = 0
    failed: int = 0
    checked: int = 0


async def audit(gate: PolicyGate, registries: dict, wanted: Plan, concurrency: int = 8) -> Audit:
    result, limit = Audit(), asyncio.Semaphore(concurrency)
    found: dict[tuple[str, str, str], tuple[str, str]] = {}  # (registry, name, version) -> (status, text)

    async def one(reg, name: str, version: str) -> None:
        async with limit:
            try:
                verdict = await gate.verdict(reg, name, version)
            except ResolveError as e:
                found[(reg.name, name, version)] = ("FAILED", f"cannot be decided on: {e}")
                return
        if verdict is None:
            found[(reg.name, name, version)] = ("FAILED", "not listed in the registry's index")
        elif verdict.findings:
            dry = " (dry_run: served anyway)" if reg.policy.dry_run else ""
            why = "; ".join(f.message.removeprefix("cargo-cache policy: ") for f in verdict.findings)
            found[(reg.name, name, version)] = (verdict.action.upper(), why + dry)

    await asyncio.gather(*(one(registries[reg_name], name, version)
                           for reg_name, crates in wanted.crates.items()
                           for name, versions in crates.items() for version in versions))
    result.checked = wanted.count()
    for (reg_name, name, version), (status, text) in sorted(found.items()):
        result.lines.append(f"{status} {name} {version} ({reg_name}): {text}")
        if status == "DENY" and not registries[reg_name].policy.dry_run:
            result.denied += 1
        elif status in ("DENY", "HIDE"):
            result.hidden += 1
        elif status == "WARN":
            result.warned += 1
        else:
            result.failed += 1
    return result
