"""Bit rot: stored bytes that no longer hash to the digest they were stored under are never served.

Whoever reads stored bytes checks them (the local store when it reads a body whole, the blob server while it
streams a file, the s3 backend when it pulls an object) and, on a mismatch, treats them as a miss and evicts
them; this module tells of each damaged entry once (one warning naming the key and both digests' first
characters) and counts them by kind, for `/metrics`. The memory tier holds bytes already checked.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

logger = logging.getLogger(__name__)

TOLD_KEPT = 1024  # damage already told of (key, expected, actual): concurrent readers of one file tell it once
PREFIX = 12  # hex digits of a digest in the log line


def kind_of(key: str) -> str:
    """The entry kind a key names ('crate/crates-io/serde/1.0.0' -> 'crate')."""
    return key.partition("/")[0] or "-"


def damage_line(key: str, expected: str, actual: str, where: str) -> str:
    """The warning for a damaged entry (pure)."""
    return (f"cargo-cache: {where} entry {key} is incomplete or damaged: stored as sha256 {expected[:PREFIX]}…, its "
            f"bytes now hash to {actual[:PREFIX]}…; not served, evicted, fetched again")


class Damage:
    """The damaged entries one process found: told once each, counted by kind; `on_found(kind)` (metrics) is called
    once per entry too. Safe from any thread."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.on_found: Callable[[str], None] | None = None
        self._told: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def found(self, key: str, expected: str, actual: str, where: str) -> bool:
        """Record damage found in `where` ("cache folder", "bucket"); False if it was told already."""
        seen = (key, expected, actual)
        with self._lock:
            if seen in self._told:
                return False
            self._told[seen] = None
            if len(self._told) > TOLD_KEPT:
                self._told.popitem(last=False)
            kind = kind_of(key)
            self.counts[kind] = self.counts.get(kind, 0) + 1
        logger.warning(damage_line(key, expected, actual, where))
        if self.on_found is not None:
            self.on_found(kind)
        return True
