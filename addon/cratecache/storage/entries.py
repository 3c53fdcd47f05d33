"""What a stored entry is: its bytes (or its file) and their provenance. Used by every store and tier."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Meta:
    sha256: str
    size: int
    upstream: str  # name of the upstream that supplied the bytes
    stored_at: float  # when the bytes were stored
    checked_at: float  # when an upstream last confirmed them (200 or 304)
    etag: str | None = None  # the upstream's validators, for revalidation
    last_modified: str | None = None


@dataclass(frozen=True)
class Entry:
    """Stored bytes and their provenance. A large entry (above FILE_THRESHOLD) is never read into memory: its
    `body` is None and `file` is the stored file, which the proxy streams to clients."""

    meta: Meta
    body: bytes | None
    file: str | None = None


def add_up(found: dict[str, list[int]], listed: Iterable[tuple[str, Meta]]) -> dict[str, list[int]]:
    """Add listed (key, meta) to `found`, {kind: [entries, bytes]} (the kind: the key's first part)."""
    for key, meta in listed:
        kind = found.setdefault(key.split("/", 1)[0], [0, 0])
        kind[0] += 1
        kind[1] += meta.size
    return found
