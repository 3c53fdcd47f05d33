"""What the policy decided, for people: one log line per decision (at most once per version and reason an hour),
the counts behind `cargo_cache_policy_decisions_total{action,reason}`, and the last decisions for the status page.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from .decide import Finding

logger = logging.getLogger(__name__)

LOG_EVERY = 3600.0  # seconds between two log lines about the same version and reason
KEPT_LOGGED = 50_000  # (version, reason) pairs remembered for that; beyond it the oldest are forgotten
LAST = 50  # decisions shown on the status page


@dataclass(frozen=True)
class Decision:
    at: float
    registry: str
    crate: str
    version: str
    label: str  # "deny:RUSTSEC-2023-0109", "would-hide:quarantine"
    message: str


def label(finding: Finding, dry_run: bool) -> str:
    return f"would-{finding.label}" if dry_run else finding.label


def header(findings: list[Finding] | tuple[Finding, ...], dry_run: bool) -> tuple[tuple[str, str], ...]:
    """The `X-Cargo-Cache-Policy` response header: each action:reason once, in order (none: no header)."""
    labels = list(dict.fromkeys(label(f, dry_run) for f in findings))
    return (("X-Cargo-Cache-Policy", ", ".join(labels)),) if labels else ()


class Journal:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()  # (action, reason category) -> decisions served
        self.last: deque[Decision] = deque(maxlen=LAST)
        self._logged: dict[tuple[str, str, str, str], float] = {}

    def served(self, registry: str, crate: str, version: str, findings: tuple[Finding, ...], dry_run: bool) -> None:
        """Decisions applied to an answer: counted each time; logged (and listed) once per version and reason an
        hour."""
        now = self.clock()
        for finding in findings:
            action = ("would-" if dry_run else "") + finding.action
            self.counts[(action, finding.category)] += 1
            key = (registry, crate.lower(), version, finding.label)
            if now - self._logged.get(key, float("-inf")) < LOG_EVERY:
                continue
            if len(self._logged) >= KEPT_LOGGED:
                self._logged = {k: t for k, t in self._logged.items() if now - t < LOG_EVERY}
            self._logged[key] = now
            shown = label(finding, dry_run)
            self.last.appendleft(Decision(now, registry, crate, version, shown, finding.message))
            logger.warning("cargo-cache policy: %s (registry %s): %s", shown, registry,
                           finding.message.removeprefix("cargo-cache policy: "))
