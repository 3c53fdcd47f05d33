"""What a stored entry is: its bytes (or its file) and their provenance. Used by every store and tier."""

from __future__ import annotations

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
