"""What a resolution ends in: `Served` (the entry, who answered, how), or one of the errors below, which
`handler` turns into HTTP answers at the boundary.

    ResolveError
    ├── NotFound        every upstream said "not here" (or the protocol knows it does not exist)
    │   └── NotStaged   offline mode: never staged; `status` is the answer under which the client shows why
    ├── Refused         it exists, but a decision (the supply-chain policy) refuses to serve it
    └── Unavailable     something failed and nothing usable is cached
"""

from __future__ import annotations

from dataclasses import dataclass

from ..storage import Entry
from ..upstreams.client import Attempt


@dataclass(frozen=True)
class Served:
    entry: Entry
    source: str  # "cache" or the name of the upstream that answered
    state: str  # hit | miss | revalidated | updated | stale
    attempts: tuple[Attempt, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers (e.g. the policy's decisions about it)
    dated: bool = True  # its Last-Modified may answer If-Modified-Since (False: only its ETag may give a 304)


class ResolveError(Exception):
    def __init__(self, message: str, attempts: list[Attempt] | tuple[Attempt, ...] = ()):
        super().__init__(message)
        self.attempts = tuple(attempts)


class NotFound(ResolveError):
    """No upstream has it (each said 404/410/451), or the protocol's own listing says it does not exist."""


class NotStaged(NotFound):
    """Offline mode: it was never staged, and no upstream is asked. `status` is the answer under which the client
    shows the reason (each protocol's `not_staged_status`), where a plain 404 may have it report a name that does
    not exist."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


class Refused(ResolveError):
    """It exists and could be fetched, but a decision refuses it (the policy's `deny`): `status` (403) with the
    message as the body (Cargo shows it), and `headers` saying which decision."""

    def __init__(self, message: str, status: int = 403, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status, self.headers = status, headers


class Unavailable(ResolveError):
    """At least one upstream failed and nothing usable is cached."""
