"""The supply-chain policy the proxy runs with (`policy:` in proxies.yaml), as frozen data: which crates a rule or
an exemption names (`CrateMatch`), the quarantine of young versions, what advisories do, the explicit rules.

Built by load.py from the checked models; compared field by field by reload.py (hashable, equal by value). The
decisions themselves live in cratecache.policy; this module only says what was configured, and parses the one
form the file writes in its own syntax, a crate match (`serde`, `corp-*`, `tokio@1.48.0`, `openssl-src@<300`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from functools import lru_cache

from ..semver import Req, Version, parse_req

ACTIONS = ("allow", "warn", "hide", "deny")  # what a rule decides, in the order the README explains them
PINNED = ("allow", "deny")
MISSING_PUBTIME = ("first-seen", "allow")
MALICIOUS = ("hide", "deny")
VULNERABLE = ("warn", "hide", "deny")
INFORMATIONAL = ("warn", "hide")
ADVISORY_ID_PATTERN = r"^RUSTSEC-[0-9]{4}-[0-9]{4}$"
ADVISORY_ID = re.compile(ADVISORY_ID_PATTERN.replace("$", r"\Z"))

_GLOB = re.compile(r"^[A-Za-z0-9_*?\[\]!-]+\Z")  # crate-name characters and fnmatch's * ? [...] [!...]
_PLAIN_VERSION = re.compile(r"^\d+(\.\d+(\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?)?)?\Z")


@dataclass(frozen=True)
class CrateMatch:
    """Crates (and optionally versions) named by a rule or an exemption: `serde`, `corp-*`, `tokio@1.48.0`,
    `openssl-src@<300.0.0`. `name` is an fnmatch glob, lowercased (names match case-insensitively); after `@`,
    a plain version means that version (`=1.48.0`; a partial one, `1.48`, any 1.48.x, as Cargo's package ids),
    anything else is a Cargo version requirement (`<300`, `>=1.2, <1.5`, `~0.9`)."""

    text: str
    name: str
    requirement: Req | None = None
    _pattern: re.Pattern = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", _compiled(self.name))

    def matches_name(self, crate: str) -> bool:
        return self._pattern.match(crate.lower()) is not None

    def matches(self, crate: str, version: Version) -> bool:
        """This crate (any case) at this version."""
        return self.matches_name(crate) and (self.requirement is None or self.requirement.matches(version))


def parse_crate_match(text: str) -> CrateMatch:
    """'tokio@1.48.0' -> CrateMatch; ValueError naming the text and what is wrong with it."""
    name, at, requirement = text.strip().partition("@")
    if not name or not _GLOB.match(name):
        raise ValueError(f"{text!r} is not a crate match: the name (before any '@') takes letters, digits, '-', '_' "
                         "and the globs * ? [...]")
    if not at:
        return CrateMatch(text, name.lower())
    requirement = requirement.strip()
    if not requirement:
        raise ValueError(f"{text!r} is not a crate match: no version or requirement after '@'")
    try:
        req = parse_req(f"={requirement}" if _PLAIN_VERSION.match(requirement) else requirement)
    except ValueError as e:
        raise ValueError(f"{text!r}: the version requirement does not parse ({e})") from None
    return CrateMatch(text, name.lower(), req)


@lru_cache(maxsize=1024)
def _compiled(glob: str) -> re.Pattern:
    return re.compile(fnmatch.translate(glob))


@dataclass(frozen=True)
class Quarantine:
    """The cooldown: a version younger than `min_age` seconds is hidden (0: off)."""

    min_age: int = 0
    pinned: str = "allow"  # a quarantined version a Cargo.lock still asks for: allow (downloads) | deny (403)
    exempt: tuple[CrateMatch, ...] = ()  # never quarantined
    missing_pubtime: str = "first-seen"  # first-seen: the proxy's first sighting is the publish time | allow


@dataclass(frozen=True)
class AdvisoryPolicy:
    """What the RustSec advisories in `database` (an absolute path; None: none) do to the versions they affect."""

    database: str | None = None
    malicious: str = "deny"  # hide | deny
    vulnerable: str = "hide"  # warn | hide | deny
    informational: str = "warn"  # unmaintained, unsound, notice: warn | hide
    ignore: tuple[str, ...] = ()  # advisory ids (RUSTSEC-YYYY-NNNN) that affect nothing


@dataclass(frozen=True)
class Rule:
    """An explicit decision about the crates `match` names; the first matching rule wins."""

    action: str  # allow | warn | hide | deny
    match: CrateMatch
    reason: str | None = None


@dataclass(frozen=True)
class Policy:
    """A registry's policy (or the global one): `dry_run` decides, logs and counts but changes nothing served."""

    dry_run: bool = False
    quarantine: Quarantine = Quarantine()
    advisories: AdvisoryPolicy = AdvisoryPolicy()
    rules: tuple[Rule, ...] = ()

    @property
    def active(self) -> bool:
        """Anything to decide: a quarantine, an advisory database, or rules."""
        return self.quarantine.min_age > 0 or self.advisories.database is not None or bool(self.rules)
