"""The policy's decisions, as pure functions: one registry's policy, the advisories, a crate's versions with the
publish times the proxy keeps, and the clock in; a verdict per version out. No I/O.

Per version, in this order:
  1. `rules`, first match wins: `allow` ends the decision (it beats advisories and the quarantine); `deny`,
     `hide` and `warn` add a finding and the rest still applies (the strongest action wins).
  2. advisories of the crate that affect the version (minus `ignore`): malicious -> `advisories.malicious`,
     informational (unmaintained, unsound, notice) -> `advisories.informational`, else `advisories.vulnerable`.
  3. the quarantine: a version younger than `min_age` (by its kept publish time) is hidden until it is that old;
     with `pinned: deny` it is denied, i.e. its download is refused too. Exempt crates and versions skip it.

Actions: `warn` serves it (logged, counted, labelled); `hide` serves its index line with "yanked": true, so a fresh
resolve does not pick it, but a lockfile that pins it still downloads it; `deny` hides it and refuses its download.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config.policy import CrateMatch, Policy
from ..semver import Version, parse_version
from .advisories import Database

STRENGTH = {"allow": 0, "warn": 1, "hide": 2, "deny": 3}


@dataclass(frozen=True)
class Finding:
    """One reason a version is flagged or held back."""
    action: str  # warn | hide | deny
    reason: str  # what the header and the log name: "quarantine", "RUSTSEC-2023-0109", "rule"
    category: str  # the metrics label: quarantine | malicious | vulnerable | informational | rule
    message: str  # one line, the body of a refusal: "cargo-cache policy: coolcrate 1.1.0 is in quarantine until ..."

    @property
    def label(self) -> str:
        return f"{self.action}:{self.reason}"


@dataclass(frozen=True)
class Verdict:
    version: str
    findings: tuple[Finding, ...] = ()
    until: float | None = None  # when a quarantine ends: the verdict must be made again then

    @property
    def action(self) -> str:
        """The strongest action (allow when nothing was found)."""
        return max((f.action for f in self.findings), key=STRENGTH.__getitem__, default="allow")

    @property
    def hidden(self) -> bool:
        return STRENGTH[self.action] >= STRENGTH["hide"]

    @property
    def refusal(self) -> Finding | None:
        """The finding that refuses its download, if one does."""
        return next((f for f in self.findings if f.action == "deny"), None)


ALLOWED = Verdict("")


def matches(match: CrateMatch, name: str, version: Version | None) -> bool:
    """`match` covers crate `name` (a glob, case-insensitive) at `version` (any version when it names none)."""
    if not match.matches_name(name):
        return False
    return match.requirement is None or (version is not None and match.requirement.matches(version))


def decide(policy: Policy, database: Database | None, name: str, version: str, published: float | None,
           now: float) -> Verdict:
    """The verdict on `name` `version`, first published (as the proxy keeps it) at `published` (None: unknown,
    counted as old)."""
    try:
        parsed = parse_version(version)
    except ValueError:
        parsed = None  # not semver: rules without a requirement and the quarantine still apply
    findings: list[Finding] = []
    for rule in policy.rules:
        if matches(rule.match, name, parsed):
            if rule.action == "allow":
                return Verdict(version)
            why = rule.reason or f"rule {rule.action}: {rule.match.text!r}"
            findings.append(Finding(rule.action, "rule", "rule", f"cargo-cache policy: {name} {version}: {why}"))
            break
    if database is not None and parsed is not None:
        findings.extend(_advisories(policy, database, name, version, parsed))
    until = None
    quarantine = policy.quarantine
    if quarantine.min_age > 0 and published is not None and now < published + quarantine.min_age \
            and not any(matches(m, name, parsed) for m in quarantine.exempt):
        until = published + quarantine.min_age
        action = "deny" if quarantine.pinned == "deny" else "hide"
        findings.append(Finding(action, "quarantine", "quarantine",
                                f"cargo-cache policy: {name} {version} is in quarantine until {timestamp(until)} "
                                f"(min_age {duration(quarantine.min_age)})"))
    return Verdict(version, tuple(findings), until)


def _advisories(policy: Policy, database: Database, name: str, version: str, parsed: Version) -> Iterable[Finding]:
    settings = policy.advisories
    for advisory in database.for_crate(name):
        if advisory.id in settings.ignore or not advisory.affects(parsed):
            continue
        if advisory.kind == "malicious":
            action, what = settings.malicious, "malicious"
        elif advisory.kind == "informational":
            action, what = settings.informational, advisory.informational or "informational"
        else:
            action, what = settings.vulnerable, "vulnerable"
        yield Finding(action, advisory.id, advisory.kind,
                      f"cargo-cache policy: {name} {version}: {advisory.id} ({what}): {advisory.title}")


def decide_all(policy: Policy, database: Database | None, name: str, published: Mapping[str, float | None],
               now: float) -> dict[str, Verdict]:
    """The verdicts on every version in `published` (version -> kept publish time) that are not plain allows."""
    verdicts = {}
    for version, when in published.items():
        verdict = decide(policy, database, name, version, when, now)
        if verdict.findings:
            verdicts[version] = verdict
    return verdicts


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, whole seconds, as Cargo's `pubtime`: 2026-12-10T09:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def duration(seconds: int) -> str:
    """3d, 12h, 90m, 45s: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
