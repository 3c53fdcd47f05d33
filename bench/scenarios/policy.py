"""Issue 29's speed target: a warm `cargo generate-lockfile && cargo fetch` through cargo-cache with the
supply-chain policy vs the same addon without one (≤ 1.05×).

Both proxies read `/policy-index/` of the bench upstream, where every index line carries an old `pubtime`, and
each has its own cache, filled by one untimed run. The policy: the whole RustSec snapshot loaded, `vulnerable: warn`,
`informational: warn` (the bench registry's Debian versions fall in real vulnerable ranges), and a quarantine of
3 days: every version of every index file is decided and matched against the advisories, none is hidden. The two
runs alternate within each repetition (the order rotates).

Before timing, the scenario checks that the policy really ran: the policy proxy's log says the database loaded
with all its advisories and holds at least one `warn:RUSTSEC-` decision; otherwise the section fails.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from tests.fixtures.rustsec import SNAPSHOT

from .. import cargo
from ..context import UPSTREAM_NAME, Bench, index_url
from ..procs import Mitmdump
from ..report import Check, Section
from .cargo_fetch import PACKAGES, _rotate, _timed

WITH, WITHOUT = "cargo-cache with the policy", "cargo-cache without a policy"
LIMIT = 1.05
DATABASE = Path(os.environ.get("CARGO_CACHE_BENCH_RUSTSEC", SNAPSHOT))  # the repository's copy of the snapshot
ADVISORIES = 1205  # in the snapshot
POLICY = {
    "quarantine": {"min_age": "3d"},
    "advisories": {"database": str(DATABASE), "vulnerable": "warn", "informational": "warn"},
}

_LOADED = re.compile(r"advisory database \S+ loaded: (\d+) advisories")
_DECISION = re.compile(r"cargo-cache policy: (?:would-)?(warn|hide|deny):(\S+) \(registry [^)]+\): (\S+) (\S+):")


def run(bench: Bench) -> Section:
    section = Section("policy", "Issue 29: the supply-chain policy on a warm cargo generate-lockfile && cargo fetch",
                      _method(bench))
    template = cargo.project_template(bench.scratch / "template")
    work = bench.scratch / "cargo-run"
    upstream = [{"name": UPSTREAM_NAME, "url": bench.nginx.policy_index_url}]
    policed = bench.addon("policy-with", bench.fresh_dir("caches", "policy-with"), upstream, policy=POLICY).start()
    bare = bench.addon("policy-without", bench.fresh_dir("caches", "policy-without"), upstream).start()
    try:
        proxies = {WITH: policed, WITHOUT: bare}
        runs = {name: (lambda p=proxy: cargo.fetch(template, work, PACKAGES, proxy_url=p.url, ca=p.ca_cert))
                for name, proxy in proxies.items()}
        for run_ in runs.values():  # fills each cache; warms nginx, the proxies and the page cache
            run_()
        decisions = _sanity(policed.log())
        for rep in range(bench.repeat):
            for name in _rotate(list(runs), rep):
                _timed(section, name, runs[name], proxies[name])
        names = sorted({c.name.lower() for c in bench.real_crates})
        labelled = {name: _labelled(proxy, names) for name, proxy in proxies.items()}
    finally:
        bench.stop(policed)
        bench.stop(bare)
    _report(section, decisions, labelled, len(names))
    return section


def _method(bench: Bench) -> str:
    return (f"A project whose `Cargo.lock` holds all {PACKAGES} crates of the registry; each timed run is "
            "`cargo generate-lockfile && cargo fetch` in a fresh copy of the project with a fresh `CARGO_HOME` "
            "(as in section 1). Two cargo-cache proxies, each with its own cache filled by one untimed run, read "
            "the same nginx index in which every line carries `\"pubtime\": \"2020-01-01T00:00:00Z\"`. One has "
            f"`policy: {{quarantine: {{min_age: 3d}}, advisories: {{database: <the whole RustSec snapshot, "
            f"{ADVISORIES} advisories>, vulnerable: warn, informational: warn}}}}` (malicious: deny, the default); "
            "the other no policy. So every version of every index file is decided and matched against the "
            f"advisories, and nothing is hidden. {bench.reps}; the two alternate, the order rotating between "
            "repetitions.")


def _sanity(log: str) -> list[tuple[str, str, str, str]]:
    """The policy proxy's decisions (action, reason, crate, version) logged so far; RuntimeError (the section
    fails) unless the whole database loaded and at least one advisory was matched."""
    loaded = [int(n) for n in _LOADED.findall(log)]
    if ADVISORIES not in loaded:
        raise RuntimeError(f"the policy proxy did not log `advisory database … loaded: {ADVISORIES} advisories` "
                           f"(found {loaded}): the policy did not run")
    decisions = _DECISION.findall(log)
    if not any(action == "warn" and reason.startswith("RUSTSEC-") for action, reason, _, _ in decisions):
        raise RuntimeError("the policy proxy logged no `warn:RUSTSEC-` decision: the advisories were not matched")
    return decisions


def _labelled(proxy: Mitmdump, names: list[str]) -> dict[str, int]:
    """Index files of `names` fetched once more through `proxy` (untimed): how many carry `X-Cargo-Cache-Policy`,
    and how many labels (action:reason) they carry in all."""
    files = labels = 0
    with httpx.Client(proxy=proxy.url, verify=str(proxy.ca_cert), timeout=30) as client:
        for name in names:
            response = client.get(index_url(name))
            response.raise_for_status()
            if value := response.headers.get("x-cargo-cache-policy"):
                files += 1
                labels += len(value.split(", "))
    return {"files": files, "labels": labels}


def _report(section: Section, decisions, labelled: dict[str, dict[str, int]], index_files: int) -> None:
    policed, bare = (section.figure(n, "wall time", "s") for n in (WITH, WITHOUT))
    section.checks.append(Check("with the policy vs without", policed, bare, LIMIT))
    ratios = [f"{a / b:.2f}×" for a, b in zip(policed.samples, bare.samples, strict=True)]
    section.notes.append(f"With / without per repetition: {', '.join(ratios)}.")
    crates = {crate for _, _, crate, _ in decisions}
    by_label: dict[str, int] = {}
    for action, reason, _, _ in decisions:
        key = f"{action}:{'RUSTSEC' if reason.startswith('RUSTSEC-') else reason}"
        by_label[key] = by_label.get(key, 0) + 1
    section.notes.append(
        f"Decisions: {labelled[WITH]['files']} of the {index_files} index files carried `X-Cargo-Cache-Policy` "
        f"({labelled[WITH]['labels']} labels; {labelled[WITHOUT]['files']} without a policy); the policy proxy's "
        f"log named {len(decisions)} decisions on {len(crates)} crates "
        f"({', '.join(f'{n} {k}' for k, n in sorted(by_label.items()))}), each logged once an hour, so all of "
        "them during the untimed run. No version was hidden: every line is years old.")
    policed_cpu, bare_cpu = (section.figure(n, "mitmdump CPU", "s") for n in (WITH, WITHOUT))
    section.notes.append(
        f"mitmdump CPU per run: {policed_cpu.median:.2f} s with the policy, {bare_cpu.median:.2f} s without "
        f"({policed_cpu.median / bare_cpu.median:.2f}×).")
