"""The one interface between a protocol module and the resolver: which routes it answers, how it resolves one over
the engine, and under which status its client shows "not staged" offline. A new protocol (or a policy wrapping one)
is a module with a subclass of `Protocol`, listed in `resolver.PROTOCOLS`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from ..engine import Engine, Served


class Protocol(ABC):
    routes: ClassVar[tuple[type, ...]]  # the route types (routes.py) this protocol answers

    def __init__(self, engine: Engine):
        self.engine = engine

    @abstractmethod
    async def resolve(self, route, reasked: bool = False, pinned: str | None = None) -> Served:
        """The entry for `route`: from the cache or through the engine's walk. `reasked`: the client asks again for
        a file it was given on this connection; `pinned`: the digest this client was just given for it."""

    @staticmethod
    def not_staged_status(route) -> int:
        """The status of an offline answer for something never staged (default 404)."""
        return 404
