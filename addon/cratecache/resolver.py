"""The resolver: a route -> its protocol module (`protocols/`: Cargo's sparse registries, rustup's dist tree) over
one engine (`engine/`: cache -> lease -> upstreams in priority order -> verify -> cache). A protocol says what a
path is, where it lives upstream, what its bytes must hash to and whether it may change; the engine does the rest,
once for all protocols. A new protocol is a module with a `protocols.base.Protocol`, listed in PROTOCOLS.
The supply-chain policy (`policy/`) is such a module too: `PolicyGate` wraps Cargo's and takes its routes.

The resolver knows nothing about mitmproxy; the addon (and the command-line tools) call it.
Failures are raised as `NotFound` (every upstream said "not here"; `NotStaged` in offline mode, with the
status under which the client shows why) or `Unavailable` (something failed and nothing is cached;
`ManifestsDisagree` when the manifests that may vouch for a component list different hashes for it);
`handler` turns them into HTTP answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from .config import Registry, Settings, Toolchains
from .engine import Engine, NotFound, NotStaged, Refused, ResolveError, Served, Unavailable
from .policy.databases import Databases
from .policy.gate import PolicyGate
from .protocols import dist
from .protocols.base import Protocol
from .protocols.cargo import Cargo
from .protocols.routes import Route
from .protocols.rustup import ManifestsDisagree, Rustup
from .storage import Entry, Storage
from .upstreams.client import Attempt, UpstreamClient
from .upstreams.health import Health

__all__ = ["ManifestsDisagree", "NotFound", "NotStaged", "Refused", "ResolveError", "Resolver", "Served", "Unavailable",
           "not_staged_status"]

PROTOCOLS: tuple[type[Protocol], ...] = (Cargo, Rustup)


class Resolver:
    def __init__(self, settings: Settings, store: Storage, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None, databases: Databases | None = None):
        self.engine = Engine(settings, store, clock, transport)
        self.protocols = [protocol(self.engine) for protocol in PROTOCOLS]
        self.rustup = self._of(Rustup)
        if databases is None:  # at start, before serving: read the advisory databases the policy names
            databases = Databases()
            databases.load(advisory_paths(settings))
        self.policy = PolicyGate(self.engine, self._of(Cargo), databases)  # Cargo's routes, under the policy
        self.protocols = [self.policy if isinstance(p, Cargo) else p for p in self.protocols]
        self._by_route = {kind: protocol for protocol in self.protocols for kind in protocol.routes}
        self.cargo = self.policy

    def _of(self, kind: type[Protocol]):
        return next(p for p in self.protocols if isinstance(p, kind))

    async def resolve(self, route: Route, reasked: bool = False, pinned: str | None = None) -> Served:
        """`reasked`: the client asks again for a file it was given on this connection (Cargo does so for an index
        file when a locked version is missing from it). `pinned`: the SHA-256 this client was just given in a
        manifest's `.sha256`; it gets that manifest."""
        protocol = self._by_route.get(type(route))
        if protocol is None:
            raise TypeError(f"not a route: {route!r}")
        return await protocol.resolve(route, reasked=reasked, pinned=pinned)

    def reconfigure(self, settings: Settings) -> None:
        self.engine.reconfigure(settings)

    async def aclose(self) -> None:
        await self.engine.aclose()

    # -- what the staging, the bundles and the tests call directly ------------------------------

    async def config(self, reg: Registry, force: bool = False) -> Served:
        return await self.cargo.config(reg, force)

    async def index(self, reg: Registry, name: str, force: bool = False) -> Served:
        return await self.cargo.index(reg, name, force)

    async def crate(self, reg: Registry, name: str, version: str) -> Served:
        return await self.cargo.crate(reg, name, version)

    async def dist_file(self, src: Toolchains, f: dist.DistFile, pinned: str | None = None) -> Served:
        return await self.rustup.dist_file(src, f, pinned)

    async def store_manifest(self, path: str, entry: Entry) -> None:
        await self.rustup.store_manifest(path, entry)

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    @property
    def store(self) -> Storage:
        return self.engine.store

    @store.setter
    def store(self, store: Storage) -> None:
        self.engine.store = store

    @property
    def clients(self) -> dict[tuple[str, str], UpstreamClient]:
        return self.engine.clients

    @property
    def health(self) -> Health:
        return self.engine.health

    @property
    def on_attempt(self) -> Callable[[UpstreamClient, Attempt], None] | None:
        return self.engine.on_attempt

    @on_attempt.setter
    def on_attempt(self, observe: Callable[[UpstreamClient, Attempt], None] | None) -> None:
        self.engine.on_attempt = observe

    @property
    def parse_listing(self) -> Callable[[bytes], dist.Listing]:
        return self.rustup.vouched.parse_listing

    @parse_listing.setter
    def parse_listing(self, parse: Callable[[bytes], dist.Listing]) -> None:  # runs in a worker thread
        self.rustup.vouched.parse_listing = parse


def advisory_paths(settings: Settings) -> list[str]:
    """The advisory databases the policy of some registry names."""
    paths = [reg.policy.advisories.database for reg in settings.registries]
    return list(dict.fromkeys(p for p in paths if p is not None))


def not_staged_status(route: Route) -> int:
    """The status of an offline answer for something not staged, per client (see ../shared/*-protocol.md and each
    protocol's `not_staged_status`)."""
    for protocol in PROTOCOLS:
        if isinstance(route, protocol.routes):
            return protocol.not_staged_status(route)
    return 404
