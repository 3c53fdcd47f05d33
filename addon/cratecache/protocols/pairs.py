"""Which manifest hash each client was just given (pure; the clock is passed in).

rustup asks for `channel-rust-stable.toml.sha256`, then for `channel-rust-stable.toml`, and fails unless the
manifest's SHA-256 is the one it was given. If the channel moves between the two requests (the proxy revalidated
it for another client meanwhile), this client must still get the manifest its `.sha256` named: the resolver keeps
the one before (`dist-previous/…`), and this memory says which one the client is owed. rustup sends both requests
on one HTTP/2 connection; a client on another connection of its pool is recognised by its address within
`window` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_ENTRIES = 50_000


class Pairs:
    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self._given: dict[tuple[str, str], tuple[str, float]] = {}  # (connection or address, path) -> (sha256, when)

    def gave(self, connection: str, client: str, path: str, sha256: str) -> None:
        now = self.clock()
        if len(self._given) >= MAX_ENTRIES:
            self._given = {k: v for k, v in self._given.items() if now - v[1] < self.window}
        self._given[("conn:" + connection, path)] = (sha256, now)
        self._given[("addr:" + client, path)] = (sha256, now)

    def pinned(self, connection: str, client: str, path: str) -> str | None:
        """The hash given on this connection (or to this address) for `path` within the window, if any."""
        now = self.clock()
        for who in ("conn:" + connection, "addr:" + client):
            given = self._given.get((who, path))
            if given is not None and now - given[1] < self.window:
                return given[0]
        return None

    def forget(self, connection: str) -> None:
        for key in [k for k in self._given if k[0] == "conn:" + connection]:
            del self._given[key]
