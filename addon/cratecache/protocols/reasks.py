"""Whether a client asks again for an index file it was just given (pure; the clock is passed in).

Cargo asks for each index file once per run. It asks again only when the copy it got cannot satisfy its
lockfile (a locked version is missing: Cargo invalidates its cache and queries again), which is the signal
that the proxy's copy may predate a publish. That second ask is conditional (Cargo holds the file now, with
its ETag). Over HTTP/2 it comes on the same connection; over HTTP/1.1 Cargo may use another connection of
its pool, so a conditional ask from the same client address within `window` seconds of the first counts
too. Either way the resolver revalidates at most once per file every 10 s, so the signal cannot be used
to hammer upstreams.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_SECONDS = 3.0  # Cargo asks again within milliseconds of its first answer (57 ms measured over HTTP/1.1)
MAX_KEYS_PER_CONNECTION = 20_000  # beyond this a connection's further files are not tracked (never a re-ask)
MAX_CONNECTIONS = 10_000
MAX_RECENT = 100_000


class Reasks:
    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self._by_connection: dict[str, set[str]] = {}
        self._recent: dict[tuple[str, str], float] = {}  # (client address, key) -> when last given

    def asked_again(self, connection: str, client: str, key: str, conditional: bool) -> bool:
        """Record that `client` asked for `key` on `connection`; True if this is a conditional second ask."""
        now = self.clock()
        seen = self._by_connection.get(connection)
        if seen is None:
            if len(self._by_connection) >= MAX_CONNECTIONS:  # connections that never reported closing
                self._by_connection.clear()
            seen = self._by_connection[connection] = set()
        again = conditional and (key in seen or now - self._recent.get((client, key), float("-inf")) < self.window)
        if len(seen) < MAX_KEYS_PER_CONNECTION:
            seen.add(key)
        if len(self._recent) >= MAX_RECENT:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self.window}
        self._recent[(client, key)] = now
        return again

    def forget(self, connection: str) -> None:
        self._by_connection.pop(connection, None)
