"""The supply-chain policy over Cargo's protocol module: index files are served with the versions it hides marked
yanked and with the publish times the proxy keeps; downloads it denies are refused with 403 and the reason.

It wraps `protocols.cargo.Cargo` (which fetches and verifies as without a policy) and decides with pure functions
(decide.py, rewrite.py, sightings.py). What is served for an index file is remembered per copy, record, policy and
database until a quarantine in it ends, so a hit costs a dictionary lookup. With `dry_run` every decision is logged,
counted and labelled `would-…`, and the bytes served are the ones without a policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, replace

from ..config import Registry
from ..config.policy import Policy
from ..engine import Engine, Refused, Served, Unavailable
from ..protocols.base import Protocol
from ..protocols.cargo import Cargo
from ..protocols.routes import ConfigRoute, CrateRoute, IndexRoute
from ..storage import Entry, StorageUnavailable
from . import rewrite, sightings
from .databases import Databases
from .decide import ALLOWED, Verdict, decide_all, timestamp
from .journal import Journal, header
from .sightings import Sightings

logger = logging.getLogger(__name__)

INLINE_PARSE = 64 * 1024  # an index file larger than this is parsed in a thread
KEPT_ANSWERS = 20_000  # index files whose policed answer is remembered


@dataclass(frozen=True)
class Answer:
    """What the policy made of one copy of an index file."""
    basis: tuple  # (entry sha256, sightings record, policy, database fingerprint): what it was made from
    until: float  # it must be made again at this time (a quarantine ends)
    entry: Entry  # what is served (the same entry when nothing changed)
    verdicts: dict[str, Verdict]
    headers: tuple[tuple[str, str], ...]
    listed: frozenset[str]  # every version the copy lists (a download's verdict needs no parse)


class PolicyGate(Protocol):
    routes = (ConfigRoute, IndexRoute, CrateRoute)

    def __init__(self, engine: Engine, inner: Cargo, databases: Databases | None = None,
                 journal: Journal | None = None):
        super().__init__(engine)
        self.inner = inner
        self.databases = databases or Databases()
        self.journal = journal or Journal(engine.clock)
        self._answers: dict[str, Answer] = {}
        self._records: dict[str, Sightings] = {}  # sightings key -> the record as last read or written here
        self._covered: dict[str, str] = {}  # sightings key -> the sha256 of the index copy its record covers
        self._checked: dict[str, float] = {}  # sightings key -> checked_at of the index copy it was last read for

    @staticmethod
    def not_staged_status(route) -> int:
        return Cargo.not_staged_status(route)

    async def resolve(self, route, reasked: bool = False, pinned: str | None = None) -> Served:
        if isinstance(route, IndexRoute):
            return await self._police(route.registry, route.name, await self.inner.resolve(route, reasked))
        if isinstance(route, CrateRoute):
            return await self._download(route, lambda: self.inner.resolve(route))
        return await self.inner.resolve(route, reasked, pinned)

    # -- what staging, bundles and the tests call (as on Cargo) ------------------------------------

    async def config(self, reg: Registry, force: bool = False) -> Served:
        return await self.inner.config(reg, force)

    async def index(self, reg: Registry, name: str, force: bool = False) -> Served:
        return await self._police(reg, name, await self.inner.index(reg, name, force))

    async def crate(self, reg: Registry, name: str, version: str) -> Served:
        return await self._download(CrateRoute(reg, name, version), lambda: self.inner.crate(reg, name, version))

    # -- downloads ---------------------------------------------------------------------------------

    async def _download(self, route: CrateRoute, fetch) -> Served:
        policy = route.registry.policy
        if not policy.active:
            return await fetch()
        verdict = await self._verdict(route)
        if verdict is None:  # not in our copy of the index: the download revalidates it; decide on what it finds
            served = await fetch()
            verdict = await self._verdict(route) or ALLOWED
        else:
            served = None
        refusal = verdict.refusal
        if refusal is not None:
            self.journal.served(route.registry.name, route.name, route.version, (refusal,), policy.dry_run)
            if not policy.dry_run:
                raise Refused(refusal.message, 403, header([refusal], False))
        served = served or await fetch()
        return replace(served, headers=header([refusal], True)) if refusal is not None else served

    async def verdict(self, reg: Registry, name: str, version: str) -> Verdict | None:
        """The verdict on `name` `version` as the proxy would serve it now (for audit); None if it is not listed."""
        if not reg.policy.active:
            return ALLOWED
        return await self._verdict(CrateRoute(reg, name, version))

    async def _verdict(self, route: CrateRoute) -> Verdict | None:
        """The verdict on a download's version, from the index file as served now; None if it is not listed."""
        reg = route.registry
        index = await self.inner.resolve(IndexRoute(reg, route.name.lower()))
        answer = await self._answer(reg, route.name.lower(), index)
        if answer is None:
            return None
        verdict = answer.verdicts.get(route.version)
        if verdict is not None:
            return verdict
        return ALLOWED if route.version in answer.listed else None

    # -- index files -------------------------------------------------------------------------------

    async def _police(self, reg: Registry, name: str, served: Served) -> Served:
        policy = reg.policy
        if not policy.active or served.entry.body is None:
            return served
        answer = await self._answer(reg, name, served)
        if answer is None:
            return served
        for version, verdict in answer.verdicts.items():
            self.journal.served(reg.name, name, version, verdict.findings, policy.dry_run)
        entry = served.entry if policy.dry_run else answer.entry
        # What is served changes without a new copy (a quarantine ends, an advisory arrives, a rule goes): its
        # date cannot say so, so only the ETag (the served bytes' digest) may answer a conditional request.
        return replace(served, entry=entry, headers=served.headers + answer.headers, dated=False)

    async def _answer(self, reg: Registry, name: str, served: Served) -> Answer | None:
        policy, entry = reg.policy, served.entry
        if entry.body is None:
            return None
        database = self._database(policy)
        record = await self._sightings(reg, name, entry) if policy.quarantine.min_age > 0 else None
        basis = (entry.meta.sha256, record, policy, database.fingerprint if database else None)
        key, now = IndexRoute(reg, name).key, self.engine.clock()
        held = self._answers.get(key)
        if held is not None and held.basis == basis and now < held.until:
            return held
        answer = await _off_loop(entry.body, _make, policy, database, name, entry, record, basis, now)
        if len(self._answers) >= KEPT_ANSWERS:
            self._answers.clear()
        self._answers[key] = answer
        return answer

    def _database(self, policy: Policy):
        path = policy.advisories.database
        if path is None:
            return None
        database = self.databases.get(path)
        if database is None:  # fail closed: never serve as if there were no advisories
            why = self.databases.errors.get(path, "not loaded yet")
            raise Unavailable(f"cargo-cache policy: the advisory database {path} is not available ({why})")
        return database

    async def _sightings(self, reg: Registry, name: str, entry: Entry) -> Sightings:
        """The kept publish times of crate `name`, covering every version of the index copy `entry` (a version not
        kept yet is added, seen at the copy's `stored_at`, and the record stored for the other workers)."""
        key = f"policy/sightings/{reg.name}/{name.lower()}"
        held, checked = self._records.get(key), self._checked.get(key)
        if held is not None and checked is not None and checked >= entry.meta.checked_at \
                and self._covered.get(key) == entry.meta.sha256:
            return held
        # Read again when the copy changed or was revalidated since: another worker or gateway may have merged
        # it, or kept an earlier sighting of a version that this process saw too (both fetched the new copy);
        # the records combine to the earliest sighting, so every process ends up serving the same time.
        # The copy's lines are read only when it is not the one the held record already covers (a revalidation that
        # kept the bytes adds no version), and off the event loop when the file is large.
        versions = None
        if held is None or self._covered.get(key) != entry.meta.sha256:
            versions = await _off_loop(entry.body, _versions, entry.body)
        stored = await self._read_record(key) or Sightings()
        # A record gone from the store (evicted from a full cache, damaged) does not make this a first copy: what
        # this worker holds is kept, and stored again.
        record = sightings.combine(stored, held) if held is not None else stored
        if versions is not None and not record.covers(versions):  # a version not kept yet: seen in this copy
            record = sightings.merge(record, entry.meta.stored_at, versions)
        if record != stored:
            await self.engine.best_effort(self.engine.store.put, key, sightings.encode(record), "policy")
        if len(self._records) >= KEPT_ANSWERS:
            self._records.clear()
            self._checked.clear()
            self._covered.clear()
        if record != held:
            self._records[key] = record
        self._checked[key], self._covered[key] = entry.meta.checked_at, entry.meta.sha256
        return self._records.get(key, record)

    async def _read_record(self, key: str) -> Sightings | None:
        try:  # the shared store's newest (the bucket's, on s3: not a copy this gateway wrote before)
            stored = await self.engine.store.latest(key)
        except StorageUnavailable:
            stored = await self.engine.store.get(key)
        if stored is None or stored.body is None:
            return None
        try:
            return sightings.decode(stored.body)
        except ValueError as e:
            logger.error("cargo-cache policy: the kept publish times %s are damaged (%s): set aside, started anew",
                         key, e)
            return None


async def _off_loop(body: bytes, work, *args):
    """`work(*args)` over an index file: on the event loop when the file is small, in a thread when it is large."""
    return await asyncio.to_thread(work, *args) if len(body) > INLINE_PARSE else work(*args)


def _versions(body: bytes) -> list[tuple[str, float | None]]:
    """(version, its line's pubtime) of each line of an index file (pure)."""
    return [(v, sightings.parse_pubtime(obj.get("pubtime"))) for v, obj in rewrite.lines(body)]


def _make(policy: Policy, database, name: str, entry: Entry, record: Sightings | None, basis: tuple,
          now: float) -> Answer:
    """Decide on every version of one index copy and make what is served (pure)."""
    first_seen = policy.quarantine.missing_pubtime == "first-seen"
    published, pubtimes = {}, {}
    for version, _line in rewrite.lines(entry.body):
        when = record.published(version, first_seen) if record else None
        published[version] = when
        if record is not None and when is not None:
            pubtimes[version] = timestamp(when)
    verdicts = decide_all(policy, database, name, published, now)
    hidden = {version for version, verdict in verdicts.items() if verdict.hidden}
    body = rewrite.rewrite(entry.body, hidden, pubtimes)
    served = entry
    if body is not entry.body:
        meta = replace(entry.meta, sha256=hashlib.sha256(body).hexdigest(), size=len(body), last_modified=None)
        served = Entry(meta, body)
    until = min((v.until for v in verdicts.values() if v.until is not None), default=float("inf"))
    findings = [f for verdict in verdicts.values() for f in verdict.findings]
    return Answer(basis, until, served, verdicts, header(findings, policy.dry_run), frozenset(published))

